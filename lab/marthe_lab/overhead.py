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
"""

import functools
import statistics
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo
from marthe_lab import models

INNERS = {
    "sgd": optax.sgd,
    "momentum": functools.partial(optax.sgd, momentum=0.9),
    "adam": optax.adam,
}
LEARNING_RATES = {"sgd": 0.01, "momentum": 0.01, "adam": 1e-3}
METHODS = ("plain", "hd", "hd_val", "knob_free", "knob_free_full", "rtho",
           "marthe")


class Model(NamedTuple):
  """A model: ``init(key) -> params`` and ``apply(params, x) -> logits``."""

  name: str
  init: Callable
  apply: Callable
  input_shape: tuple


def mlp(sizes=(784, 500, 500, 500, 10)) -> Model:
  """The paper's section-5 feed-forward net (:mod:`.models`' ReLU MLP)."""
  return Model(
      "mlp-" + "-".join(map(str, sizes)),
      lambda key: models.init_mlp(key, sizes[0], sizes[1:-1], sizes[-1]),
      models.mlp_apply,
      (sizes[0],),
  )


def small_cnn(channels=(16, 32), num_classes=10) -> Model:
  """A small CNN on 28x28x1 inputs: two stride-2 3x3 convolutions and a head."""

  def init(key):
    params, c_in = [], 1
    for c in channels:
      key, k = jax.random.split(key)
      params.append({"w": jax.random.normal(k, (3, 3, c_in, c)) * jnp.sqrt(2.0 / (9 * c_in)),
                     "b": jnp.zeros(c)})
      c_in = c
    key, k = jax.random.split(key)
    d = 7 * 7 * channels[-1]
    params.append({"w": jax.random.normal(k, (d, num_classes)) / jnp.sqrt(d),
                   "b": jnp.zeros(num_classes)})
    return params

  def apply(params, x):
    for layer in params[:-1]:
      x = jax.lax.conv_general_dilated(
          x, layer["w"], window_strides=(2, 2), padding="SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
      x = jax.nn.relu(x + layer["b"])
    x = x.reshape(x.shape[0], -1)
    return x @ params[-1]["w"] + params[-1]["b"]

  return Model("cnn-" + "-".join(map(str, channels)), init, apply, (28, 28, 1))


def _loss(model, params, x, y):
  logits = model.apply(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


MULTI_METHODS = ("marthe_k1", "marthe_k2", "marthe_k4")


def _per_layer(inner):
  """Per-layer learning rates of the list-of-layers params (``layer0``...)."""
  labels = lambda params: [jax.tree.map(lambda _: f"layer{i}", layer)
                           for i, layer in enumerate(params)]
  return mo.per_group(inner, labels)


def make_transformation(method: str, inner_name: str) -> optax.GradientTransformation:
  """The transformation of ``method`` around the inner optimizer ``inner_name``.

  ``marthe_kK`` tunes ``K`` hyperparameters with :func:`marthe_optax.marthe_multi`:
  the learning rate (K = 1), learning rate and weight decay (K = 2), or one
  learning rate per layer of the four-layer MLP (K = 4).
  """
  inner, lr = INNERS[inner_name], LEARNING_RATES[inner_name]
  if method == "marthe_k1":
    return mo.marthe_multi(inner, {"learning_rate": lr}, hyper_lr_step=1e-8)
  if method == "marthe_k2":
    with_decay = lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), inner(learning_rate))
    return mo.marthe_multi(
        with_decay, {"learning_rate": lr, "weight_decay": 1e-4}, hyper_lr_step=1e-8)
  if method == "marthe_k4":
    return mo.marthe_multi(
        _per_layer(inner),
        {"learning_rate": {f"layer{i}": lr for i in range(4)}}, hyper_lr_step=1e-8)
  if method == "plain":
    return inner(lr)
  if method in ("hd", "hd_val"):
    return mo.hd(inner, lr, hyper_lr=1e-6)
  if method == "rtho":
    return mo.rtho(inner, lr, hyper_lr=1e-8)
  if method == "marthe":
    return mo.marthe(inner, lr, hyper_lr_step=1e-8)
  if method == "knob_free":
    return mo.marthe(inner, lr, first_order=True)
  if method == "knob_free_full":
    return mo.marthe(inner, lr, first_order=False)
  raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def make_step(model: Model, method: str, tx: optax.GradientTransformation):
  """The jit-compiled step of ``method``, params and state donated."""
  loss = functools.partial(_loss, model)

  def step(params, state, x, y, x_val, y_val):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    if method in ("plain", "hd"):
      updates, state = tx.update(grads, state, params)
    else:
      kwargs = {"val_grads": jax.grad(loss)(params, x_val, y_val)}
      if method.startswith("knob_free"):
        kwargs["value"] = value
      if method not in ("hd_val", "knob_free"):
        kwargs["value_fn"] = lambda p: loss(p, x, y)
      updates, state = tx.update(grads, state, params, **kwargs)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


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
    params[c.method], states[c.method] = c.compiled(params[c.method], states[c.method], *data)
    jax.block_until_ready(params[c.method])
  samples = {c.method: [] for c in cases}
  for _ in range(repeats):
    for c in cases:
      p, s = params[c.method], states[c.method]
      start = time.perf_counter()
      for _ in range(steps):
        p, s = c.compiled(p, s, *data)
      jax.block_until_ready((p, s))
      samples[c.method].append((time.perf_counter() - start) / steps)
      params[c.method], states[c.method] = p, s
    if progress is not None:
      progress()
  return {m: statistics.median(v) for m, v in samples.items()}, samples
