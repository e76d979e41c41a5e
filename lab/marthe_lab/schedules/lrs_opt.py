# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""LRS-OPT in the section-5 experiment: the exact offline hypergradient of the
whole schedule (:func:`marthe_optax.exact.lrs_opt`), vmapped over seeds.
"""

import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import exact
from marthe_lab import models
from marthe_lab import report
from marthe_lab import train as train_lib
from marthe_lab.schedules.presets import Preset
from marthe_lab.schedules.results import LrsOptOutcome, Progress, best_online


def _final_slope(relative: np.ndarray) -> np.ndarray:
  """The last finite entry of each row (NaN for a row without one)."""
  out = np.full(relative.shape[0], np.nan)
  for j, row in enumerate(relative):
    finite = np.flatnonzero(np.isfinite(row))
    if finite.size:
      out[j] = row[finite[-1]]
  return out


def best_constant(
  params: models.Params,
  keys: jax.Array,
  sample: Callable[[jax.Array], tuple],
  objective: Callable[[models.Params], jax.Array],
  steps: int,
  candidates: np.ndarray,
  draws: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Per seed, the constant learning rate among ``candidates`` with the lowest
  mean ``E(w_T)`` over ``draws`` fresh minibatch progressions (the same
  draws for every candidate), by forward training runs only.

  Args:
    params: the seeds' ``w_0`` (leading axis ``S'``).
    keys: ``[S']`` keys of the draws.
    sample: ``sample(key) -> batches`` (e.g.
      :func:`marthe_optax.exact.random_minibatches`).
    objective: ``E(params)``.
    steps: ``T``.
    candidates: ``[C]`` constant learning rates.
    draws: progressions per (seed, candidate).

  Returns:
    ``([S'] best constants, [S', C] mean E of every candidate)``.
  """
  loss = lambda p, b: models.cross_entropy(models.mlp_apply, p, b[0], b[1])

  def value(p, key, eta, sample, objective):
    return exact.schedule_objective(
      jnp.full(steps, eta, jnp.float32), p, optax.sgd, loss, sample(key), objective
    )

  def seed_values(p, key, sample, objective):
    draw_keys = jax.random.split(key, draws)
    per = jax.vmap(jax.vmap(value, (None, 0, None, None, None)), (None, None, 0, None, None))
    return per(p, draw_keys, jnp.asarray(candidates, jnp.float32), sample, objective).mean(axis=1)

  values = np.asarray(
    jax.jit(jax.vmap(seed_values, (0, 0, None, None)))(params, keys, sample, objective), np.float64
  )
  values = np.where(np.isfinite(values), values, np.inf)
  return np.asarray(candidates)[np.argmin(values, axis=1)], values


LRS_OPT_FLOOR = 1e-6
"""Warm starts are clipped to at least this rate (``log`` needs ``eta > 0``)."""


