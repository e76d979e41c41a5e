# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The models of the experiments, in plain JAX, and the one classification loss.

Every experiment sees a model as a :class:`Model`: a name, ``init(key) ->
params`` (an ordinary pytree that every Optax transformation accepts) and
``apply(params, x) -> logits``. The losses take ``apply`` as their first
argument, so one :func:`cross_entropy` and one :func:`accuracy` serve every
model (Flax NNX models too: ``apply`` then merges a graphdef with the params).

* :func:`mlp`: the feed-forward net of section 5 (three hidden layers of 500
  units in the paper, cross-entropy loss). The activation and initialisation
  are not stated; here they are ReLU and LeCun-normal weights with zero biases
  (Flax's ``nn.Dense`` defaults). The params are a list of ``{'kernel',
  'bias'}`` dicts.
* :func:`small_cnn`: two stride-2 3x3 convolutions and a dense head on 28x28x1
  images (the overhead benchmark's convolutional case).
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

Params = Any  # a pytree; the MLP's is [{'kernel': [d_in, d_out], 'bias': [d_out]}, ...]


class Model(NamedTuple):
  """A classifier, as every experiment sees it.

  Attributes:
    name: a short name for tables (e.g. ``'mlp-64-500-10'``).
    init: ``init(key) -> params``.
    apply: ``apply(params, x) -> logits`` for a batch ``x``.
    input_shape: the shape of one example (without the batch axis).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> net = mlp(64, (32,), 10)
    >>> params = net.init(jax.random.key(0))
    >>> net.apply(params, jnp.zeros((5, 64))).shape
    (5, 10)
  """

  name: str
  init: Callable[[jax.Array], Params]
  apply: Callable[[Params, jax.Array], jax.Array]
  input_shape: tuple = ()


def init_mlp(key: jax.Array, in_dim: int, hidden: Sequence[int], num_classes: int) -> Params:
  """LeCun-normal kernels and zero biases for ``in_dim -> hidden -> classes``.

  Args:
    key: a PRNG key.
    in_dim: the number of input features.
    hidden: the hidden layer widths, e.g. ``(500, 500, 500)``.
    num_classes: the number of outputs (logits).

  Returns:
    The params, a list of ``{'kernel', 'bias'}`` dicts.

  Examples:
    >>> import jax
    >>> p = init_mlp(jax.random.key(0), 64, (500, 500, 500), 10)
    >>> [layer['kernel'].shape for layer in p]
    [(64, 500), (500, 500), (500, 500), (500, 10)]
  """
  sizes = (in_dim, *hidden, num_classes)
  init = jax.nn.initializers.lecun_normal()
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"kernel": init(k, (a, b), jnp.float32), "bias": jnp.zeros(b, jnp.float32)}
    for k, a, b in zip(keys, sizes[:-1], sizes[1:])
  ]


def mlp_apply(params: Params, x: jax.Array) -> jax.Array:
  """The MLP's logits of a batch ``x`` of shape ``[batch, in_dim]`` (ReLU)."""
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return x @ params[-1]["kernel"] + params[-1]["bias"]


def mlp(in_dim: int, hidden: Sequence[int], num_classes: int) -> Model:
  """The section-5 MLP as a :class:`Model` (:func:`init_mlp`, :func:`mlp_apply`).

  Args:
    in_dim: the number of input features.
    hidden: the hidden widths.
    num_classes: the number of logits.

  Returns:
    A :class:`Model` named ``'mlp-<in>-<hidden...>-<classes>'``.

  Examples:
    >>> mlp(784, (500, 500, 500), 10).name
    'mlp-784-500-500-500-10'
  """
  sizes = (in_dim, *hidden, num_classes)
  return Model(
    "mlp-" + "-".join(map(str, sizes)),
    lambda key: init_mlp(key, in_dim, tuple(hidden), num_classes),
    mlp_apply,
    (in_dim,),
  )


def small_cnn(channels: Sequence[int] = (16, 32), num_classes: int = 10) -> Model:
  """A small CNN on 28x28x1 images: stride-2 3x3 convolutions and a dense head.

  He-normal convolution kernels, ``1 / sqrt(d)``-scaled head, zero biases.

  Args:
    channels: the output channels of the convolutions (each halves the side).
    num_classes: the number of logits.

  Returns:
    A :class:`Model` named ``'cnn-<channels...>'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> net = small_cnn()
    >>> net.apply(net.init(jax.random.key(0)), jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
  """
  side = 28
  for _ in channels:
    side = -(-side // 2)

  def init(key):
    params, c_in = [], 1
    for c in channels:
      key, k = jax.random.split(key)
      params.append(
        {"w": jax.random.normal(k, (3, 3, c_in, c)) * jnp.sqrt(2.0 / (9 * c_in)), "b": jnp.zeros(c)}
      )
      c_in = c
    key, k = jax.random.split(key)
    d = side * side * channels[-1]
    params.append(
      {"w": jax.random.normal(k, (d, num_classes)) / jnp.sqrt(d), "b": jnp.zeros(num_classes)}
    )
    return params

  def apply(params, x):
    for layer in params[:-1]:
      x = jax.lax.conv_general_dilated(
        x,
        layer["w"],
        window_strides=(2, 2),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
      x = jax.nn.relu(x + layer["b"])
    x = x.reshape(x.shape[0], -1)
    return x @ params[-1]["w"] + params[-1]["b"]

  return Model("cnn-" + "-".join(map(str, channels)), init, apply, (28, 28, 1))


def cross_entropy(
  apply: Callable[[Params, jax.Array], jax.Array],
  params: Params,
  x: jax.Array,
  y: jax.Array,
) -> jax.Array:
  """Mean softmax cross-entropy of ``apply(params, x)`` against integer labels ``y``.

  Args:
    apply: the model's ``apply`` (e.g. :func:`mlp_apply` or ``Model.apply``).
    params: its params.
    x: a batch of inputs.
    y: ``[batch]`` integer labels.

  Returns:
    A scalar.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> p = init_mlp(jax.random.key(0), 4, (), 3)
    >>> round(float(cross_entropy(mlp_apply, p, jnp.zeros((2, 4)), jnp.array([0, 1]))), 4)
    1.0986
  """
  return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def accuracy(
  apply: Callable[[Params, jax.Array], jax.Array],
  params: Params,
  x: jax.Array,
  y: jax.Array,
) -> jax.Array:
  """Fraction of ``x`` classified as ``y``; non-finite logits count as wrong.

  The arguments are those of :func:`cross_entropy`; returns a scalar in
  ``[0, 1]``.
  """
  logits = apply(params, x)
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return jnp.mean((jnp.argmax(logits, -1) == y) & finite)
