# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The multilayer perceptron of section 5, in plain JAX.

Section 5 of the paper trains a feed-forward network with three hidden
layers of 500 units, cross-entropy loss and plain SGD. The activation and
initialisation are not stated; here they are ReLU and LeCun-normal weights
with zero biases (Flax's ``nn.Dense`` defaults). The params are a list of
``{'kernel', 'bias'}`` dicts, an ordinary pytree that every Optax
transformation accepts.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

Params = list  # [{'kernel': [d_in, d_out], 'bias': [d_out]}, ...]


def init_mlp(
    key: jax.Array, in_dim: int, hidden: Sequence[int], num_classes: int
) -> Params:
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
  """The logits of a batch ``x`` of shape ``[batch, in_dim]``."""
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return x @ params[-1]["kernel"] + params[-1]["bias"]


def cross_entropy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of the batch ``(x, y)``."""
  logits = mlp_apply(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Fraction of ``x`` classified as ``y`` (non-finite logits count as wrong)."""
  logits = mlp_apply(params, x)
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return jnp.mean((jnp.argmax(logits, -1) == y) & finite)
