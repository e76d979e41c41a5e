# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Per-step cost of MARTHE, HD and RTHO against the plain inner optimizer.

Builds, for one model and one inner optimizer, the jit-compiled training step
of each method (plain Optax step, HD with ``E = L``, HD with a validation
objective, the knob-free MARTHE with its first-order and full tangents, RTHO,
MARTHE), all with their params and state donated, and times
them warm in the same process, interleaved, so that the ratios to the plain
step are measured under the same machine load. Also reports compile time and
the bytes of optimizer state.

The analytical limit: a plain step costs one gradient; HD with
``E = L`` adds O(d); HD with a validation objective adds one gradient; RTHO and
MARTHE replace the gradient by one forward-over-reverse ``jax.jvp`` of it
(gradient and Hessian-vector product together) and add the validation
gradient. The knob-free MARTHE's first-order tangent adds only O(d) jvps to HD
with a validation objective; its full tangent costs what MARTHE costs.

The ``floor`` (SGD inner only) is the least a MARTHE-over-SGD step must
compute, written out by hand (:func:`floor_step`): the jvp of the training
gradient along ``Z`` (gradient and Hessian-vector product together), the
validation gradient, one dot product, the SGD step and the tangent update.
``marthe / floor`` is what the package's bookkeeping costs. The floor has a
fixed horizon (``mu = 1``); ``floor_adaptive`` adds what appendix A's
horizon needs on top, written out by hand too: ``b_{t-1}`` kept, the
one-step hypergradient ``<b_{t-1}, grad E(w_t)>`` (a second dot product),
``mu_t`` and eq. 5's adaptive ``beta``. The paper's ``marthe`` (appendix A's
horizon) is measured against it, RTHO and the knob-free full tangent (fixed
horizons) against ``floor``.

Every timed step returns the training loss ``L_t(w_t)`` with the params and
the state, as a training loop that logs it does. The protocol matters on
XLA:CPU: a step whose loss value is dead code (HD, the plain step) skips its
reduction, while the knob-free mode reads it for its safeguard; measured
without it, the knob-free / HD ratio on the small CNN came out 1.21x on 2
cores against 1.02x with the loss returned by both (and 1.03x on one core
either way), an artefact of how XLA:CPU schedules the loss reduction, not a
cost of the method.
"""

import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo
from marthe_lab import loop
from marthe_lab import methods
from marthe_lab import models
from marthe_lab import multi

INNERS = {name: methods.INNERS[name] for name in ("sgd", "momentum", "adam")}
LEARNING_RATES = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3}

CASES = {
  # name: (registry method, its value, E on a validation batch)
  "plain": ("plain", None, False),
  "hd": ("hd", 1e-6, False),
  "hd_val": ("hd", 1e-6, True),
  "knob_free": ("knob_free_first_order", None, True),
  "knob_free_full": ("knob_free_full", None, True),
  "rtho": ("rtho", 1e-8, True),
  "marthe": ("marthe", 1e-8, True),
  "marthe_k1": ("marthe_multi", 1e-8, True),
  "marthe_k2": ("marthe_multi", 1e-8, True),
  "marthe_k4": ("marthe_multi", 1e-8, True),
}
"""Each timed method: the :data:`marthe_lab.methods.METHODS` entry, its
``beta`` / ``kappa``, and whether ``E`` is a validation loss (else ``E = L``,
and HD gets no extra argument)."""
METHODS = ("plain", "hd", "hd_val", "knob_free", "knob_free_full", "rtho", "marthe")
MULTI_METHODS = ("marthe_k1", "marthe_k2", "marthe_k4")
FLOOR = "floor"
FLOOR_ADAPTIVE = "floor_adaptive"
FLOORS = (FLOOR, FLOOR_ADAPTIVE)


def _multi(method: str, inner, lr) -> tuple:
  """The inner factory and initial hyperparameters of ``marthe_kK``."""
  if method == "marthe_k1":
    return inner, {"learning_rate": lr}
  if method == "marthe_k2":
    with_decay = lambda learning_rate, weight_decay: optax.chain(
      optax.add_decayed_weights(weight_decay), inner(learning_rate)
    )
    return with_decay, {"learning_rate": lr, "weight_decay": 1e-4}
  return (
    mo.per_group(inner, multi.per_layer_labels),
    {"learning_rate": {f"layer{i}": lr for i in range(4)}},
  )


def make_transformation(method: str, inner_name: str) -> optax.GradientTransformation:
  """The transformation of ``method`` around the inner optimizer ``inner_name``.

  ``marthe_kK`` tunes ``K`` hyperparameters with :func:`marthe_optax.marthe_multi`:
  the learning rate (K = 1), learning rate and weight decay (K = 2), or one
  learning rate per layer of the four-layer MLP (K = 4).

  Raises:
    ValueError: on an unknown ``method``.
  """
  if method not in CASES:
    raise ValueError(f"unknown method {method!r}; expected one of {tuple(CASES)}")
  name, value, _ = CASES[method]
  inner, lr = INNERS[inner_name], LEARNING_RATES[inner_name]
  if name == "marthe_multi":
    inner, lr = _multi(method, inner, lr)
  return methods.get(name).make(inner, lr, value)


def make_step(model: models.Model, method: str, tx: optax.GradientTransformation):
  """The jit-compiled step of ``method`` (:func:`marthe_lab.loop.make_step`).

  ``step(params, state, x, y, x_val, y_val) -> (params, state, L_t)``, params
  and state donated.
  """
  name, _, validation = CASES[method]
  loss = lambda p, batch: models.cross_entropy(model.apply, p, *batch)
  step = loop.make_step(tx, loss, methods.get(name).needs)

  def run(params, state, x, y, x_val, y_val):
    val_batch = (x_val, y_val) if validation else None
    params, state, _, out = step(params, state, (x, y), val_batch)
    return params, state, out.value

  return jax.jit(run, donate_argnums=(0, 1))


class FloorState(NamedTuple):
  """The floor's state: the tangent ``Z_t`` and the learning rate."""

  tangent: optax.Params
  learning_rate: jax.Array