def run_lrs_opt(
  arrays: train_lib.Arrays,
  inputs: train_lib.RunInputs,
  preset: Preset,
  progress: Optional[Progress] = None,
  results: Optional[dict] = None,
) -> LrsOptOutcome:
  """LRS-OPT (:func:`marthe_optax.exact.lrs_opt`) for the first seeds.

  From ``preset.lrs_opt_start`` (``eta_0 * ones(T)``; the best constant of
  :func:`best_constant`; or each seed's schedule of the best online method
  in ``results``, see :func:`best_online`) and the seed's ``w_0``: at most ``lrs_opt_steps`` outer steps of Adam on ``log(eta)``
  (step size ``preset.lrs_opt_lr``, cosine decay to a tenth), on the exact
  reverse-mode hypergradient of the whole-validation-set loss at ``w_T``,
  averaged over ``lrs_opt_draws`` fresh random minibatch progressions per
  outer step, stopping on ``lrs_opt_tol``. The seeds run together: one
  ``jax.vmap`` of :func:`~marthe_optax.exact.lrs_opt`, compiled once.
  """
  config = preset.config
  seeds = np.arange(preset.lrs_opt_seeds, dtype=np.int32)
  loss = lambda p, b: models.cross_entropy(models.mlp_apply, p, b[0], b[1])
  objective = jax.tree_util.Partial(
    lambda x, y, p: models.cross_entropy(models.mlp_apply, p, x, y), arrays.x_val, arrays.y_val
  )
  sample = exact.random_minibatches(
    (arrays.x_train, arrays.y_train), config.batch_size, config.steps
  )
  params = jax.tree.map(lambda a: a[seeds], inputs.params)
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 1))(seeds)
  candidates = constant_values = None
  if preset.lrs_opt_start == "constant":
    start = "constant eta_0"
    starts = np.full((len(seeds), config.steps), config.learning_rate)
  elif preset.lrs_opt_start == "best constant":
    candidates = config.learning_rate * np.logspace(0, 2.5, 6)
    best, constant_values = best_constant(
      params,
      jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys),
      sample,
      objective,
      config.steps,
      candidates,
      2 * preset.lrs_opt_draws,
    )
    start = (
      "best constant (per seed: "
      + ", ".join(report.format_value(float(f"{b:.2g}")) for b in best)
      + ")"
    )
    starts = best[:, None] * np.ones(config.steps)
  elif preset.lrs_opt_start == "best online":
    if not results:
      raise ValueError("lrs_opt_start='best online' needs the online results.")
    name, i, _ = best_online(results, seeds)
    g = results[name]
    start = f"{name} {g.grid_kind}={report.format_value(g.grid[i])}"
    starts = np.asarray(g.runs.trace.learning_rate[i, seeds], np.float64)
  else:
    raise ValueError(
      "lrs_opt_start must be 'constant', 'best constant' or 'best online'; "
      f"got {preset.lrs_opt_start!r}."
    )
  starts = np.maximum(starts, LRS_OPT_FLOOR).astype(np.float32)
  progress = progress or Progress(0, enabled=False)
  steps = preset.lrs_opt_steps
  outer = optax.adam(optax.cosine_decay_schedule(preset.lrs_opt_lr, steps, alpha=0.1))

  def callback(i, value, schedule):
    del i, schedule
    progress.update(1, E=f"{float(value):.3f}")

  def one(schedule, params, key, sample, objective):
    return exact.lrs_opt(
      schedule,
      params,
      optax.sgd,
      loss,
      sample,
      objective,
      num_steps=steps,
      outer=outer,
      space="log",
      key=key,
      tol=preset.lrs_opt_tol,
      window=preset.lrs_opt_window,
      draws=preset.lrs_opt_draws,
      record_every=max(1, steps // 20),
      checkpoint=preset.lrs_opt_checkpoint,
      callback=callback if progress.enabled else None,
    )

  program = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)))
  args = (starts, params, keys, sample, objective)
  t = time.perf_counter()
  compiled = program.lower(*args).compile()
  compile_seconds = time.perf_counter() - t
  t = time.perf_counter()
  res = jax.tree.map(np.asarray, compiled(*args))
  run_seconds = time.perf_counter() - t
  taken = res.steps_taken.astype(int)
  progress.update(int(np.sum(steps - taken)))  # seeds that stopped early
  evaluated = train_lib.run_schedule(
    arrays,
    config,
    inputs,
    jnp.asarray(np.concatenate([seeds, seeds])),
    jnp.asarray(np.concatenate([res.schedule, starts])),
  )
  evaluated = jax.tree.map(np.asarray, evaluated)
  runs = jax.tree.map(lambda a: a[None, : len(seeds)], evaluated)
  start_runs = jax.tree.map(lambda a: a[None, len(seeds) :], evaluated)
  return LrsOptOutcome(
    seeds=seeds,
    schedules=res.schedule,
    objectives=res.objectives,
    history=res.schedules,
    history_steps=np.asarray(res.schedule_steps)[0],
    runs=runs,
    seconds_per_outer_step=run_seconds / max(1, int(taken.max())),
    relative_improvement=res.relative_improvement,
    steps_taken=taken,
    converged=res.converged,
    final_slope=_final_slope(res.relative_improvement),
    start=start,
    start_schedules=starts,
    start_runs=start_runs,
    compile_seconds=compile_seconds,
    nonfinite_count=res.nonfinite_count,
    constant_candidates=candidates,
    constant_values=constant_values,
  )
