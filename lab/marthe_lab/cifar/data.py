# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""CIFAR-10 / CIFAR-100 from the python-pickle archives, and JAX augmentation.

The loader reads the standard archives already on local disk (it never
downloads anything):

* CIFAR-10: ``cifar-10-batches-py/data_batch_1`` ... ``data_batch_5`` and
  ``test_batch``, each a pickled dict with ``b'data'`` (``[n, 3072]`` uint8,
  the 1024 red, then green, then blue values of each 32x32 image, row-major)
  and ``b'labels'``;
* CIFAR-100: ``cifar-100-python/train`` and ``test``, with ``b'data'`` and
  ``b'fine_labels'`` (the 100 classes; ``b'coarse_labels'`` is ignored).

The directory is an argument or the environment variable ``MARTHE_CIFAR_DIR``;
it may be the folder that holds ``cifar-10-batches-py`` /
``cifar-100-python`` or that folder itself. Images are kept as uint8 NHWC
arrays; :func:`augment` (random crop with 4 pixels of zero padding, random
horizontal flip) and :func:`normalize` run in JAX, inside the jitted step.
:func:`synthetic` makes an in-memory stand-in with the same shapes.
"""

import os
import pickle
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

ENV_VAR = "MARTHE_CIFAR_DIR"
IMAGE_SHAPE = (32, 32, 3)

# Per-channel mean and standard deviation of the training images in [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_LAYOUT = {
  "cifar10": dict(
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    label_key=b"labels",
    num_classes=10,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
  ),
  "cifar100": dict(
    folder="cifar-100-python",
    train=("train",),
    test=("test",),
    label_key=b"fine_labels",
    num_classes=100,
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
  ),
}


class Cifar(NamedTuple):
  """A CIFAR-like dataset: uint8 NHWC images and int32 labels.

  Attributes:
    x_train: ``[n_train, 32, 32, 3]`` uint8 training images.
    y_train: ``[n_train]`` int32 labels.
    x_val: validation images carved from the training set (may be empty).
    y_val: their labels.
    x_test: ``[n_test, 32, 32, 3]`` uint8 test images.
    y_test: their labels.
    num_classes: the number of classes.
    mean: per-channel mean of the training images, in [0, 1].
    std: per-channel standard deviation, in [0, 1].
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple


def read_batch(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  """One pickled CIFAR batch file as ``(uint8 [n, 32, 32, 3], int32 [n])``.

  Args:
    path: the file (``data_batch_1``, ``test_batch``, ``train``, ...).
    label_key: ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100).

  Returns:
    The images in NHWC layout and the labels.

  Raises:
    ValueError: if the file lacks ``b'data'`` or ``label_key``, or the data
      is not ``[n, 3072]`` uint8 with ``n`` labels.
  """
  with open(path, "rb") as f:
    batch = pickle.load(f, encoding="bytes")
  if b"data" not in batch or label_key not in batch:
    raise ValueError(
      f"{path} is not a CIFAR python-pickle batch with b'data' and "
      f"{label_key!r}; its keys are {sorted(batch)}."
    )
  data = np.asarray(batch[b"data"], dtype=np.uint8)
  labels = np.asarray(batch[label_key], dtype=np.int32)
  if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
    raise ValueError(
      f"{path}: expected b'data' of shape [n, 3072] and n labels, got "
      f"{data.shape} and {labels.shape}."
    )
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def find_dir(name: str, data_dir: Optional[str] = None) -> str:
  """The folder holding ``name``'s batch files.

  Args:
    name: ``'cifar10'`` or ``'cifar100'``.
    data_dir: a folder that holds ``cifar-10-batches-py`` /
      ``cifar-100-python``, or that folder itself; ``None`` reads
      ``$MARTHE_CIFAR_DIR``.

  Returns:
    The path of the folder with the batch files.

  Raises:
    ValueError: for an unknown name.
    FileNotFoundError: when no such folder is found (with what to do).
  """
  if name not in _LAYOUT:
    raise ValueError(f"name must be one of {sorted(_LAYOUT)}, got {name!r}.")
  layout = _LAYOUT[name]
  root = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
  if root is None:
    raise FileNotFoundError(
      f"No CIFAR directory given: pass data_dir or set ${ENV_VAR} to the "
      f"folder that contains {layout['folder']}/ (the python-pickle archive "
      "from https://www.cs.toronto.edu/~kriz/cifar.html, extracted). Or use "
      "the synthetic preset, which needs no data."
    )
  for candidate in (os.path.join(root, layout["folder"]), root):
    if all(os.path.isfile(os.path.join(candidate, f)) for f in layout["train"] + layout["test"]):
      return candidate
  raise FileNotFoundError(
    f"{root!r} holds neither {layout['folder']}/ nor the files "
    f"{', '.join(layout['train'] + layout['test'])}."
  )


def load(
  name: str,
  data_dir: Optional[str] = None,
  num_val: int = 5000,
  split_seed: int = 0,
) -> Cifar:
  """CIFAR-10 or CIFAR-100 from local pickles, with a validation split.

  Args:
    name: ``'cifar10'`` or ``'cifar100'``.
    data_dir: see :func:`find_dir`.
    num_val: the number of training images held out (uniformly at random,
      with ``split_seed``) as the validation set of the objective ``E``.
    split_seed: the seed of that split (the same for every run seed, so all
      methods and seeds see the same split).

  Returns:
    A :class:`Cifar`.
  """
  layout = _LAYOUT[name]
  folder = find_dir(name, data_dir)
  read = lambda files: [read_batch(os.path.join(folder, f), layout["label_key"]) for f in files]
  train = read(layout["train"])
  test = read(layout["test"])
  x = np.concatenate([b[0] for b in train])
  y = np.concatenate([b[1] for b in train])
  x_train, y_train, x_val, y_val = split_validation(x, y, num_val, split_seed)
  return Cifar(
    x_train=x_train,
    y_train=y_train,
    x_val=x_val,
    y_val=y_val,
    x_test=np.concatenate([b[0] for b in test]),
    y_test=np.concatenate([b[1] for b in test]),
    num_classes=layout["num_classes"],
    mean=layout["mean"],
    std=layout["std"],
  )


def split_validation(
  x: np.ndarray, y: np.ndarray, num_val: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Holds out ``num_val`` random examples: ``(x_train, y_train, x_val, y_val)``."""
  if not 0 <= num_val < len(x):
    raise ValueError(f"num_val must be in [0, {len(x)}), got {num_val}.")
  perm = np.random.default_rng(seed).permutation(len(x))
  val, train = perm[:num_val], perm[num_val:]
  return x[train], y[train], x[val], y[val]


def synthetic(
  num_train: int = 2048,
  num_val: int = 256,
  num_test: int = 512,
  num_classes: int = 10,
  separation: float = 0.4,
  noise: float = 1.0,
  seed: int = 0,
) -> Cifar:
  """An in-memory CIFAR stand-in with CIFAR's shapes and dtypes.

  Every image is a random smooth colour background shared by all classes
  (4x4 blocks of 8 pixels), plus ``separation`` times its class's pattern
  (8x8 blocks of 4 pixels), cyclically shifted by up to 8 pixels, plus
  Gaussian pixel noise of standard deviation ``noise``, mapped to uint8
  around 128. With the defaults a linear classifier on 8x8-pooled pixels
  reaches about 87% test accuracy (96% on its training set); small CNNs need
  several epochs to get there: the task is learnable but not trivial.

  Args:
    num_train: training images (after the validation split).
    num_val: validation images.
    num_test: test images.
    num_classes: the number of classes.
    separation: the scale of the class patterns relative to the background.
    noise: the standard deviation of the pixel noise.
    seed: the data seed.

  Returns:
    A :class:`Cifar`.
  """
  rng = np.random.default_rng(seed)
  background = rng.normal(size=(1, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)
  patterns = rng.normal(size=(num_classes, 8, 8, 3)).repeat(4, axis=1)
  templates = background + separation * patterns.repeat(4, axis=2)

  def draw(n):
    y = rng.integers(0, num_classes, n).astype(np.int32)
    shifts = rng.integers(-8, 9, (n, 2))
    x = np.stack([np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
    x = x + noise * rng.normal(size=x.shape)
    return np.clip(np.rint(255.0 * (0.5 + 0.25 * x)), 0, 255).astype(np.uint8), y

  x_train, y_train = draw(num_train)
  x_val, y_val = draw(num_val)
  x_test, y_test = draw(num_test)
  mean = tuple(float(v) for v in x_train.reshape(-1, 3).mean(0) / 255.0)
  std = tuple(float(v) for v in x_train.reshape(-1, 3).std(0) / 255.0)
  return Cifar(x_train, y_train, x_val, y_val, x_test, y_test, num_classes, mean, std)


def augment(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
  """Random crop (zero padding ``padding``) and random horizontal flip.

  The standard CIFAR augmentation (``RandomCrop(32, padding=4)`` and
  ``RandomHorizontalFlip()``), one independent crop offset and flip per image,
  in JAX: jittable, and deterministic given ``key``.

  Args:
    key: a PRNG key.
    images: ``[batch, height, width, channels]``, any dtype.
    padding: the zero padding on each side before cropping.

  Returns:
    The augmented images, with the shape and dtype of ``images``.
  """
  n, h, w, _ = images.shape
  k_crop, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * padding + 1)
  flips = jax.random.bernoulli(k_flip, 0.5, (n,))
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def one(image, offset, flip):
    crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32, standardised per channel: ``(x / 255 - mean) / std``."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
