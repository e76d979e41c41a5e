# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The section-5 protocol: its data, its seeds' inputs and its training runs.

Each run is :func:`marthe_lab.loop.scan` of :func:`marthe_lab.loop.make_step`
for a method of :data:`marthe_lab.methods.METHODS`.

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
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo
from marthe_lab import data as data_lib
from marthe_lab import loop
from marthe_lab import methods
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


Hyper = methods.Hyper
"""The eq. 5 knobs ``(hyper_lr, hyper_lr_step, mu)`` (see :class:`marthe_lab.methods.Hyper`)."""


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


def epoch_batches(key: jax.Array, n: int, steps: int, batch_size: int) -> jax.Array:
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
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
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
    seed_keys(seed)[1],
    arrays.x_train.shape[0],
    config.steps,
    config.batch_size,
  )


def seed_inputs(
  seed: jax.Array, arrays: Arrays, config: TrainConfig, num_classes: int = 10
) -> RunInputs:
  """The :class:`RunInputs` of one seed (pure; see :func:`make_inputs`)."""
  k_init, _, k_val = seed_keys(seed)
  params = models.init_mlp(k_init, arrays.x_train.shape[1], config.hidden, num_classes)
  batches = train_batches(seed, arrays, config)
  if config.val_batch_size is None:
    val_batches = jnp.zeros((config.steps, 0), jnp.int32)
  else:
    val_batches = epoch_batches(k_val, arrays.x_val.shape[0], config.steps, config.val_batch_size)
  return RunInputs(params, batches, val_batches)


@functools.partial(jax.jit, static_argnames=("config", "num_classes"))
def make_inputs(
  seeds: jax.Array, arrays: Arrays, config: TrainConfig, num_classes: int = 10
) -> RunInputs:
  """:func:`seed_inputs` of every seed in ``seeds`` (leading axis ``S``)."""
  return jax.vmap(lambda s: seed_inputs(s, arrays, config, num_classes))(seeds)


def _row(inputs: RunInputs, i: jax.Array) -> RunInputs:
  return jax.tree.map(lambda a: a[i], inputs)


def loss(params: models.Params, batch: tuple) -> jax.Array:
  """The MLP's cross-entropy on ``batch = (x, y)``: ``L_t`` and ``E``."""
  return models.cross_entropy(models.mlp_apply, params, *batch)


def fit(
  method: Union[str, methods.Method],
  arrays: Arrays,
  config: TrainConfig,
  inputs: RunInputs,
  value: Any = None,
  *,
  inner: methods.InnerFactory = optax.sgd,
  learning_rate: Any = None,
) -> loop.Run:
  """``config.steps`` steps of ``method`` from one seed's inputs.

  The step is :func:`marthe_lab.loop.make_step` fed the method's
  :attr:`~marthe_lab.methods.Method.needs`: ``value_fn`` (the minibatch
  training loss as a function of the params), ``val_grads`` (the gradient of
  ``E`` on the step's validation minibatch), ``value`` (``L_t(w_t)``).

  Args:
    method: a :data:`~marthe_lab.methods.METHODS` name or a
      :class:`~marthe_lab.methods.Method`.
    arrays: the data.
    config: the inner problem (``config.steps`` may be shorter than the
      progressions in ``inputs``: the first steps are used).
    inputs: the seed's :class:`RunInputs`.
    value: the method's grid value (may be traced).
    inner: the inner optimizer factory.
    learning_rate: ``eta_0`` or a schedule (default
      ``config.learning_rate``).

  Returns:
    A :class:`marthe_lab.loop.Run` whose records are the :class:`Trace`.
  """
  m = methods.get(method)
  lr = config.learning_rate if learning_rate is None else learning_rate
  x_tr, y_tr, x_val, y_val = arrays[:4]
  tx = m.make(inner, lr, value)
  step = loop.make_step(tx, loss, m.needs)

  def batches(xs):
    _, idx, vidx = xs
    val = (x_val, y_val) if config.val_batch_size is None else (x_val[vidx], y_val[vidx])
    return (x_tr[idx], y_tr[idx]), val

  def record(xs, params, state, out):
    del params
    return Trace(
      learning_rate=m.learning_rate(state, xs[0], lr),
      hyper_lr=methods.stat(state, "hyper_lr"),
      mu=methods.stat(state, "mu"),
      hypergradient=methods.stat(state, "hypergradient"),
      train_loss=out.value,
    )

  xs = (
    jnp.arange(config.steps),
    inputs.batches[: config.steps],
    inputs.val_batches[: config.steps],
  )
  return loop.scan(step, inputs.params, tx.init(inputs.params), xs, batches=batches, record=record)


def train(
  method: Union[str, methods.Method],
  arrays: Arrays,
  config: TrainConfig,
  inputs: RunInputs,
  value: Any = None,
  **options,
) -> RunResult:
  """One training run (:func:`fit`) and its final evaluation.

  The arguments are those of :func:`fit` (``options``: its ``inner`` and
  ``learning_rate``); the method is evaluated at its
  :meth:`~marthe_lab.methods.Method.evaluation_params`.

  Returns:
    A :class:`RunResult`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from marthe_lab import data
    >>> arrays = Arrays.from_dataset(data.digits())
    >>> config = TrainConfig(steps=4, hidden=(8,))
    >>> inputs = seed_inputs(jnp.int32(0), arrays, config)
    >>> out = train("hd", arrays, config, inputs, 1e-3)
    >>> out.trace.learning_rate.shape, bool(out.diverged)
    ((4,), False)
  """
  m = methods.get(method)
  x_tr, y_tr, x_val, y_val, x_te, y_te = arrays
  acc = functools.partial(models.accuracy, models.mlp_apply)
  run = fit(m, arrays, config, inputs, value, **options)
  params = m.evaluation_params(run.opt_state, run.params)
  trace = run.records
  initial_val_loss = loss(inputs.params, (x_val, y_val))
  val_loss = loss(params, (x_val, y_val))
  nonfinite = optax.tree.get(run.opt_state, "nonfinite_count")
  diverged = (
    ~jnp.all(jnp.isfinite(trace.train_loss))
    | ~jnp.isfinite(val_loss)
    | (val_loss > initial_val_loss)
  )
  return RunResult(
    trace=trace,
    initial_val_loss=initial_val_loss,
    train_loss=loss(params, (x_tr, y_tr)),
    val_loss=val_loss,
    val_accuracy=acc(params, x_val, y_val),
    test_loss=loss(params, (x_te, y_te)),
    test_accuracy=acc(params, x_te, y_te),
    nonfinite_count=jnp.asarray(0 if nonfinite is None else nonfinite),
    diverged=diverged,
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
  """Vmapped eq. 5 runs: seed ``seeds[i]`` with ``Hyper(...)[i]``, all at once.

  ``mo.marthe(optax.sgd, eta_0, hyper_lr_step=kappa, hyper_lr=beta, mu=mu or
  None)`` (the registry's ``'eq5'`` and ``'eq5_adaptive_mu'``). One
  compilation serves every fixed-``mu`` method (constant, HD, RTHO, fixed
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
  method = "eq5_adaptive_mu" if adaptive_mu else "eq5"
  return jax.vmap(lambda seed, h: train(method, arrays, config, _row(inputs, seed), h))(
    seeds, hyper
  )


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
  return jax.vmap(lambda seed: train("knob_free", arrays, config, _row(inputs, seed)))(seeds)


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
  return jax.vmap(
    lambda seed, schedule: train(
      "plain", arrays, config, _row(inputs, seed), learning_rate=lambda count: schedule[count]
    )
  )(seeds, schedules)
