# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The model, data and step of the sharded runs (benchmark and tests).

A ReLU MLP shaped like the section-5 net (``dense_i = {'w', 'b'}`` layers,
He-initialised), Gaussian inputs labelled by a random linear teacher, and one
MARTHE training step that returns the state's scalars as metrics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_lab import loop
from marthe_lab import models

SCALARS = ("learning_rate", "mu", "hyper_lr", "hypergradient")


def init_mlp(key: jax.Array, sizes) -> dict:
  """He-initialised dense layers ``dense_i = {'w', 'b'}``."""
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f"dense_{i}"] = {
      "w": jax.random.normal(sub, (m, n)) * np.sqrt(2.0 / m),
      "b": jnp.zeros(n),
    }
  return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
  """The ReLU MLP's logits."""
  n = len(params)
  for i in range(n):
    x = x @ params[f"dense_{i}"]["w"] + params[f"dense_{i}"]["b"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def loss(params: dict, batch) -> jax.Array:
  """Mean cross-entropy of the MLP ``params`` on ``batch = (x, y)``."""
  return models.cross_entropy(mlp, params, *batch)


def make_data(key: jax.Array, steps: int, sizes, batch: int):
  """Gaussian inputs labelled by a random linear teacher: (train, val), NumPy."""
  k_teacher, k_train, k_val = jax.random.split(key, 3)
  teacher = jax.random.normal(k_teacher, (sizes[0], sizes[-1]))
  x = jax.random.normal(k_train, (steps, batch, sizes[0]))
  x_val = jax.random.normal(k_val, (batch, sizes[0]))
  label = lambda x: np.asarray(jnp.argmax(x @ teacher, axis=-1), np.int32)
  return (np.asarray(x), label(x)), (np.asarray(x_val), label(x_val))


def train_step(tx, params, state, batch, val_batch):
  """One MARTHE step; returns params, state and the metrics (loss, scalars).

  :func:`marthe_lab.loop.make_step` fed ``value_fn`` and ``val_grads``. The
  metrics are separate outputs, so that donating params and state to the
  next step leaves them readable.
  """
  step = loop.make_step(tx, loss, ("value_fn", "val_grads"))
  params, state, _, out = step(params, state, batch, val_batch)
  metrics = {name: optax.tree.get(state, name) for name in SCALARS}
  metrics["loss"] = out.value
  return params, state, metrics