class AdaptiveFloorState(NamedTuple):
  """The adaptive floor's state: ``Z_t``, ``b_{t-1}`` and the scalars of the
  paper's step (``eta``, ``beta``, ``mu``, ``c``, ``h_{t-1}``)."""

  tangent: optax.Params
  b: optax.Params
  learning_rate: jax.Array
  hyper_lr: jax.Array
  mu: jax.Array
  c: jax.Array
  hypergradient: jax.Array


def _floor_gradients(model: models.Model):
  """``(params, tangent, x, y, x_val, y_val) -> (L_t, g_t, H_t Z_t, grad E)``:
  one forward-over-reverse jvp of the training gradient along ``Z_t`` and the
  validation gradient, what every floor computes first."""
  loss = lambda p, x, y: models.cross_entropy(model.apply, p, x, y)

  def gradients(params, tangent, x, y, x_val, y_val):
    (value, grads), (_, hz) = jax.jvp(
      lambda p: jax.value_and_grad(loss)(p, x, y), (params,), (tangent,)
    )
    return value, grads, hz, jax.grad(loss)(params, x_val, y_val)

  return gradients


def floor_adaptive_step(model: models.Model, kappa: float = 1e-8):
  """:func:`floor_step` with appendix A's horizon and eq. 5's adaptive beta.

  ``h = <Z_t, grad E>``, ``g1 = <b_{t-1}, grad E>``, ``mu_t = clip(h / g1, 0,
  1) ** (1 / (c_{t-1} + 1))``, ``c_t = mu_{t-1} (1 + c_{t-1})``, ``beta_t =
  max(beta + kappa h h_{t-1}, 0)``, ``eta_t = max(eta - beta_t h, 0)``,
  ``Z_{t+1} = mu_t (Z_t - eta_t H_t Z_t) - g_t``, ``b_t = -g_t``. No guard, no
  bookkeeping: the reference of the paper's mode.

  Returns:
    The jit-compiled ``step(params, state, x, y, x_val, y_val) -> (params,
    state, L_t)`` (params and an :class:`AdaptiveFloorState` donated).
  """
  gradients = _floor_gradients(model)

  def run(params, state, x, y, x_val, y_val):
    value, grads, hz, val_grads = gradients(params, state.tangent, x, y, x_val, y_val)
    h = optax.tree.vdot(state.tangent, val_grads)
    g1 = optax.tree.vdot(state.b, val_grads)
    q = jnp.clip(jnp.where(g1 != 0, h / jnp.where(g1 != 0, g1, 1.0), 0.0), 0.0, 1.0)
    mu = q ** (1 / (state.c + 1))
    beta = jnp.maximum(state.hyper_lr + kappa * h * state.hypergradient, 0.0)
    eta = jnp.maximum(state.learning_rate - beta * h, 0.0)
    tangent = jax.tree.map(lambda z, hz_, g: mu * (z - eta * hz_) - g, state.tangent, hz, grads)
    b = jax.tree.map(jnp.negative, grads)
    params = jax.tree.map(lambda w, g: w - eta * g, params, grads)
    c = state.mu * (1 + state.c)
    return params, AdaptiveFloorState(tangent, b, eta, beta, mu, c, h), value

  return jax.jit(run, donate_argnums=(0, 1))


