# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""One training run of a method on a task, vmapped over seeds, and the selection.

:func:`train_step` feeds a method what it reads, :func:`fit` scans the steps,
:func:`train` evaluates the run and :func:`run_rows` vmaps it over seeds in
one compiled program. :func:`select_index` reads the paper's selection of
``beta`` / ``kappa`` off whole-horizon runs; :func:`best_in_hindsight` the
best value of a grid.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import selection
from marthe_lab.lr_free.methods import Method, get_method
from marthe_lab.lr_free.tasks import (
    Arrays, Model, RunInputs, TrainConfig, accuracy, cross_entropy, get_model)


def train_step(
    method: Method,
    tx: optax.GradientTransformationExtraArgs,
    loss: Callable[[Any, jax.Array, jax.Array], jax.Array],
    config: TrainConfig,
    params: Any,
    state: Any,
    t: jax.Array,
    batch: tuple[jax.Array, jax.Array],
    val_batch: tuple[jax.Array, jax.Array],
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """One step of ``method``, fed what it reads (see :attr:`Method.feed`).

  Args:
    method: the method.
    tx: its transformation (``method.build(...)`` with extra-args support).
    loss: ``loss(params, x, y) -> scalar``.
    config: the inner problem.
    params: the current params ``w_t``.
    state: the optimizer state.
    t: the step index.
    batch: the training minibatch ``(x, y)``.
    val_batch: the validation minibatch ``(x, y)``.

  Returns:
    ``(params, state, lr, value)``: the new params and state, the learning
    rate (or effective step) of this step, and ``L_t(w_t)``.
  """
  xb, yb = batch
  value, grads = jax.value_and_grad(loss)(params, xb, yb)
  if method.feed == "objective":
    extra = dict(value_fn=lambda p: loss(p, xb, yb),
                 val_grads=jax.grad(loss)(params, *val_batch))
  elif method.feed == "objective_value":
    extra = dict(val_grads=jax.grad(loss)(params, *val_batch), value=value)
    if method.needs_value_fn:
      extra["value_fn"] = lambda p: loss(p, xb, yb)
  elif method.feed == "value":
    extra = dict(value=loss(params, *val_batch))
  else:
    extra = {}
  updates, state = tx.update(grads, state, params, **extra)
  params = optax.apply_updates(params, updates)
  return params, state, method.lr(state, t, config), value


def evaluation_params(method: Method, state: Any, params: Any) -> Any:
  """The params at which ``method`` is evaluated (schedule-free: its average)."""
  return params if method.eval_params is None else method.eval_params(state, params)


def fit(
    method: Method,
    model: Model,
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    hyper: jax.Array,
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """``config.steps`` steps of ``method`` (``lax.scan``) from one seed's inputs.

  Args:
    method: the method.
    model: the model.
    arrays: the data.
    config: the inner problem.
    inputs: one seed's :class:`RunInputs` (``w_0`` and minibatch indices).
    hyper: the ``beta`` / ``kappa`` of the hypergradient methods (ignored by
      the others).

  Returns:
    ``(params, state, learning_rates, train_losses)`` after the last step;
    the last two have shape ``[steps]``.
  """
  x_tr, y_tr, x_val, y_val = arrays[:4]
  loss = functools.partial(cross_entropy, model.apply)
  tx = optax.with_extra_args_support(
      method.build(config, hyper, int(x_tr.shape[0])))

  def step(carry, xs):
    t, idx, vidx = xs
    val_batch = (x_val, y_val) if vidx.shape[0] == 0 else (
        x_val[vidx], y_val[vidx])
    params, state, lr, value = train_step(
        method, tx, loss, config, *carry, t, (x_tr[idx], y_tr[idx]), val_batch)
    return (params, state), (lr, value)

  (params, state), (lrs, losses) = jax.lax.scan(
      step, (inputs.params, tx.init(inputs.params)),
      (jnp.arange(config.steps), inputs.batches[:config.steps],
       inputs.val_batches[:config.steps]))
  return params, state, lrs, losses


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


def _count(state: Any, name: str) -> jax.Array:
  """``optax.tree.get(state, name)`` as a float; ``nan`` when absent."""
  value = optax.tree.get(state, name)
  return jnp.asarray(jnp.nan if value is None else value, jnp.float32)


def train(
    method: Method,
    model: Model,
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
  loss = functools.partial(cross_entropy, model.apply)
  acc = functools.partial(accuracy, model.apply)
  params, state, lrs, losses = fit(method, model, arrays, config, inputs, hyper)
  params = evaluation_params(method, state, params)
  initial_val_loss = loss(inputs.params, x_val, y_val)
  val_loss = loss(params, x_val, y_val)
  diverged = (~jnp.all(jnp.isfinite(losses)) | ~jnp.isfinite(val_loss)
              | (val_loss > initial_val_loss))
  return Run(
      learning_rate=lrs,
      train_loss=losses,
      initial_val_loss=initial_val_loss,
      val_loss=val_loss,
      val_accuracy=acc(params, x_val, y_val),
      test_loss=loss(params, x_te, y_te),
      test_accuracy=acc(params, x_te, y_te),
      diverged=diverged,
      safeguard_count=_count(state, "safeguard_count"),
      nonfinite_count=_count(state, "nonfinite_count"),
      repaired_count=_count(state, "repaired_count"),
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
  m, net = get_method(method), get_model(model, config)
  return jax.vmap(lambda i, h: train(m, net, arrays, config, i, h))(
      inputs, hypers)


def candidates() -> np.ndarray:
  """The selection's candidates: its default decimated grid 1, 0.1, ..., 1e-9."""
  return selection.decimated_grid(1.0, 10)


def _curve(curves: jax.Array, log_grid: jax.Array, value: jax.Array) -> jax.Array:
  return curves[jnp.argmin(jnp.abs(log_grid - jnp.log(value)))]


def select_index(
    curves: np.ndarray, grid: np.ndarray
) -> tuple[Optional[selection.HyperLrSelection], int]:
  """The paper's selection on one seed's whole-horizon runs.

  :func:`marthe_optax.selection.select_hyper_lr_step` over ``grid``, whose
  ``run`` returns the training-loss curve already computed for the
  candidate: the largest value whose minibatch training loss stays finite
  and below twice its first value over the whole horizon.

  Args:
    curves: ``[len(grid), steps]`` training losses, one row per candidate.
    grid: the candidates (decreasing).

  Returns:
    The selection and the index of the selected candidate; ``(None, i)``
    with ``i`` the smallest candidate when every candidate diverged.
  """
  log_grid = jnp.log(jnp.asarray(grid, jnp.float32))
  run = jax.tree_util.Partial(_curve, jnp.asarray(curves), log_grid)
  try:
    chosen = selection.select_hyper_lr_step(run, candidates=grid)
  except ValueError:  # every candidate diverged
    return None, int(np.argmin(grid))
  return chosen, int(np.argmin(np.abs(np.log(grid) - np.log(chosen.value))))


def best_in_hindsight(val_accuracy: np.ndarray) -> int:
  """The index of the grid value with the best mean final validation accuracy.

  Args:
    val_accuracy: ``[len(grid), S]`` final validation accuracies, one row
      per grid value (``nan`` counts as the worst).

  Returns:
    The row whose mean over seeds is the largest; ties go to the first such
    row (the smallest learning rate of an increasing grid).

  Examples:
    >>> import numpy as np
    >>> best_in_hindsight(np.array([[0.5, 0.7], [0.8, 0.6], [0.9, np.nan]]))
    1
  """
  mean = np.mean(np.asarray(val_accuracy, np.float64), axis=-1)
  return int(np.argmax(np.where(np.isnan(mean), -np.inf, mean)))

