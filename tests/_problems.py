"""Small problems shared by the core tests: an MLP classifier and its data."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from marthe_lab import loop
from marthe_lab import models

INNERS = {
  "sgd": optax.sgd,
  "momentum": functools.partial(optax.sgd, momentum=0.9),
  "nesterov": functools.partial(optax.sgd, momentum=0.9, nesterov=True),
  "adam": optax.adam,
  "adamw": functools.partial(optax.adamw, weight_decay=0.1),
  "chain": lambda lr: optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.add_decayed_weights(1e-2),
    optax.sgd(lr, momentum=0.5),
  ),
}

# A learning rate at which each inner optimizer makes visible progress.
LEARNING_RATES = {
  "sgd": 0.1,
  "momentum": 0.05,
  "nesterov": 0.05,
  "adam": 0.01,
  "adamw": 0.01,
  "chain": 0.1,
}


class Problem(NamedTuple):
  params: dict
  xs: jax.Array  # [steps, batch, features] training minibatches
  ys: jax.Array
  x_val: jax.Array
  y_val: jax.Array


def init_mlp(key, sizes=(5, 8, 3), dtype=jnp.float32):
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, k = jax.random.split(key)
    params[f"w{i}"] = (jax.random.normal(k, (m, n)) / jnp.sqrt(m)).astype(dtype)
    params[f"b{i}"] = jnp.zeros(n, dtype)
  return params


def mlp(params, x):
  n = len(params) // 2
  for i in range(n):
    x = x @ params[f"w{i}"] + params[f"b{i}"]
    if i < n - 1:
      x = jnp.tanh(x)
  return x


def loss(params, x, y):
  return models.cross_entropy(mlp, params, x, y)


def make_problem(seed=0, steps=8, batch=6, sizes=(5, 8, 3), dtype=jnp.float32):
  kp, kx, ky, kv, kw = jax.random.split(jax.random.PRNGKey(seed), 5)
  params = init_mlp(kp, sizes, dtype)
  xs = jax.random.normal(kx, (steps, batch, sizes[0])).astype(dtype)
  ys = jax.random.randint(ky, (steps, batch), 0, sizes[-1])
  x_val = jax.random.normal(kv, (2 * batch, sizes[0])).astype(dtype)
  y_val = jax.random.randint(kw, (2 * batch,), 0, sizes[-1])
  return Problem(params, xs, ys, x_val, y_val)


def train_step(tx, problem, params, state, t, use_val=True, **extra):
  """One MARTHE-style update at step t of `problem` (not jitted).

  The lab's step builder fed ``value_fn`` and, with ``use_val``, the
  gradient of the whole-validation-set loss; ``extra`` goes to ``update``.
  """
  step = loop.make_step(tx, lambda p, batch: loss(p, *batch), ("value_fn", "val_grads"))
  val_batch = (problem.x_val, problem.y_val) if use_val else None
  params, state, _, _ = step(params, state, (problem.xs[t], problem.ys[t]), val_batch, **extra)
  return params, state


def run(tx, problem, steps=None, use_val=True, jit=True):
  """Runs `steps` updates; returns final params, state and per-step scalars."""
  steps = problem.xs.shape[0] if steps is None else steps
  step = functools.partial(train_step, tx, problem, use_val=use_val)
  if jit:
    step = jax.jit(step)
  params, state = problem.params, tx.init(problem.params)
  trace = []
  for t in range(steps):
    params, state = step(params, state, t)
    trace.append(
      {k: optax.tree.get(state, k) for k in ("learning_rate", "hyper_lr", "mu", "hypergradient")}
    )
  return params, state, jax.tree.map(lambda *v: jnp.stack(v), *trace)


def unrolled_directional_derivative(
  inner, problem, eta0, mu, t, schedule=None, fixed_gradients=False
):
  """d/d eps E(w_t) when step i of an unrolled Optax loop uses the learning rate
  ``(eta0 + eps * mu**(t-1-i)) * schedule(i)`` (``schedule`` 1 when ``None``).

  With ``fixed_gradients`` the training gradients are constants of the
  differentiation (``jax.lax.stop_gradient``): the hypergradient of the
  dynamics with the Hessian term dropped, which the first-order tangent
  computes.
  """

  def objective(eps):
    params = problem.params
    state = inner(eta0).init(params)
    for i in range(t):
      lr = eta0 + eps * mu ** (t - 1 - i)
      if schedule is not None:
        # At an int32 count, as the transformation evaluates it.
        lr = lr * schedule(jnp.int32(i))
      grads = jax.grad(loss)(params, problem.xs[i], problem.ys[i])
      if fixed_gradients:
        grads = jax.lax.stop_gradient(grads)
      updates, state = inner(lr).update(grads, state, params)
      params = optax.apply_updates(params, updates)
    return loss(params, problem.x_val, problem.y_val)

  return jax.jvp(objective, (jnp.float64(0.0),), (jnp.float64(1.0),))[1]


def dead_relu_problem():
  """A ReLU net whose first layer is dead (bias -3): its weights' gradients
  are all exactly 0, so Adam's second moment stays 0 there."""
  key = jax.random.PRNGKey(0)
  params = {
    "w1": jax.random.normal(key, (5, 16)),
    "b1": jnp.full(16, -3.0),
    "w2": jax.random.normal(key, (16, 3)),
  }
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
  y = jnp.arange(8) % 3
  dead_loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
    jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"], y
  ).mean()
  return params, dead_loss
