# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""One training run of a method on a task, vmapped over seeds.

:func:`fit` is the one step builder and loop of :mod:`marthe_lab.loop` fed
what the method reads, :func:`train` evaluates the run and :func:`run_rows`
vmaps it over seeds in one compiled program; :func:`candidates` are the
selection's (read off whole-horizon runs by
:func:`marthe_lab.choose.select_from_curves`).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from marthe_optax import selection
from marthe_lab import loop
from marthe_lab import methods as methods_lib
from marthe_lab import models
from marthe_lab.lr_free.methods import Method, get_method
from marthe_lab.lr_free.tasks import Arrays, RunInputs, TrainConfig, get_model


def fit(
  method: Method,
  model: models.Model,
  arrays: Arrays,
  config: TrainConfig,
  inputs: RunInputs,
  hyper: jax.Array,
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """``config.steps`` steps of ``method`` from one seed's inputs.

  :func:`marthe_lab.loop.make_step` fed the method's
  :attr:`~Method.needs` (the validation minibatch of each step for
  ``val_grads`` / ``val_value``), run by :func:`marthe_lab.loop.scan`.

  Args:
    method: the method.
    model: the model.
    arrays: the data.
    config: the inner problem.
    inputs: one seed's :class:`RunInputs` (``w_0`` and minibatch indices).
    hyper: the ``beta`` / ``kappa`` of the hypergradient methods, or the grid
      value (ignored by the others).

  Returns:
    ``(params, state, learning_rates, train_losses)`` after the last step;
    the last two have shape ``[steps]`` (the rate step ``t`` used, read
    after it, and ``L_t(w_t)``).
  """
  x_tr, y_tr, x_val, y_val = arrays[:4]
  tx = method.build(config, hyper, int(x_tr.shape[0]))
  step = loop.make_step(tx, lambda p, b: models.cross_entropy(model.apply, p, *b), method.needs)

  def batches(x):
    _, idx, vidx = x
    val = (x_val, y_val) if vidx.shape[0] == 0 else (x_val[vidx], y_val[vidx])
    return (x_tr[idx], y_tr[idx]), val

  run = loop.scan(
    step,
    inputs.params,
    tx.init(inputs.params),
    (jnp.arange(config.steps), inputs.batches[: config.steps], inputs.val_batches[: config.steps]),
    batches=batches,
    record=lambda x, p, s, out: (method.read_lr(s, x[0], config, hyper), out.value),
  )
  return run.params, run.opt_state, *run.records


class Run(NamedTuple):
  """One run's results (arrays with leading axes when vmapped).

  Attributes:
    learning_rate: ``[steps]`` learning rate / effective step per step
      (``nan`` where the method exposes none).
    train_loss: ``[steps]`` minibatch training loss ``L_t(w_t)``.
    initial_val_loss: validation loss at ``w_0``.
    val_loss: final validation loss (whole set, at the evaluation params).
    val_accuracy: final validation accuracy.
    test_loss: final test loss.
    test_accuracy: final test accuracy.
    diverged: a non-finite training loss, or a final validation loss that is
      non-finite or above the initial one.
    safeguard_count: the ``'safeguard_count'`` of the final optimizer state
      (MARTHE's knob-free mode: divergence safeguard events); ``nan`` where
      the state has none.
    nonfinite_count: the same for ``'nonfinite_count'`` (steps whose
      hypergradient was not finite).
    repaired_count: the same for ``'repaired_count'`` (steps where NaN
      tangent entries at a finite primal were set to their limit 0).
  """

  learning_rate: jax.Array
  train_loss: jax.Array
  initial_val_loss: jax.Array
  val_loss: jax.Array
  val_accuracy: jax.Array
  test_loss: jax.Array
  test_accuracy: jax.Array
  diverged: jax.Array
  safeguard_count: jax.Array
  nonfinite_count: jax.Array
  repaired_count: jax.Array


def train(
  method: Method,
  model: models.Model,
  arrays: Arrays,
  config: TrainConfig,
  inputs: RunInputs,
  hyper: jax.Array,
) -> Run:
  """One run (:func:`fit`), evaluated at the method's evaluation params.

  The arguments are those of :func:`fit`.

  Returns:
    A :class:`Run`.
  """
  _, _, x_val, y_val, x_te, y_te = arrays
  loss = functools.partial(models.cross_entropy, model.apply)
  acc = functools.partial(models.accuracy, model.apply)
  params, state, lrs, losses = fit(method, model, arrays, config, inputs, hyper)
  params = method.evaluation_params(state, params)
  initial_val_loss = loss(inputs.params, x_val, y_val)
  val_loss = loss(params, x_val, y_val)
  diverged = (
    ~jnp.all(jnp.isfinite(losses)) | ~jnp.isfinite(val_loss) | (val_loss > initial_val_loss)
  )
  return Run(
    learning_rate=lrs,
    train_loss=losses,
    initial_val_loss=initial_val_loss,
    val_loss=val_loss,
    val_accuracy=acc(params, x_val, y_val),
    test_loss=loss(params, x_te, y_te),
    test_accuracy=acc(params, x_te, y_te),
    diverged=diverged,
    **methods_lib.counters(state),
  )


@functools.partial(jax.jit, static_argnames=("method", "model", "config"))
def run_rows(
  arrays: Arrays,
  inputs: RunInputs,
  hypers: jax.Array,
  *,
  method: "str | Method",
  model: str,
  config: TrainConfig,
) -> Run:
  """:func:`train` vmapped over rows ``(inputs[i], hypers[i])``.

  One compiled program per method; the rows are the seeds (for the
  hypergradient methods ``hypers`` holds one candidate of the selection,
  the same in every row; for a method with a :attr:`Method.grid`, one value
  of the grid). ``method`` is a key of :data:`METHODS` or a :class:`Method`
  (hashable: its fields are strings, tuples and functions).
  """
  m = get_method(method)
  net = get_model(model, config, arrays.x_train.shape[1])
  return jax.vmap(lambda i, h: train(m, net, arrays, config, i, h))(inputs, hypers)


def candidates() -> np.ndarray:
  """The selection's candidates: its default decimated grid 1, 0.1, ..., 1e-9."""
  return selection.decimated_grid(1.0, 10)
