# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Datasets for the experiments, all available offline.

* :func:`digits`: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten
  digits, shipped with scikit-learn), split once into train / validation /
  test with a fixed permutation.
* :func:`mnist1d`: MNIST-1D (Greydanus, 2020) generated on the spot by the
  ``mnist1d`` package's ``make_dataset`` with its default arguments (4,000
  train and 1,000 test signals of length 40); nothing is downloaded. The
  validation set is carved from the training set.
* :func:`mnist_idx`: real MNIST from the four IDX files (gzipped or raw) in a
  directory the user already has; a subset of the training file gives train
  and validation (7,000 and 700 examples as in section 5 of the paper), the
  ``t10k`` file gives the test set.

Every loader returns a :class:`Dataset` of NumPy ``float32`` features (one
row per example) and ``int32`` labels. :func:`read_idx` and :func:`write_idx`
read and write the IDX format; :func:`steps_per_epoch` counts the full
minibatches of an epoch.
"""

import functools
import gzip
import os
import random
import struct
from typing import NamedTuple, Optional

import numpy as np


class Dataset(NamedTuple):
  """A classification dataset split into train, validation and test sets.

  Attributes:
    name: a short name (``'digits'``, ``'mnist1d'``, ``'mnist'``).
    x_train: ``[n_train, d]`` float32 features.
    y_train: ``[n_train]`` int32 labels.
    x_val: ``[n_val, d]`` validation features (the objective ``E``).
    y_val: ``[n_val]`` validation labels.
    x_test: ``[n_test, d]`` test features (reported, never optimised).
    y_test: ``[n_test]`` test labels.
    num_classes: the number of classes.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int

  def describe(self) -> str:
    """A one-line summary, e.g. ``'digits: 1000/300/497 x 64, 10 classes'``."""
    return (
      f"{self.name}: train/val/test {len(self.y_train)}/{len(self.y_val)}/"
      f"{len(self.y_test)} x {self.x_train.shape[1]}, "
      f"{self.num_classes} classes"
    )


def _split(
  name: str,
  x: np.ndarray,
  y: np.ndarray,
  n_val: int,
  seed: int,
  x_test: Optional[np.ndarray] = None,
  y_test: Optional[np.ndarray] = None,
  n_test: int = 0,
  n_train: Optional[int] = None,
) -> Dataset:
  """Splits ``(x, y)`` by a fixed permutation; the test set comes first."""
  n = len(y)
  own_test = x_test is None
  needed = n_val + (n_test if own_test else 0) + (n_train or 0)
  if needed > n or (n_train is None and needed >= n):
    raise ValueError(
      f"{name}: cannot take {n_val} validation"
      + (f", {n_test} test" if own_test else "")
      + (f" and {n_train} training" if n_train else "")
      + f" examples out of {n}."
    )
  perm = np.random.default_rng(seed).permutation(n)
  start = 0
  if own_test:
    test_idx, start = perm[:n_test], n_test
    x_test, y_test = x[test_idx], y[test_idx]
  val_idx = perm[start : start + n_val]
  train_idx = perm[start + n_val :]
  if n_train is not None:
    train_idx = train_idx[:n_train]
  f32 = lambda a: np.ascontiguousarray(a, np.float32)
  i32 = lambda a: np.ascontiguousarray(a, np.int32)
  return Dataset(
    name=name,
    x_train=f32(x[train_idx]),
    y_train=i32(y[train_idx]),
    x_val=f32(x[val_idx]),
    y_val=i32(y[val_idx]),
    x_test=f32(x_test),
    y_test=i32(y_test),
    num_classes=int(max(y.max(), np.max(y_test)) + 1),
  )


