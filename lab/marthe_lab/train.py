# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Whole training runs as pure JAX functions: ``lax.scan`` over the steps.

A run is a function of its seed's :class:`RunInputs` (the initial weights
``w_0`` and the training and validation minibatch progressions, the same for
every method at a given seed: appendix B of the paper) and of its (possibly
traced) hyperparameters, so that :func:`jax.vmap` turns a grid of seeds and
hyper-learning rates into one compiled program. The inputs are computed once
per seed by :func:`make_inputs`, outside the training programs.

The protocol of section 5: an MLP trained by SGD on minibatches of 100
examples for ``T`` steps from ``eta_0``; the objective ``E`` is the
validation cross-entropy. The online methods see ``grad E(w_t)`` on a fresh
validation minibatch at every step (``TrainConfig.val_batch_size``; ``None``
uses the whole validation set); the final numbers are computed on the whole
validation and test sets.
"""

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_lab import data as data_lib
from marthe_lab import models


class TrainConfig(NamedTuple):
  """The inner problem (hashable: it is a static argument of the jitted runs).

  Attributes:
    steps: the horizon ``T``.
    batch_size: training minibatch size.
    val_batch_size: size of the validation minibatch on which ``grad E`` is
      taken at each step; ``None`` for the whole validation set.
    learning_rate: ``eta_0``.
    hidden: the MLP's hidden widths.
  """

  steps: int = 512
  batch_size: int = 100
  val_batch_size: Optional[int] = 100
  learning_rate: float = 0.01
  hidden: tuple = (500, 500, 500)


class Arrays(NamedTuple):
  """A :class:`~marthe_lab.data.Dataset`'s arrays, as jax arrays."""

  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  x_test: jax.Array
  y_test: jax.Array

  @classmethod
  def from_dataset(cls, dataset: data_lib.Dataset) -> "Arrays":
    return cls(*(jnp.asarray(getattr(dataset, f)) for f in cls._fields))


class Hyper(NamedTuple):
  """The online methods' hyperparameters (scalars, or arrays under vmap).

  Attributes:
    hyper_lr: ``beta`` (fixed), or ``beta_0`` when ``hyper_lr_step > 0``.
    hyper_lr_step: ``kappa``, the step size of ``beta`` (0: ``beta`` fixed).
    mu: the fixed discount (ignored when ``mu`` is adapted).
  """

  hyper_lr: jax.Array
  hyper_lr_step: jax.Array
  mu: jax.Array


class Trace(NamedTuple):
  """Per-step quantities of a run, each of shape ``[steps]``."""

  learning_rate: jax.Array  # eta_t used at step t
  hyper_lr: jax.Array  # beta_t
  mu: jax.Array  # mu_t
  hypergradient: jax.Array  # Delta eta_t
  train_loss: jax.Array  # L_t(w_t) on step t's minibatch


class RunResult(NamedTuple):
  """What a training run reports (scalars unless said otherwise).

  Attributes:
    trace: the per-step :class:`Trace`.
    initial_val_loss: validation loss at ``w_0``.
    train_loss: final loss on the whole training set.
    val_loss: final loss on the whole validation set.
    val_accuracy: final validation accuracy.
    test_loss: final test loss.
    test_accuracy: final test accuracy.
    nonfinite_count: hypergradients the optimizer's guard discarded.
    diverged: a non-finite training or final validation loss, or a final
      validation loss above the initial one.
  """

  trace: Trace
  initial_val_loss: jax.Array
  train_loss: jax.Array
  val_loss: jax.Array
  val_accuracy: jax.Array
  test_loss: jax.Array
  test_accuracy: jax.Array
  nonfinite_count: jax.Array
  diverged: jax.Array