def floor_step(model: models.Model, hyper_lr: float = 1e-8):
  """The least a MARTHE-over-SGD step computes, written out by hand.

  ``Delta eta = <Z_t, grad E(w_t)>``, ``eta_t = max(eta_{t-1} - beta Delta
  eta, 0)``, ``w_{t+1} = w_t - eta_t g_t`` and ``Z_{t+1} = Z_t - eta_t H_t
  Z_t - g_t`` (``mu = 1``), with ``g_t`` and ``H_t Z_t`` from one
  forward-over-reverse jvp of the training gradient. No guard, no horizon
  rule, no bookkeeping: the reference of :func:`marthe_optax.marthe`'s cost.

  Args:
    model: the model.
    hyper_lr: ``beta``.

  Returns:
    The jit-compiled ``step(params, state, x, y, x_val, y_val) -> (params,
    state, L_t)`` (params and a :class:`FloorState` donated).
  """
  gradients = _floor_gradients(model)

  def run(params, state, x, y, x_val, y_val):
    value, grads, hz, val_grads = gradients(params, state.tangent, x, y, x_val, y_val)
    hypergradient = optax.tree.vdot(state.tangent, val_grads)
    eta = jnp.maximum(state.learning_rate - hyper_lr * hypergradient, 0.0)
    tangent = jax.tree.map(lambda z, h, g: z - eta * h - g, state.tangent, hz, grads)
    params = jax.tree.map(lambda w, g: w - eta * g, params, grads)
    return params, FloorState(tangent, eta), value

  return jax.jit(run, donate_argnums=(0, 1))


def tree_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


class Case(NamedTuple):
  """One compiled method, ready to time."""

  method: str
  compiled: Callable
  params: optax.Params
  state: optax.OptState
  compile_s: float
  state_bytes: int


def build_case(model, method, inner_name, batch, val_batch, key) -> tuple:
  """Compiles the step of ``method``; returns the case and its inputs."""
  kp, kx, ky, kv, kw = jax.random.split(key, 5)
  params = model.init(kp)
  x = jax.random.normal(kx, (batch,) + model.input_shape)
  y = jax.random.randint(ky, (batch,), 0, 10)
  x_val = jax.random.normal(kv, (val_batch,) + model.input_shape)
  y_val = jax.random.randint(kw, (val_batch,), 0, 10)
  if method in FLOORS:
    if inner_name != "sgd":
      raise ValueError(f"the floor is a MARTHE-over-SGD step; got {inner_name!r}")
    zeros, lr = optax.tree.zeros_like(params), jnp.asarray(LEARNING_RATES["sgd"], jnp.float32)
    if method == FLOOR:
      state, step = FloorState(zeros, lr), floor_step(model)
    else:
      scalar = lambda: jnp.zeros([], jnp.float32)
      state = AdaptiveFloorState(
        zeros, optax.tree.zeros_like(params), lr, scalar(), scalar(), scalar(), scalar()
      )
      step = floor_adaptive_step(model)
  else:
    tx = make_transformation(method, inner_name)
    state = tx.init(params)
    step = make_step(model, method, tx)
  start = time.perf_counter()
  compiled = step.lower(params, state, x, y, x_val, y_val).compile()
  compile_s = time.perf_counter() - start
  case = Case(method, compiled, params, state, compile_s, tree_bytes(state))
  return case, (x, y, x_val, y_val)


def time_cases(cases, data, repeats: int, steps: int, progress=None):
  """Median seconds per step of each case, interleaved over ``repeats`` rounds."""
  params = {c.method: jax.tree.map(jnp.copy, c.params) for c in cases}
  states = {c.method: jax.tree.map(jnp.copy, c.state) for c in cases}
  for c in cases:  # warm-up (first run allocates)
    params[c.method], states[c.method], _ = c.compiled(params[c.method], states[c.method], *data)
    jax.block_until_ready(params[c.method])
  samples = {c.method: [] for c in cases}
  for _ in range(repeats):
    for c in cases:
      p, s = params[c.method], states[c.method]
      start = time.perf_counter()
      for _ in range(steps):
        p, s, value = c.compiled(p, s, *data)
      jax.block_until_ready((p, s, value))
      samples[c.method].append((time.perf_counter() - start) / steps)
      params[c.method], states[c.method] = p, s
    if progress is not None:
      progress()
  return {m: statistics.median(v) for m, v in samples.items()}, samples
