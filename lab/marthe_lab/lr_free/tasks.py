# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The tasks of the learning-rate-free benchmark: data, models, seeds' inputs.

Three tasks (:data:`TASKS`): section 5's MLP on scikit-learn's digits, the
same MLP on MNIST-1D, and a small 1-D CNN (:func:`init_cnn1d`) on MNIST-1D.
Each model is a :class:`marthe_lab.models.Model` (:func:`get_model`), its
loss and accuracy those of :mod:`marthe_lab.models`. Every method of a task
starts from the same ``w_0`` and minibatch progression per seed
(:func:`seed_inputs`).
"""

import functools
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marthe_lab import data as data_lib
from marthe_lab import models
from marthe_lab import train as train_lib

TrainConfig = train_lib.TrainConfig
Arrays = train_lib.Arrays
RunInputs = train_lib.RunInputs

# The 1-D CNN: two SAME-padded stride-2 convolutions and a dense head.
CNN_CHANNELS = (32, 32)
CNN_KERNEL = 5
CNN_STRIDE = 2


# ----------------------------------------------------------------------------
# Models.


def init_cnn1d(
  key: jax.Array,
  length: int,
  num_classes: int,
  channels: Sequence[int] = CNN_CHANNELS,
  kernel: int = CNN_KERNEL,
  stride: int = CNN_STRIDE,
) -> list:
  """LeCun-normal kernels and zero biases of the 1-D CNN.

  Args:
    key: a PRNG key.
    length: the signal length (40 for MNIST-1D); one input channel.
    num_classes: the number of logits.
    channels: the output channels of each convolution.
    kernel: the convolution width.
    stride: the convolution stride (SAME padding: the length is divided by
      ``stride``, rounded up, at each layer).

  Returns:
    A list of ``{'kernel', 'bias'}`` dicts: ``[kernel, c_in, c_out]``
    convolution kernels, then the ``[features, num_classes]`` dense head.

  Examples:
    >>> import jax
    >>> p = init_cnn1d(jax.random.key(0), 40, 10)
    >>> [layer['kernel'].shape for layer in p]
    [(5, 1, 32), (5, 32, 32), (320, 10)]
  """
  init = jax.nn.initializers.lecun_normal()
  keys = jax.random.split(key, len(channels) + 1)
  params, c_in, n = [], 1, length
  for k, c in zip(keys, channels):
    params.append(
      {
        "kernel": init(k, (kernel, c_in, c), jnp.float32),
        "bias": jnp.zeros(c, jnp.float32),
      }
    )
    c_in, n = c, -(-n // stride)
  params.append(
    {
      "kernel": init(keys[-1], (n * c_in, num_classes), jnp.float32),
      "bias": jnp.zeros(num_classes, jnp.float32),
    }
  )
  return params


def conv1d_same(h: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """1-D cross-correlation with SAME padding, as XLA's ``conv_general_dilated``.

  Written as patches times a matrix (im2col): on CPU, under ``jax.vmap`` over
  seeds, this runs about ten times faster than ``lax.conv_general_dilated``
  for these small signals, with the same numbers.

  Args:
    h: ``[batch, width, c_in]`` signals.
    kernel: ``[k, c_in, c_out]`` kernel.
    stride: the stride; the output width is ``ceil(width / stride)`` and the
      padding is split as XLA's SAME does (the extra column on the right).

  Returns:
    ``[batch, ceil(width / stride), c_out]``.
  """
  k, c_in, c_out = kernel.shape
  width = h.shape[1]
  out_w = -(-width // stride)
  pad = max((out_w - 1) * stride + k - width, 0)
  hp = jnp.pad(h, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
  span = stride * (out_w - 1) + 1
  cols = jnp.stack([hp[:, i : i + span : stride, :] for i in range(k)], axis=2)
  return cols.reshape(h.shape[0], out_w, k * c_in) @ kernel.reshape(k * c_in, c_out)


def cnn1d_apply(params: list, x: jax.Array, stride: int = CNN_STRIDE) -> jax.Array:
  """Logits of signals ``x`` of shape ``[batch, length]`` (ReLU after each conv)."""
  h = x[..., None]
  for layer in params[:-1]:
    h = jax.nn.relu(conv1d_same(h, layer["kernel"], stride) + layer["bias"])
  h = h.reshape(h.shape[0], -1)
  return h @ params[-1]["kernel"] + params[-1]["bias"]


def get_model(name: str, config: TrainConfig, in_dim: int, num_classes: int = 10) -> models.Model:
  """The :class:`marthe_lab.models.Model` of a task.

  Args:
    name: ``'mlp'`` (section 5's MLP, widths ``config.hidden``) or
      ``'cnn1d'`` (:func:`init_cnn1d`, :func:`cnn1d_apply`).
    config: the inner problem.
    in_dim: the input features (the signal length for the CNN).
    num_classes: the number of logits.

  Returns:
    The model; ``init(key)`` draws ``w_0``.

  Raises:
    ValueError: on an unknown name.
  """
  if name == "mlp":
    return models.mlp(in_dim, config.hidden, num_classes)
  if name == "cnn1d":
    return models.Model(
      "cnn1d", lambda key: init_cnn1d(key, in_dim, num_classes), cnn1d_apply, (in_dim,)
    )
  raise ValueError(f"Unknown model {name!r}; use 'mlp' or 'cnn1d'.")


class Task(NamedTuple):
  """A dataset and a model."""

  name: str
  dataset: str  # 'digits' or 'mnist1d'
  model: str  # 'mlp' or 'cnn1d'


TASKS = {
  t.name: t
  for t in (
    Task("digits-mlp", "digits", "mlp"),
    Task("mnist1d-mlp", "mnist1d", "mlp"),
    Task("mnist1d-cnn", "mnist1d", "cnn1d"),
  )
}


def seed_inputs(
  model: str,
  arrays: Arrays,
  config: TrainConfig,
  seed: jax.Array,
  num_classes: int = 10,
) -> RunInputs:
  """``w_0`` and the minibatch progressions of ``seed``.

  Exactly :func:`marthe_lab.train.seed_inputs` (the section-5
  experiment's ``w_0`` and minibatches at the same seed); for the CNN,
  ``w_0`` is drawn by :func:`init_cnn1d` from the same key.
  """
  inputs = train_lib.seed_inputs(seed, arrays, config, num_classes)
  if model == "mlp":
    return inputs
  net = get_model(model, config, arrays.x_train.shape[1], num_classes)
  return inputs._replace(params=net.init(train_lib.seed_keys(seed)[0]))


@functools.partial(jax.jit, static_argnames=("model", "config", "num_classes"))
def make_inputs(
  arrays: Arrays,
  seeds: jax.Array,
  *,
  model: str,
  config: TrainConfig,
  num_classes: int = 10,
) -> RunInputs:
  """:func:`seed_inputs` of every seed (leading axis ``S``; once per task)."""
  return jax.vmap(lambda s: seed_inputs(model, arrays, config, s, num_classes))(seeds)


class Prepared(NamedTuple):
  """A task ready to run: its data and every seed's inputs."""

  task: Task
  dataset: data_lib.Dataset
  arrays: Arrays
  inputs: RunInputs  # leading axis S
  setup_s: float


def prepare(task: Task, config: TrainConfig, seeds: Sequence[int]) -> Prepared:
  """Loads the data and draws every seed's ``w_0`` and minibatches."""
  t0 = time.perf_counter()
  dataset = data_lib.load(task.dataset)
  arrays = Arrays.from_dataset(dataset)
  inputs = jax.block_until_ready(
    make_inputs(
      arrays,
      jnp.asarray(seeds, jnp.int32),
      model=task.model,
      config=config,
      num_classes=dataset.num_classes,
    )
  )
  return Prepared(task, dataset, arrays, inputs, time.perf_counter() - t0)


def n_params(model: str, dataset: data_lib.Dataset, config: TrainConfig) -> int:
  """The number of trainable parameters of ``model`` on ``dataset``."""
  shapes = jax.eval_shape(
    get_model(model, config, dataset.x_train.shape[1], dataset.num_classes).init, jax.random.key(0)
  )
  return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))