def epoch_batches(
    key: jax.Array, n: int, steps: int, batch_size: int
) -> jax.Array:
  """``[steps, batch_size]`` indices into ``n`` examples, epoch by epoch.

  Each epoch is a fresh random permutation; batches are consecutive slices of
  the concatenated epochs (a batch may straddle two epochs), so every example
  is seen once per epoch.

  Args:
    key: a PRNG key.
    n: the number of examples.
    steps: the number of batches.
    batch_size: the batch size (at most ``n``).

  Returns:
    An int32 array of shape ``[steps, batch_size]``.
  """
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} exceeds the {n} examples.")
  epochs = -(-steps * batch_size // n)
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(
      jax.random.split(key, epochs)
  )
  return perms.reshape(-1)[: steps * batch_size].reshape(steps, batch_size)


class RunInputs(NamedTuple):
  """What a seed fixes: ``w_0`` and the minibatch progressions.

  Computed once per seed by :func:`make_inputs` (outside the training
  programs, which then compile faster) and shared by every method.

  Attributes:
    params: the initial weights ``w_0``.
    batches: ``[steps, batch_size]`` training minibatch indices.
    val_batches: ``[steps, val_batch_size]`` validation minibatch indices
      (``[steps, 0]`` when ``E`` uses the whole validation set).
  """

  params: models.Params
  batches: jax.Array
  val_batches: jax.Array


def seed_keys(seed: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The keys of ``w_0``, the training batches and the validation batches."""
  k = jax.random.split(jax.random.key(seed), 3)
  return k[0], k[1], k[2]


def train_batches(seed: jax.Array, arrays: Arrays, config: TrainConfig) -> jax.Array:
  """The seed's ``[steps, batch_size]`` training minibatch indices."""
  return epoch_batches(
      seed_keys(seed)[1], arrays.x_train.shape[0], config.steps,
      config.batch_size,
  )


def seed_inputs(
    seed: jax.Array, arrays: Arrays, config: TrainConfig, num_classes: int = 10
) -> RunInputs:
  """The :class:`RunInputs` of one seed (pure; see :func:`make_inputs`)."""
  k_init, _, k_val = seed_keys(seed)
  params = models.init_mlp(
      k_init, arrays.x_train.shape[1], config.hidden, num_classes
  )
  batches = train_batches(seed, arrays, config)
  if config.val_batch_size is None:
    val_batches = jnp.zeros((config.steps, 0), jnp.int32)
  else:
    val_batches = epoch_batches(
        k_val, arrays.x_val.shape[0], config.steps, config.val_batch_size
    )
  return RunInputs(params, batches, val_batches)


@functools.partial(jax.jit, static_argnames=("config", "num_classes"))
def make_inputs(
    seeds: jax.Array, arrays: Arrays, config: TrainConfig, num_classes: int = 10
) -> RunInputs:
  """:func:`seed_inputs` of every seed in ``seeds`` (leading axis ``S``)."""
  return jax.vmap(lambda s: seed_inputs(s, arrays, config, num_classes))(seeds)


def _row(inputs: RunInputs, i: jax.Array) -> RunInputs:
  return jax.tree.map(lambda a: a[i], inputs)


def _stat(state, name: str) -> jax.Array:
  """A scalar of the optimizer state for the trace (NaN when absent).

  With several hyperparameters (``mo.marthe_multi``: per-layer learning
  rates, per-hyperparameter ``mu``...) the mean of the values is recorded.
  """
  value = optax.tree.get(state, name)
  if value is None:
    return jnp.asarray(jnp.nan, jnp.float32)
  return jnp.mean(jnp.stack(jax.tree.leaves(value))).astype(jnp.float32)


def train(
    make_tx: Callable[[], optax.GradientTransformation],
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    *,
    uses_objective: bool = True,
    schedule: Optional[jax.Array] = None,
    extra_args: Sequence[str] = ("value_fn", "val_grads"),
) -> RunResult:
  """One training run, ``lax.scan`` over ``config.steps`` steps.

  Args:
    make_tx: builds the optimizer (called inside the traced function, so it
      may close over traced hyperparameters).
    arrays: the data.
    config: the inner problem (``config.steps`` may be shorter than the
      progressions in ``inputs``: the first steps are used).
    inputs: the seed's :class:`RunInputs`.
    uses_objective: whether the optimizer takes the ``extra_args`` (the
      online methods); ``False`` for plain Optax optimizers.
    schedule: the learning rate of each step, recorded in the trace when the
      optimizer's state does not hold a ``learning_rate`` (LRS-OPT schedules).
    extra_args: which keyword arguments ``update`` receives: ``'value_fn'``
      (the minibatch training loss as a function of the params),
      ``'val_grads'`` (the gradient of ``E`` on the step's validation
      minibatch) and ``'value'`` (the minibatch training loss ``L_t(w_t)``).

  Returns:
    A :class:`RunResult`.
  """
  x_tr, y_tr, x_val, y_val, x_te, y_te = arrays
  loss = functools.partial(models.cross_entropy, models.mlp_apply)
  params = inputs.params
  batches = inputs.batches[: config.steps]
  val_batches = inputs.val_batches[: config.steps]
  tx = optax.with_extra_args_support(make_tx())
  state = tx.init(params)

  def step(carry, xs):
    params, state = carry
    t, idx, vidx = xs
    xb, yb = x_tr[idx], y_tr[idx]
    value, grads = jax.value_and_grad(loss)(params, xb, yb)
    if uses_objective:
      xv, yv = (x_val, y_val) if config.val_batch_size is None else (
          x_val[vidx], y_val[vidx])
      extra = {
          "value_fn": lambda: (lambda p: loss(p, xb, yb)),
          "val_grads": lambda: jax.grad(loss)(params, xv, yv),
          "value": lambda: value,
      }
      updates, state = tx.update(
          grads, state, params, **{k: extra[k]() for k in extra_args})
    else:
      updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    lr = _stat(state, "learning_rate")
    if schedule is not None:
      lr = jnp.asarray(schedule[t], jnp.float32)
    row = Trace(
        learning_rate=lr,
        hyper_lr=_stat(state, "hyper_lr"),
        mu=_stat(state, "mu"),
        hypergradient=_stat(state, "hypergradient"),
        train_loss=value,
    )
    return (params, state), row

  initial_val_loss = loss(params, x_val, y_val)
  (params, state), trace = jax.lax.scan(
      step, (params, state), (jnp.arange(config.steps), batches, val_batches)
  )
  val_loss = loss(params, x_val, y_val)
  nonfinite = optax.tree.get(state, "nonfinite_count")
  diverged = (
      ~jnp.all(jnp.isfinite(trace.train_loss))
      | ~jnp.isfinite(val_loss)
      | (val_loss > initial_val_loss)
  )
  return RunResult(
      trace=trace,
      initial_val_loss=initial_val_loss,
      train_loss=loss(params, x_tr, y_tr),
      val_loss=val_loss,
      val_accuracy=models.accuracy(models.mlp_apply, params, x_val, y_val),
      test_loss=loss(params, x_te, y_te),
      test_accuracy=models.accuracy(models.mlp_apply, params, x_te, y_te),
      nonfinite_count=jnp.asarray(0 if nonfinite is None else nonfinite),
      diverged=diverged,
  )


def online_optimizer(
    config: TrainConfig, hyper: Hyper, adaptive_mu: bool
) -> optax.GradientTransformationExtraArgs:
  """``mo.marthe(optax.sgd, eta_0, hyper_lr_step=kappa, hyper_lr=beta, mu=mu or None)``.

  HD is ``mu = 0`` and RTHO ``mu = 1`` with ``kappa = 0`` (exactly
  ``mo.hd`` and ``mo.rtho``); constant SGD is ``beta = kappa = 0``.
  """
  return mo.marthe(
      optax.sgd,
      config.learning_rate,
      hyper_lr_step=hyper.hyper_lr_step,
      hyper_lr=hyper.hyper_lr,
      mu=None if adaptive_mu else hyper.mu,
  )


@functools.partial(jax.jit, static_argnames=("config", "adaptive_mu"))
def run_online(
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    seeds: jax.Array,
    hyper: Hyper,
    adaptive_mu: bool,
) -> RunResult:
  """Vmapped online runs: seed ``seeds[i]`` with ``Hyper(...)[i]``, all at once.

  One compilation serves every fixed-``mu`` method (constant, HD, RTHO, fixed
  ``mu``), another every adaptive-``mu`` one; the hyperparameters are traced.

  Args:
    arrays: the data.
    config: the inner problem (static).
    inputs: :func:`make_inputs` of the seeds ``0 .. S-1`` (leading axis S).
    seeds: ``[n]`` int32 indices into ``inputs``.
    hyper: a :class:`Hyper` of ``[n]`` arrays.
    adaptive_mu: adapt ``mu`` online (appendix A) instead of ``hyper.mu``.

  Returns:
    A :class:`RunResult` of arrays with a leading axis ``n``.
  """

  def one(seed, h):
    return train(
        lambda: online_optimizer(config, h, adaptive_mu), arrays, config,
        _row(inputs, seed),
    )

  return jax.vmap(one)(seeds, hyper)


@functools.partial(jax.jit, static_argnames=("config",))
def run_knob_free(
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    seeds: jax.Array,
) -> RunResult:
  """Vmapped runs of knob-free MARTHE, ``mo.marthe(optax.sgd, eta_0)``.

  One setting, no grid: ``update`` receives the gradient of ``E`` on the
  step's validation minibatch (``val_grads``) and the minibatch training
  loss (``value``, for the divergence safeguard).
  """

  def one(seed):
    return train(
        lambda: mo.marthe(optax.sgd, learning_rate=config.learning_rate),
        arrays, config, _row(inputs, seed),
        extra_args=("val_grads", "value"),
    )

  return jax.vmap(one)(seeds)


def knob_free_available() -> bool:
  """Whether ``mo.marthe`` has the knob-free mode (``hyper_lr_step=None``)."""
  import inspect  # pylint: disable=g-import-not-at-top
  parameter = inspect.signature(mo.marthe).parameters.get("hyper_lr_step")
  return parameter is not None and parameter.default is None


@functools.partial(jax.jit, static_argnames=("config",))
def run_schedule(
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    seeds: jax.Array,
    schedules: jax.Array,
) -> RunResult:
  """Vmapped SGD runs of seeds ``seeds`` with ``[n, steps]`` schedules."""

  def one(seed, schedule):
    make = lambda: optax.sgd(lambda count: schedule[count])
    return train(
        make, arrays, config, _row(inputs, seed), uses_objective=False,
        schedule=schedule,
    )

  return jax.vmap(one)(seeds, schedules)


def run_in_chunks(
    fn: Callable[..., RunResult],
    leading: Sequence,
    chunk: Optional[int] = None,
    callback: Optional[Callable[[int], None]] = None,
) -> RunResult:
  """``fn(*leading)`` over the leading axis, ``chunk`` rows per call.

  The rows are split into ``ceil(n / chunk)`` calls of equal size (at most
  ``chunk``); the last call is padded by repeating the last row (so one
  compilation serves every call) and the padding is dropped from the result.

  Args:
    fn: a vmapped function of arrays with a common leading axis.
    leading: its arguments (pytrees of arrays with that leading axis).
    chunk: rows per call; ``None`` for all at once.
    callback: called with the number of rows finished after each call.

  Returns:
    The concatenated results, as NumPy arrays.
  """
  n = len(jax.tree.leaves(leading)[0])
  calls = 1 if chunk is None else -(-n // chunk)
  chunk = -(-n // calls)
  outs = []
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    take = np.minimum(np.arange(start, start + chunk), n - 1)
    part = jax.tree.map(lambda a: jnp.asarray(a)[take], leading)
    out = jax.tree.map(np.asarray, fn(*part))
    outs.append(jax.tree.map(lambda a: a[: stop - start], out))
    if callback is not None:
      callback(stop - start)
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)