def digits(n_val: int = 300, n_test: int = 497, seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 digits, pixel values scaled to [0, 1].

  Args:
    n_val: validation examples.
    n_test: test examples; the remaining ``1797 - n_val - n_test`` (1,000 by
      default) are the training set.
    seed: seed of the fixed permutation that makes the split.

  Returns:
    A :class:`Dataset` with 64 features and 10 classes.

  Examples:
    >>> from marthe_lab import data
    >>> data.digits().describe()
    'digits: train/val/test 1000/300/497 x 64, 10 classes'
  """
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  x, y = load_digits(return_X_y=True)
  return _split("digits", x / 16.0, y, n_val, seed, n_test=n_test)


@functools.lru_cache(maxsize=2)
def _mnist1d_arrays(seed: int):
  """``make_dataset`` with default arguments, restoring the global RNGs."""
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top

  args = get_dataset_args()
  args.seed = seed
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    d = make_dataset(args)  # pure generation; get_dataset() may download
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return d["x"], d["y"], d["x_test"], d["y_test"]


def mnist1d(n_val: int = 500, seed: int = 0, data_seed: int = 42) -> Dataset:
  """MNIST-1D generated offline by ``mnist1d.data.make_dataset``.

  The package's default arguments give 5,000 standardised signals of length
  40 (4,000 train, 1,000 test); ``n_val`` of the 4,000 become the validation
  set. Generation takes about two seconds and is cached per process.

  Args:
    n_val: validation examples carved from the 4,000 training signals.
    seed: seed of the permutation that carves the validation set.
    data_seed: the generator's seed (42 is the package's default and gives
      the published dataset's construction).

  Returns:
    A :class:`Dataset` with 40 features and 10 classes.
  """
  x, y, x_test, y_test = _mnist1d_arrays(data_seed)
  return _split("mnist1d", x, y, n_val, seed, x_test=x_test, y_test=y_test)


_IDX_DTYPES = {
  0x08: np.dtype(np.uint8),
  0x09: np.dtype(np.int8),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


def _open(path: str):
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"
  return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not.

  Args:
    path: the file; gzip compression is detected from its first bytes, not
      its name.

  Returns:
    The array, in native byte order.

  Raises:
    ValueError: if the file is not a well-formed IDX file.
  """
  with _open(path) as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number).")
  dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
  header = 4 + 4 * ndim
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  count = int(np.prod(shape, dtype=np.int64))
  if len(raw) != header + count * dtype.itemsize:
    raise ValueError(
      f"{path}: the header announces shape {shape} of {dtype} "
      f"({count * dtype.itemsize} bytes) but {len(raw) - header} follow."
    )
  data = np.frombuffer(raw, dtype, count, offset=header)
  return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
  array = np.asarray(array)
  codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
  code = codes.get(array.dtype.newbyteorder("="))
  if code is None:
    raise ValueError(
      f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64."
    )
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(payload)


_MNIST_FILES = ("train-images", "train-labels", "t10k-images", "t10k-labels")


def _find_idx(directory: str, prefix: str) -> str:
  """The file in ``directory`` whose name starts ``prefix`` (``-`` or ``.``)."""
  matches = sorted(
    name
    for name in os.listdir(directory)
    if name.replace(".", "-").startswith(prefix + "-") and "idx" in name
  )
  if not matches:
    raise FileNotFoundError(
      f"No {prefix}-idx*-ubyte[.gz] file in {directory}. Expected the four "
      "MNIST files: " + ", ".join(f"{p}-idx?-ubyte[.gz]" for p in _MNIST_FILES)
    )
  return os.path.join(directory, matches[0])


def mnist_idx(path: str, n_train: int = 7000, n_val: int = 700, seed: int = 0) -> Dataset:
  """Real MNIST from IDX files on disk (section 5: 7,000 train, 700 val).

  Args:
    path: a directory holding ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
      ``t10k-labels-idx1-ubyte``, each possibly gzipped (``.gz``).
    n_train: training examples taken from the training file.
    n_val: validation examples taken from the training file (disjoint from
      the training examples).
    seed: seed of the permutation that picks them.

  Returns:
    A :class:`Dataset` of flattened images scaled to [0, 1]; the test set is
    the whole ``t10k`` file.
  """
  arrays = [read_idx(_find_idx(path, prefix)) for prefix in _MNIST_FILES]
  x, y, x_test, y_test = arrays
  flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0
  return _split(
    "mnist",
    flat(x),
    y,
    n_val,
    seed,
    x_test=flat(x_test),
    y_test=y_test,
    n_train=n_train,
  )


def load(name: str, path: Optional[str] = None) -> Dataset:
  """A dataset by name: ``'digits'``, ``'mnist1d'`` or ``'mnist'`` (needs path)."""
  if name == "digits":
    return digits()
  if name == "mnist1d":
    return mnist1d()
  if name == "mnist":
    if path is None:
      raise ValueError("mnist needs the directory of its IDX files (--data).")
    return mnist_idx(path)
  raise ValueError(f"Unknown dataset {name!r}; use digits, mnist1d or mnist.")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """The full minibatches in one pass over ``num_examples`` (rounded down).

  An epoch of the CIFAR runs (the last partial batch is dropped) and the
  accumulation size of ``reduce_on_plateau`` in the learning-rate-free
  benchmark (its minibatches run on across epochs; on its data sets the
  division is exact).

  Args:
    num_examples: the training examples.
    batch_size: the minibatch size.

  Returns:
    ``num_examples // batch_size``.

  Raises:
    ValueError: if ``batch_size`` exceeds ``num_examples``.

  Examples:
    >>> steps_per_epoch(1000, 100), steps_per_epoch(3501, 100)
    (10, 35)
  """
  if batch_size > num_examples:
    raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
  return num_examples // batch_size
