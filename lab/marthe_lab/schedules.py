# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Section 5 of the paper: optimized (LRS-OPT) against online schedules.

The protocol, the same for every method: an MLP trained by SGD on minibatches
of 100 for ``T`` steps from ``eta_0 = 0.01``; ``E`` is the validation
cross-entropy (``grad E`` on a fresh validation minibatch of 100 at each step
for the online methods; the whole validation set at ``w_T`` for LRS-OPT).
Seed ``s`` fixes ``w_0`` and the minibatch progression, identical for every
online method; LRS-OPT keeps ``w_0`` and draws fresh minibatches at every
outer step (footnote 7), and its final schedule is then evaluated on the
seed's progression, like the online methods.

Methods (:data:`METHODS`), each over a log grid:

* ``constant``: SGD at ``eta_0``;
* ``HD`` (``mu = 0``) and ``RTHO`` (``mu = 1``) over ``beta``;
* ``MARTHE mu=0.9`` and ``MARTHE mu=0.99``: fixed discount, over ``beta``;
* ``MARTHE h_mu``: adaptive ``mu`` (appendix A), fixed ``beta``;
* ``MARTHE``: adaptive ``mu`` and ``beta`` (``beta_0 = 0``) over the step
  size ``kappa``;
* ``MARTHE (selected kappa)``: ``kappa`` picked per seed by
  :func:`marthe_optax.selection.select_hyper_lr_step` (the largest of the
  decimated grid ``1, 0.1, ..., 1e-9`` whose training loss does not
  diverge), applied to the ``MARTHE`` grid's runs (:func:`select_kappa`);
* ``LRS-OPT``: :func:`marthe_optax.exact.lrs_opt`, projected descent on the
  whole schedule with exact reverse-mode hypergradients.

Every (method, grid value, seed) run is one row of a ``jax.vmap`` under one
``jax.jit`` (one compilation for the fixed-``mu`` methods, one for the
adaptive ones; the hyperparameters are traced).
"""

import dataclasses
import functools
import os
import time
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import exact
from marthe_optax import selection
from marthe_lab import data as data_lib
from marthe_lab import models
from marthe_lab import report
from marthe_lab import train as train_lib


class Method(NamedTuple):
  """An online method: how a grid value becomes ``(beta, kappa, mu)``.

  Attributes:
    name: the label in tables and plots.
    grid: ``'beta'`` (fixed hyper-learning rate), ``'kappa'`` (its step size,
      ``beta_0 = 0``) or ``'none'`` (constant learning rate).
    adaptive_mu: adapt ``mu`` online (appendix A).
    mu: the fixed discount otherwise.
  """

  name: str
  grid: str
  adaptive_mu: bool
  mu: float = 0.0

  def hyper(self, value: float) -> train_lib.Hyper:
    beta = value if self.grid == "beta" else 0.0
    kappa = value if self.grid == "kappa" else 0.0
    return train_lib.Hyper(beta, kappa, self.mu)


METHODS = (
    Method("constant", "none", False, 0.0),
    Method("HD", "beta", False, 0.0),
    Method("RTHO", "beta", False, 1.0),
    Method("MARTHE mu=0.9", "beta", False, 0.9),
    Method("MARTHE mu=0.99", "beta", False, 0.99),
    Method("MARTHE h_mu", "beta", True),
    Method("MARTHE", "kappa", True),
)
SELECTED = "MARTHE (selected kappa)"
KNOB_FREE = "MARTHE knob-free"
"""``mo.marthe(optax.sgd, eta_0)`` in its knob-free mode: one setting, no
grid (run when the installed ``marthe`` has that mode)."""
LRS_OPT = "LRS-OPT"


@dataclasses.dataclass(frozen=True)
class Preset:
  """Sizes of the experiment.

  Attributes:
    name: ``'tiny'``, ``'fast'``, ``'medium'`` or ``'paper'``.
    datasets: dataset names (see :func:`marthe_lab.data.load`).
    config: the inner problem.
    seeds: seeds of every online method.
    beta_grid: hyper-learning rates (HD, RTHO, fixed ``mu``, ``h_mu``).
    kappa_grid: step sizes of the hyper-learning rate (MARTHE).
    lrs_opt_seeds: seeds of LRS-OPT (the first ones of ``seeds``), run
      together in one compiled program (``jax.vmap`` of
      :func:`marthe_optax.exact.lrs_opt`).
    lrs_opt_steps: the most outer iterations of LRS-OPT.
    lrs_opt_lr: initial step size of LRS-OPT's outer Adam on ``log(eta)``
      (cosine decay to a tenth of it over ``lrs_opt_steps``).
    selection_steps: training steps that the kappa selection watches for
      divergence (``T``, the whole run, in every preset: on MNIST-1D a
      128-step prefix let through step sizes that diverged later).
      The ``kappa`` grid doubles as the selection's candidates.
    chunk: runs per compiled call (bounds memory; ``None``: all at once).
    note: what differs from the paper.
    lrs_opt_tol: LRS-OPT stops once ``E`` improves by less than this
      fraction per outer step (windowed, see
      :func:`marthe_optax.exact.lrs_opt`); ``None``: all ``lrs_opt_steps``.
    lrs_opt_window: the window of that criterion, in outer steps.
    lrs_opt_draws: minibatch progressions averaged per outer step.
    lrs_opt_start: ``'constant'`` (``eta_0 * ones(T)``, the paper's),
      ``'best constant'`` (per seed, the constant among ``eta_0 * 10^(k/2)``,
      ``k = 0..5``, with the lowest mean ``E`` over ``2 * lrs_opt_draws``
      fresh minibatch progressions: see
      :func:`best_constant`) or ``'best online'`` (each seed's schedule of
      the online method and grid value with the lowest mean final validation
      loss).
    lrs_opt_checkpoint: rematerialise each step in LRS-OPT's backward pass
      (saves memory; on the small nets it only costs time).
  """

  name: str
  datasets: tuple
  config: train_lib.TrainConfig
  seeds: int
  beta_grid: tuple
  kappa_grid: tuple
  lrs_opt_seeds: int
  lrs_opt_steps: int
  lrs_opt_lr: float
  selection_steps: int
  chunk: Optional[int]
  note: str
  lrs_opt_tol: Optional[float] = None
  lrs_opt_window: int = 10
  lrs_opt_draws: int = 1
  lrs_opt_start: str = "constant"
  lrs_opt_checkpoint: bool = True


def _decades(lo: int, hi: int, per_decade: int = 1) -> tuple:
  n = (hi - lo) * per_decade + 1
  return tuple(float(f"{v:.3g}") for v in np.logspace(lo, hi, n))


PRESETS = {
    "tiny": Preset(
        name="tiny",
        datasets=("digits",),
        config=train_lib.TrainConfig(steps=24, hidden=(16, 16, 16)),
        seeds=2,
        beta_grid=(1e-3, 1e-1),
        kappa_grid=(1e-5, 1e-1),
        lrs_opt_seeds=2,
        lrs_opt_steps=4,
        lrs_opt_lr=0.05,
        selection_steps=24,
        chunk=None,
        note="smoke test only: T=24, MLP 3x16, 2 seeds, 2 grid values, "
        "LRS-OPT 2 seeds x 4 outer steps",
        lrs_opt_window=1,
        lrs_opt_draws=2,
        lrs_opt_start="best constant",
        lrs_opt_checkpoint=False,
    ),
    "fast": Preset(
        name="fast",
        datasets=("digits", "mnist1d"),
        config=train_lib.TrainConfig(steps=512, hidden=(64, 64, 64)),
        seeds=3,
        beta_grid=_decades(-6, 0),
        kappa_grid=_decades(-9, 0),
        lrs_opt_seeds=3,
        lrs_opt_steps=40,
        lrs_opt_lr=0.05,
        selection_steps=512,
        chunk=64,
        note="T=512 and batch 100 as the paper, but MLP 3x64 (paper 3x500), "
        "3 seeds (paper 20), decade grids; LRS-OPT on all 3 seeds, at most 40 "
        "outer steps of Adam on log(eta) from the best constant, 2 "
        "minibatch draws per step, stopping at 0.1 % improvement per step "
        "(paper: 4 seeds x 5000 projected-gradient steps from eta_0)",
        lrs_opt_tol=1e-3,
        lrs_opt_window=10,
        lrs_opt_draws=2,
        lrs_opt_start="best constant",
        lrs_opt_checkpoint=False,
    ),
    "medium": Preset(
        name="medium",
        datasets=("digits", "mnist1d"),
        config=train_lib.TrainConfig(steps=512, hidden=(500, 500, 500)),
        seeds=5,
        beta_grid=(1e-6, 1e-4, 1e-2),
        kappa_grid=(1e-8, 1e-5, 1e-2),
        lrs_opt_seeds=2,
        lrs_opt_steps=20,
        lrs_opt_lr=0.05,
        selection_steps=512,
        chunk=48,
        note="figure 2 at the paper's network size: T=512, batch 100, MLP "
        "3x500, eta_0=0.01, but 5 seeds (paper 20) and coarse grids (beta "
        "every second decade, kappa every third); LRS-OPT on the first 2 "
        "seeds, at most 20 outer steps of Adam on log(eta) from the best "
        "constant, stopping at 0.1 % improvement per step (paper: 4 seeds x "
        "5000 projected-gradient steps from eta_0)",
        lrs_opt_tol=1e-3,
        lrs_opt_window=5,
        lrs_opt_draws=1,
        lrs_opt_start="best constant",
        lrs_opt_checkpoint=True,
    ),
    "paper": Preset(
        name="paper",
        datasets=("digits", "mnist1d"),
        config=train_lib.TrainConfig(steps=512, hidden=(500, 500, 500)),
        seeds=20,
        beta_grid=_decades(-7, 0, 2),
        kappa_grid=_decades(-9, 0, 2),
        lrs_opt_seeds=4,
        lrs_opt_steps=5000,
        lrs_opt_lr=0.05,
        selection_steps=512,
        chunk=40,
        note="the paper's sizes: T=512, batch 100, MLP 3x500, 20 seeds, "
        "half-decade grids, LRS-OPT 4 seeds x at most 5000 outer steps (Adam "
        "on log(eta) from eta_0 as the paper, stopping at 0.01 % improvement "
        "per step)",
        lrs_opt_tol=1e-4,
        lrs_opt_window=50,
        lrs_opt_draws=1,
        lrs_opt_start="constant",
        lrs_opt_checkpoint=True,
    ),
}


class GridResult(NamedTuple):
  """One method over its grid and the seeds.

  Attributes:
    method: the method's name.
    grid_kind: ``'beta'``, ``'kappa'``, ``'none'`` or ``'selected'``.
    grid: ``[G]`` grid values (``[1]`` zeros for ``'none'``; for
      ``'selected'``, ``[1]`` NaN and the per-seed values in ``selected``).
    runs: a :class:`~marthe_lab.train.RunResult` of ``[G, S]``
      arrays.
    selected: per-seed selected ``kappa`` (``'selected'`` only).
  """

  method: str
  grid_kind: str
  grid: np.ndarray
  runs: train_lib.RunResult
  selected: Optional[np.ndarray] = None

  def best_index(self) -> int:
    """The grid index with the best mean final validation accuracy."""
    return int(np.argmax(np.asarray(self.runs.val_accuracy).mean(axis=1)))


class LrsOptOutcome(NamedTuple):
  """LRS-OPT for a few seeds.

  Attributes:
    seeds: ``[S']`` seeds.
    schedules: ``[S', T]`` the optimized schedules.
    objectives: ``[S', outer_steps]`` ``E(w_T)`` along the outer iterations
      (the convergence curve; NaN after a seed stopped).
    history: ``[S', R, T]`` schedules recorded along the outer iterations.
    history_steps: ``[R]`` the outer steps of ``history``.
    runs: the schedules evaluated on each seed's minibatch progression, a
      :class:`~marthe_lab.train.RunResult` of ``[1, S']``
      arrays.
    seconds_per_outer_step: the compiled program's run time (compilation
      excluded) over the outer steps of the longest-running seed: the seeds
      run together, so this is the cost of one outer step of all of them.
    relative_improvement: ``[S', outer_steps]`` the windowed relative
      improvement of ``E`` per outer step (NaN where undefined).
    steps_taken: ``[S']`` outer steps run.
    converged: ``[S']`` whether the tolerance stopped the seed.
    final_slope: ``[S']`` the last finite relative improvement per outer
      step: the convergence curve's final slope.
    start: what the schedules started from (``'constant eta_0'`` or
      ``'<method> <grid value>'``).
    start_schedules: ``[S', T]`` the initial schedules.
    start_runs: the initial schedules evaluated like ``runs``.
    compile_seconds: compilation of the vmapped program.
    nonfinite_count: ``[S']`` outer steps skipped for a non-finite
      objective or hypergradient.
    constant_candidates: ``[C]`` the constants a ``'best constant'`` start
      compared (``None`` otherwise).
    constant_values: ``[S', C]`` their mean ``E`` per seed.
  """

  seeds: np.ndarray
  schedules: np.ndarray
  objectives: np.ndarray
  history: np.ndarray
  history_steps: np.ndarray
  runs: train_lib.RunResult
  seconds_per_outer_step: float
  relative_improvement: np.ndarray
  steps_taken: np.ndarray
  converged: np.ndarray
  final_slope: np.ndarray
  start: str
  start_schedules: np.ndarray
  start_runs: train_lib.RunResult
  compile_seconds: float
  nonfinite_count: np.ndarray
  constant_candidates: Optional[np.ndarray] = None
  constant_values: Optional[np.ndarray] = None


class DatasetResult(NamedTuple):
  """Everything measured on one dataset."""

  dataset: str
  description: str
  results: dict  # name -> GridResult
  lrs_opt: LrsOptOutcome
  selections: list  # per seed: selection.HyperLrSelection (NumPy)
  seconds: dict


class Progress:
  """A tqdm bar (a no-op when ``enabled`` is False)."""

  def __init__(self, total: int, enabled: bool = True, desc: str = "",
               unit: str = "run"):
    self.bar = None
    if enabled:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, desc=desc, unit=unit, smoothing=0.0,
                      mininterval=1.0)

  @property
  def enabled(self) -> bool:
    return self.bar is not None

  def update(self, n: int = 1, **postfix) -> None:
    if self.bar is not None:
      if postfix:
        self.bar.set_postfix(refresh=False, **postfix)
      self.bar.update(n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _grid_of(method: Method, preset: Preset) -> np.ndarray:
  if method.grid == "beta":
    return np.asarray(preset.beta_grid, np.float64)
  if method.grid == "kappa":
    return np.asarray(preset.kappa_grid, np.float64)
  return np.zeros(1)


def _run_family(
    arrays: train_lib.Arrays,
    inputs: train_lib.RunInputs,
    preset: Preset,
    methods: Sequence[Method],
    adaptive_mu: bool,
    progress: Progress,
) -> dict:
  """All (method, grid value, seed) runs of one family in vmapped chunks."""
  rows = [(m, v) for m in methods for v in _grid_of(m, preset)]
  if not rows:
    return {}
  hypers = [m.hyper(float(v)) for m, v in rows for _ in range(preset.seeds)]
  seeds = np.tile(np.arange(preset.seeds, dtype=np.int32), len(rows))
  hyper = train_lib.Hyper(*(np.array([h[k] for h in hypers], np.float32)
                            for k in range(3)))
  fn = functools.partial(
      train_lib.run_online, arrays, preset.config, inputs,
      adaptive_mu=adaptive_mu,
  )
  out = train_lib.run_in_chunks(fn, (seeds, hyper), preset.chunk,
                                callback=progress.update)
  results, start = {}, 0
  for m in methods:
    grid = _grid_of(m, preset)
    n = len(grid) * preset.seeds
    runs = jax.tree.map(
        lambda a: a[start:start + n].reshape((len(grid), preset.seeds) + a.shape[1:]),
        out,
    )
    results[m.name] = GridResult(m.name, m.grid, grid, runs)
    start += n
  return results


def _grid_curve(curves: jax.Array, log_grid: jax.Array, value: jax.Array):
  """The curve of the grid value nearest (in log scale) to ``value``."""
  return curves[jnp.argmin(jnp.abs(log_grid - jnp.log(value)))]


def select_kappa(
    marthe: GridResult, seed: int, steps: int
) -> tuple[selection.HyperLrSelection, int]:
  """The paper's selection of MARTHE's ``kappa`` for one seed.

  :func:`marthe_optax.selection.select_hyper_lr_step` over the ``kappa``
  grid, largest first (the fast and paper grids are exactly its default
  decimated candidates ``1, 0.1, ..., 1e-9``), watching the first ``steps``
  minibatch training losses for divergence (a loss above twice the first,
  or non-finite). The runs are the ``MARTHE`` grid's, already trained with
  this seed's ``w_0`` and minibatches, so the selection costs no training:
  its ``run`` returns the training-loss curve of the grid run at the
  candidate.

  Args:
    marthe: the ``MARTHE`` method over its ``kappa`` grid.
    seed: the seed (column of the grid results).
    steps: how many training steps the selection watches.

  Returns:
    The selection, and the grid index of the selected ``kappa``.
  """
  grid = np.asarray(marthe.grid, np.float64)
  curves = jnp.asarray(marthe.runs.trace.train_loss[:, seed, :steps])
  run = jax.tree_util.Partial(
      _grid_curve, curves, jnp.log(jnp.asarray(grid, jnp.float32)))
  chosen = selection.select_hyper_lr_step(run, candidates=np.sort(grid)[::-1])
  return chosen, int(np.argmin(np.abs(np.log(grid) - np.log(chosen.value))))


def _final_slope(relative: np.ndarray) -> np.ndarray:
  """The last finite entry of each row (NaN for a row without one)."""
  out = np.full(relative.shape[0], np.nan)
  for j, row in enumerate(relative):
    finite = np.flatnonzero(np.isfinite(row))
    if finite.size:
      out[j] = row[finite[-1]]
  return out


def best_online(
    results: dict, seeds: Optional[np.ndarray] = None
) -> tuple[str, int, float]:
  """The online (method, grid index) with the lowest mean final validation
  loss over ``seeds`` (default: all), skipping grid values where a seed
  diverged. Returns ``(method, grid index, mean validation loss)``."""
  best = (None, -1, np.inf)
  for name, g in results.items():
    loss = np.asarray(g.runs.val_loss, np.float64)
    diverged = np.asarray(g.runs.diverged)
    if seeds is not None:
      loss, diverged = loss[:, seeds], diverged[:, seeds]
    for i in range(loss.shape[0]):
      value = loss[i].mean()
      if not diverged[i].any() and np.isfinite(value) and value < best[2]:
        best = (name, i, float(value))
  return best


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
        jnp.full(steps, eta, jnp.float32), p, optax.sgd, loss, sample(key),
        objective)

  def seed_values(p, key, sample, objective):
    draw_keys = jax.random.split(key, draws)
    per = jax.vmap(jax.vmap(value, (None, 0, None, None, None)),
                   (None, None, 0, None, None))
    return per(p, draw_keys, jnp.asarray(candidates, jnp.float32), sample,
               objective).mean(axis=1)

  values = np.asarray(jax.jit(jax.vmap(seed_values, (0, 0, None, None)))(
      params, keys, sample, objective), np.float64)
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
        params, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), sample,
        objective, config.steps, candidates, 2 * preset.lrs_opt_draws)
    start = "best constant (per seed: " + ", ".join(
        report.format_value(float(f"{b:.2g}")) for b in best) + ")"
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
        f"got {preset.lrs_opt_start!r}.")
  starts = np.maximum(starts, LRS_OPT_FLOOR).astype(np.float32)
  progress = progress or Progress(0, enabled=False)
  steps = preset.lrs_opt_steps
  outer = optax.adam(optax.cosine_decay_schedule(
      preset.lrs_opt_lr, steps, alpha=0.1))

  def callback(i, value, schedule):
    del i, schedule
    progress.update(1, E=f"{float(value):.3f}")

  def one(schedule, params, key, sample, objective):
    return exact.lrs_opt(
        schedule, params, optax.sgd, loss, sample, objective,
        num_steps=steps, outer=outer, space="log", key=key,
        tol=preset.lrs_opt_tol, window=preset.lrs_opt_window,
        draws=preset.lrs_opt_draws, record_every=max(1, steps // 20),
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
      arrays, config, inputs, jnp.asarray(np.concatenate([seeds, seeds])),
      jnp.asarray(np.concatenate([res.schedule, starts])),
  )
  evaluated = jax.tree.map(np.asarray, evaluated)
  runs = jax.tree.map(lambda a: a[None, : len(seeds)], evaluated)
  start_runs = jax.tree.map(lambda a: a[None, len(seeds):], evaluated)
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


def total_tasks(preset: Preset) -> int:
  """Units of the progress bar per dataset: online training runs, one per
  seed's kappa selection, and LRS-OPT outer steps."""
  grid = sum(len(_grid_of(m, preset)) for m in METHODS)
  grid += train_lib.knob_free_available()
  return (grid + 1) * preset.seeds + preset.lrs_opt_seeds * preset.lrs_opt_steps


def run_dataset(
    dataset: data_lib.Dataset,
    preset: Preset,
    progress: Optional[Progress] = None,
) -> DatasetResult:
  """The whole comparison on one dataset."""
  progress = progress or Progress(0, enabled=False)
  arrays = train_lib.Arrays.from_dataset(dataset)
  inputs = train_lib.make_inputs(
      jnp.arange(preset.seeds), arrays, preset.config, dataset.num_classes
  )
  seconds, results = {}, {}
  t = time.perf_counter()
  fixed = [m for m in METHODS if not m.adaptive_mu]
  adaptive = [m for m in METHODS if m.adaptive_mu]
  results.update(_run_family(arrays, inputs, preset, fixed, False, progress))
  seconds["fixed_mu_methods"] = time.perf_counter() - t
  t = time.perf_counter()
  results.update(_run_family(arrays, inputs, preset, adaptive, True, progress))
  seconds["adaptive_mu_methods"] = time.perf_counter() - t
  t = time.perf_counter()
  marthe = results["MARTHE"]
  steps = min(preset.selection_steps, preset.config.steps)
  selections, rows = [], []
  for seed in range(preset.seeds):
    chosen, i = select_kappa(marthe, seed, steps)
    selections.append(jax.tree.map(np.asarray, chosen))
    rows.append(i)
    progress.update(1)
  picked = jax.tree.map(
      lambda a: a[np.array(rows), np.arange(preset.seeds)][None], marthe.runs)
  results[SELECTED] = GridResult(
      SELECTED, "selected", np.full(1, np.nan), picked,
      selected=marthe.grid[np.array(rows)],
  )
  seconds["kappa_selection"] = time.perf_counter() - t
  if train_lib.knob_free_available():
    t = time.perf_counter()
    runs = train_lib.run_knob_free(
        arrays, preset.config, inputs, jnp.arange(preset.seeds))
    results[KNOB_FREE] = GridResult(
        KNOB_FREE, "none", np.zeros(1), jax.tree.map(lambda a: np.asarray(a)[None], runs))
    progress.update(preset.seeds)
    seconds["knob_free"] = time.perf_counter() - t
  t = time.perf_counter()
  lrs = run_lrs_opt(arrays, inputs, preset, progress, results)
  seconds["lrs_opt"] = time.perf_counter() - t
  return DatasetResult(
      dataset.name, dataset.describe(), results, lrs, selections, seconds
  )


def estimate(
    preset: Preset,
    dataset: data_lib.Dataset,
    probe_steps: int = 16,
    log: Callable[[str], None] = print,
) -> dict:
  """Extrapolates the preset's run time on one dataset from short probes.

  Times (after compilation) one chunk of ``preset.chunk`` vmapped runs of
  each family for ``probe_steps`` steps; one outer step of LRS-OPT as
  :func:`run_lrs_opt` runs it (the exact reverse-mode hypergradient, vmapped
  over the ``lrs_opt_seeds`` seeds and ``lrs_opt_draws`` draws, with the
  preset's checkpointing) over ``probe_steps`` steps; and the forward runs of
  a ``'best constant'`` start. Scales linearly to ``T`` steps and to the
  preset's numbers of runs, and gives LRS-OPT's time for ``lrs_opt_steps``
  outer steps (the most; with ``lrs_opt_tol`` it may stop earlier, after
  ``2 * lrs_opt_window`` at the least). Compilation time is not included.

  The probes' CPU time is measured too: on a machine shared with other jobs
  the wall-time extrapolation overstates the cost, and the CPU-hours (the
  wall-time total times the cores the probes used on average) are the
  figure to divide by the cores of an idle machine.

  Returns:
    Seconds per part and in total, the measured per-run-step costs, the
    probes' CPU time and cores used, and the total in CPU-seconds.
  """
  arrays = train_lib.Arrays.from_dataset(dataset)
  config = preset.config._replace(steps=probe_steps)
  lrs_seeds = preset.lrs_opt_seeds
  inputs = train_lib.make_inputs(
      jnp.arange(lrs_seeds), arrays, config, dataset.num_classes)
  n = preset.chunk or 8
  seeds = jnp.zeros(n, jnp.int32)
  hyper = train_lib.Hyper(jnp.full(n, 1e-4), jnp.zeros(n), jnp.full(n, 0.9))

  cpu = []  # the probes' CPU time, in the order of the wall times

  def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    cpu.append(time.process_time() - c)
    return time.perf_counter() - t

  per = {}
  for adaptive in (False, True):
    t = timed(lambda: train_lib.run_online(arrays, config, inputs, seeds, hyper, adaptive))
    per["adaptive" if adaptive else "fixed"] = t / (n * probe_steps)
  sample = exact.random_minibatches(
      (arrays.x_train, arrays.y_train), config.batch_size, probe_steps)
  objective = jax.tree_util.Partial(
      lambda x, y, p: models.cross_entropy(models.mlp_apply, p, x, y), arrays.x_val, arrays.y_val)
  loss = lambda q, bb: models.cross_entropy(models.mlp_apply, q, bb[0], bb[1])
  draws = preset.lrs_opt_draws

  def outer_step(p, key, sample, objective):
    keys = jax.random.split(key, draws)
    return jax.vmap(lambda k: exact.schedule_hypergradient(
        jnp.full(probe_steps, 0.01), p, optax.sgd, loss, sample(k), objective,
        checkpoint=preset.lrs_opt_checkpoint))(keys)

  keys = jax.random.split(jax.random.key(0), lrs_seeds)
  t = timed(jax.jit(jax.vmap(outer_step, (0, 0, None, None))),
            inputs.params, keys, sample, objective)
  per["lrs_opt_outer_step"] = t / probe_steps
  candidates = 6 if preset.lrs_opt_start == "best constant" else 0
  forward_runs = lrs_seeds * candidates * 2 * draws
  if forward_runs:
    runs = jax.jit(jax.vmap(
        lambda p, k, sample, objective: exact.schedule_objective(
            jnp.full(probe_steps, 0.01), p, optax.sgd, loss, sample(k),
            objective), (None, 0, None, None)))
    t = timed(runs, jax.tree.map(lambda a: a[0], inputs.params),
              jax.random.split(jax.random.key(1), n), sample, objective)
    per["forward_run"] = t / (n * probe_steps)
  steps = preset.config.steps
  fixed_runs = sum(len(_grid_of(m, preset)) for m in METHODS if not m.adaptive_mu)
  adaptive_runs = sum(len(_grid_of(m, preset)) for m in METHODS if m.adaptive_mu)
  outer = steps * per["lrs_opt_outer_step"]
  parts = {
      "fixed_mu_methods": fixed_runs * preset.seeds * steps * per["fixed"],
      "adaptive_mu_methods": adaptive_runs * preset.seeds * steps * per["adaptive"],
      "lrs_opt_start": forward_runs * steps * per.get("forward_run", 0.0),
      "lrs_opt": preset.lrs_opt_steps * outer,
  }
  parts["total"] = sum(parts.values())
  # CPU time over wall time of the probes: about the cores used when the
  # machine is idle; well below it when other jobs share the cores, and then
  # the wall-time extrapolation overstates an idle machine's time.
  cpu_per_wall = sum(cpu) / (sum(per[k] * probe_steps * (
      n if k in ("fixed", "adaptive", "forward_run") else 1) for k in per))
  earliest = (2 * preset.lrs_opt_window * outer
              if preset.lrs_opt_tol is not None else parts["lrs_opt"])
  log(
      f"estimate for preset {preset.name} on {dataset.describe()} "
      f"({jax.default_backend()}, from {probe_steps}-step probes, chunks of {n}, "
      "compilation excluded): "
      + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in parts.items())
      + f" (LRS-OPT: {preset.lrs_opt_steps} outer steps at most, "
      f"{outer:.1f} s each for its {lrs_seeds} seeds x {draws} draws; "
      f"{earliest / 3600:.2f} h if the tolerance stops it at the earliest); "
      "seconds per run-step: "
      + ", ".join(f"{k} {v:.2e}" for k, v in per.items())
      + f"; the probes used {cpu_per_wall:.2f} CPU cores on average "
      f"(CPU time {sum(cpu):.1f} s over their wall time; "
      f"{os.cpu_count()} cores here), so the total is "
      f"{parts['total'] * cpu_per_wall / 3600:.2f} CPU-hours"
  )
  return {"seconds": parts, "seconds_per_run_step": per,
          "probe_cpu_seconds": sum(cpu), "probe_cpu_per_wall": cpu_per_wall,
          "cpu_seconds": parts["total"] * cpu_per_wall,
          "lrs_opt_seconds_per_outer_step": outer,
          "lrs_opt_earliest_seconds": earliest}


# ----------------------------------------------------------------------------
# Reporting.


def summary_rows(result: DatasetResult) -> list:
  """One row per method at its best grid value (by mean validation accuracy)."""
  rows = []
  for name, g in result.results.items():
    i = g.best_index()
    value = (
        "per seed " + ", ".join(report.format_value(v) for v in g.selected)
        if g.grid_kind == "selected"
        else "-" if g.grid_kind == "none"
        else f"{g.grid_kind}={report.format_value(g.grid[i])}"
    )
    runs = jax.tree.map(lambda a: a[i], g.runs)
    rows.append(_row(result.dataset, name, value, runs))
  lrs = jax.tree.map(lambda a: a[0], result.lrs_opt.runs)
  rows.append(_row(result.dataset, LRS_OPT, _lrs_opt_label(result.lrs_opt), lrs))
  return rows


def _lrs_opt_label(lrs: LrsOptOutcome) -> str:
  taken = lrs.steps_taken
  steps = (f"{int(taken.min())}" if taken.min() == taken.max()
           else f"{int(taken.min())}-{int(taken.max())}")
  return f"{steps} outer steps from {lrs.start}"


def _row(dataset: str, name: str, value: str, runs: train_lib.RunResult) -> list:
  return [
      dataset, name, value,
      report.mean_std(runs.val_accuracy),
      report.mean_std(runs.test_accuracy),
      _loss(runs.val_loss),
      f"{int(np.sum(runs.diverged))}/{np.size(runs.diverged)}",
  ]


def _loss(values: np.ndarray) -> str:
  """``'mean ± std'`` of losses; ``'nan'`` or ``'> 1e3'`` when diverged."""
  values = np.asarray(values, np.float64)
  if not np.all(np.isfinite(values)):
    return "nan"
  if values.mean() > 1e3:
    return "> 1e3"
  return report.mean_std(values, scale=1.0, digits=3)


TRACKING_FLOOR = 1e-8
"""Rates below this (zero, or negative) count as this in the log-scale
tracking metrics."""


def tracking(result: DatasetResult) -> dict:
  """How closely each online schedule tracks LRS-OPT's, seed by seed.

  For each method at its best grid value (as in the summary table) and each
  LRS-OPT seed: the mean over the steps of ``|log10(eta_t / eta_t^LRS-OPT)|``
  (0: identical; 1: a factor 10 apart on average) and the Pearson
  correlation over the steps of ``log10 eta_t`` with ``log10
  eta_t^LRS-OPT`` (the shape, whatever the scale; NaN for a constant
  schedule: one whose log10 varies by less than 1e-6). Rates are floored at :data:`TRACKING_FLOOR`.

  Returns:
    ``{method: {'mean_abs_log10': [S'], 'correlation': [S']}}``.
  """
  lrs = result.lrs_opt
  ref = np.log10(np.maximum(np.asarray(lrs.schedules, np.float64), TRACKING_FLOOR))
  out = {}
  for name, g in result.results.items():
    i = g.best_index()
    eta = np.asarray(g.runs.trace.learning_rate[i][lrs.seeds], np.float64)
    log_eta = np.log10(np.maximum(np.nan_to_num(eta, nan=TRACKING_FLOOR),
                                  TRACKING_FLOOR))
    dist = np.mean(np.abs(log_eta - ref), axis=1)
    corr = np.full(len(lrs.seeds), np.nan)
    for j in range(len(lrs.seeds)):
      if np.ptp(log_eta[j]) > 1e-6 and np.ptp(ref[j]) > 1e-6:  # not constant
        corr[j] = np.corrcoef(log_eta[j], ref[j])[0, 1]
    out[name] = {"mean_abs_log10": dist, "correlation": corr}
  return out


TRACKING_HEADER = ["data", "method", "mean |log10(eta/eta_LRS-OPT)|",
                   "corr(log eta, log eta_LRS-OPT)"]


def tracking_rows(result: DatasetResult) -> list:
  """One row per method: the :func:`tracking` metrics, mean ± std over the
  LRS-OPT seeds."""
  rows = []
  for name, m in tracking(result).items():
    corr = m["correlation"]
    rows.append([
        result.dataset, name,
        report.mean_std(m["mean_abs_log10"], scale=1.0, digits=2),
        "-" if np.all(np.isnan(corr)) else report.mean_std(
            corr[np.isfinite(corr)], scale=1.0, digits=2),
    ])
  return rows


def lrs_opt_summary(result: DatasetResult) -> dict:
  """LRS-OPT's final validation loss against the best online method's, on
  the LRS-OPT seeds, and its convergence.

  Returns:
    A dict: ``best_online`` (method, grid value, mean validation loss over
    the LRS-OPT seeds, every grid value of every method where no seed
    diverged), ``lrs_opt_val_loss``, ``start_val_loss`` (the initial
    schedule's), ``ratio`` (LRS-OPT over best online), ``steps_taken``,
    ``converged``, ``final_slope`` (relative improvement per outer step at
    the end), ``seconds_per_outer_step`` and ``compile_seconds``.
  """
  lrs = result.lrs_opt
  name, i, value = best_online(result.results, lrs.seeds)
  g = result.results[name]
  mine = float(np.mean(lrs.runs.val_loss))
  return {
      "best_online": {"method": name, "grid_kind": g.grid_kind,
                      "grid_value": float(g.grid[i]), "val_loss": value},
      "lrs_opt_val_loss": mine,
      "start_val_loss": float(np.mean(lrs.start_runs.val_loss)),
      "ratio": mine / value,
      "steps_taken": lrs.steps_taken,
      "converged": lrs.converged,
      "final_slope": lrs.final_slope,
      "seconds_per_outer_step": lrs.seconds_per_outer_step,
      "compile_seconds": lrs.compile_seconds,
  }


def lrs_opt_lines(results: Sequence[DatasetResult]) -> str:
  """A line per dataset: LRS-OPT against the best online method."""
  lines = []
  for r in results:
    m = lrs_opt_summary(r)
    b = m["best_online"]
    lines.append(
        f"{r.dataset}: LRS-OPT mean final val loss {m['lrs_opt_val_loss']:.4f} "
        f"(start {m['start_val_loss']:.4f}) = {m['ratio']:.3f} x the best "
        f"online method's {b['val_loss']:.4f} ({b['method']}"
        + ("" if b["grid_kind"] == "none" else
           f" {b['grid_kind']}={report.format_value(b['grid_value'])}")
        + f") on seeds "
        f"{list(map(int, r.lrs_opt.seeds))}; outer steps "
        f"{list(map(int, m['steps_taken']))}, converged "
        f"{list(map(bool, m['converged']))}, final slope "
        + ", ".join(f"{v:.1e}" for v in m["final_slope"])
        + f" per outer step; {m['seconds_per_outer_step']:.2f} s per outer "
        f"step of all seeds (+{m['compile_seconds']:.0f} s compilation)")
  return "\n".join(lines)


def full_rows(result: DatasetResult) -> list:
  """One row per method and grid value."""
  rows = []
  for name, g in result.results.items():
    for i, v in enumerate(g.grid):
      if g.grid_kind == "selected":
        value = "selected"
      elif g.grid_kind == "none":
        value = "-"
      else:
        value = f"{g.grid_kind}={report.format_value(v)}"
      rows.append(_row(result.dataset, name, value, jax.tree.map(lambda a: a[i], g.runs)))
  return rows


TABLE_HEADER = ["data", "method", "grid value", "val acc %", "test acc %",
                "val loss", "diverged"]


def tables(results: Sequence[DatasetResult]) -> tuple[str, str]:
  """The summary table (best grid value per method) and the full table."""
  summary = report.format_table(TABLE_HEADER, [r for d in results for r in summary_rows(d)])
  full = report.format_table(TABLE_HEADER, [r for d in results for r in full_rows(d)])
  return summary, full


def tracking_table(results: Sequence[DatasetResult]) -> str:
  """The :func:`tracking` metrics of every method and dataset."""
  return report.format_table(
      TRACKING_HEADER, [r for d in results for r in tracking_rows(d)])


def to_json(results: Sequence[DatasetResult], preset: Preset, extra: dict) -> dict:
  """Every number: the preset, the grids, per-run metrics and schedules."""
  out = {
      "preset": dataclasses.asdict(preset),
      "protocol": {
          "E": "validation cross-entropy; online methods: gradient on a fresh "
          "validation minibatch of val_batch_size at each step (whole set if "
          "null); LRS-OPT: whole validation set at w_T",
          "divergence": "non-finite training loss or final validation loss, "
          "or final validation loss above the initial one",
          "selection": "select_hyper_lr_step over the kappa grid (largest "
          "first) on the MARTHE grid runs' first selection_steps training "
          "losses; divergence there = minibatch training loss > 2x the "
          "first or non-finite",
          "lrs_opt": "exact.lrs_opt vmapped over the LRS-OPT seeds (one "
          "compiled program), Adam on log(eta) from lrs_opt_lr with cosine "
          "decay to a tenth over lrs_opt_steps, hypergradient averaged over "
          "lrs_opt_draws fresh minibatch progressions per outer step, "
          "stopping when the windowed relative improvement per outer step "
          "falls below lrs_opt_tol, started from lrs_opt_start, E = whole "
          "validation set; evaluated (and so is its start) on each seed's "
          "own minibatch progression like the online methods",
          "tracking": "per method at its best grid value and LRS-OPT seed: "
          "mean over steps of |log10(eta/eta_LRS-OPT)| and the Pearson "
          "correlation of log10 eta with log10 eta_LRS-OPT (rates floored "
          "at 1e-8)",
          "metrics": "final accuracies and losses on the whole validation and "
          "test sets; accuracies are fractions",
      },
      **extra,
      "datasets": {},
  }
  for d in results:
    methods = {}
    for name, g in d.results.items():
      methods[name] = {
          "grid_kind": g.grid_kind,
          "grid": g.grid,
          "best_index": g.best_index(),
          "selected": g.selected,
          **{k: v for k, v in g.runs._asdict().items() if k != "trace"},
          "trace": g.runs.trace._asdict(),
      }
    out["datasets"][d.dataset] = {
        "description": d.description,
        "seconds": d.seconds,
        "methods": methods,
        # The curves the selection watched are the MARTHE grid's train_loss.
        "kappa_selection": [
            {k: v for k, v in s._asdict().items() if k != "losses"}
            for s in d.selections
        ],
        "lrs_opt": {
            **{k: v for k, v in d.lrs_opt._asdict().items()
               if k not in ("runs", "start_runs")},
            "evaluation": {
                **{k: v for k, v in d.lrs_opt.runs._asdict().items() if k != "trace"},
                "trace": d.lrs_opt.runs.trace._asdict(),
            },
            "start_evaluation": {
                k: v for k, v in d.lrs_opt.start_runs._asdict().items()
                if k != "trace"},
            "summary": lrs_opt_summary(d),
        },
        "tracking": tracking(d),
    }
  return out


def plot_dataset(result: DatasetResult, path: str, seed: int = 0) -> None:
  """Figure 2 for one dataset: LRS-OPT schedules (left); online schedules of
  seed ``seed`` at each method's best grid value against LRS-OPT's (center);
  mean validation accuracy against ``beta`` and against ``kappa`` (right),
  with diverged grid values marked by crosses."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 5, figsize=(30, 4.8))
  lrs = result.lrs_opt
  ax = axes[0]
  for s, sched in zip(lrs.seeds, lrs.schedules):
    ax.plot(sched, label=f"seed {s}")
  ax.set(xlabel="step t", ylabel="learning rate",
         title=f"{result.dataset}: LRS-OPT schedules "
         f"({_lrs_opt_label(lrs)})")
  ax.legend(fontsize=8)

  ax = axes[4]
  w = max(1, min(lrs.objectives.shape[1] // 4, 10))
  for s, curve, slope in zip(lrs.seeds, lrs.objectives, lrs.final_slope):
    curve = curve[np.isfinite(curve)]
    line, = ax.plot(curve, lw=0.6, alpha=0.5)
    if curve.size >= w:
      smooth = np.convolve(curve, np.ones(w) / w, mode="valid")
      ax.plot(np.arange(w - 1, curve.size), smooth, color=line.get_color(),
              lw=2, label=f"seed {s} (final slope {slope:.1e}/step)")
  best = lrs_opt_summary(result)["best_online"]
  ax.axhline(best["val_loss"], color="gray", ls=":",
             label=f"best online ({best['method']}), final val loss")
  ax.set(yscale="log", xlabel="outer step",
         ylabel="E(w_T) on that step's minibatches",
         title=f"LRS-OPT convergence (thick: {w}-step mean)")
  ax.legend(fontsize=7)

  colors = dict(zip(list(result.results) + [LRS_OPT], plt.cm.tab10.colors))
  ax = axes[1]
  for name, g in result.results.items():
    i = g.best_index()
    ax.plot(g.runs.trace.learning_rate[i, seed], color=colors[name], lw=1.2,
            label=name)
  if seed in lrs.seeds:
    j = int(np.flatnonzero(lrs.seeds == seed)[0])
    ax.plot(lrs.schedules[j], color="k", lw=2, label=LRS_OPT)
  ax.set_yscale("symlog", linthresh=1e-3)
  ax.set(xlabel="step t", ylabel="learning rate (symlog: 0 shown)",
         title=f"seed {seed}: each method at its best grid value")
  ax.legend(fontsize=7)

  const = result.results["constant"].runs.val_accuracy.mean()
  lrs_acc = lrs.runs.val_accuracy.mean()
  for ax, kind in ((axes[2], "beta"), (axes[3], "kappa")):
    for name, g in result.results.items():
      if g.grid_kind != kind:
        continue
      acc = g.runs.val_accuracy.mean(axis=1) * 100
      std = g.runs.val_accuracy.std(axis=1) * 100
      div = g.runs.diverged.any(axis=1)
      ax.errorbar(g.grid, acc, yerr=std, fmt="o-", ms=3, capsize=2,
                  color=colors[name], label=name)
      ax.plot(g.grid[div], acc[div], "x", ms=9, color=colors[name])
    if kind == "kappa" and SELECTED in result.results:
      sel = result.results[SELECTED]
      ax.errorbar([np.exp(np.mean(np.log(sel.selected)))],
                  [sel.runs.val_accuracy.mean() * 100],
                  yerr=[sel.runs.val_accuracy.std() * 100], fmt="*", ms=12,
                  color=colors[SELECTED], label=f"{SELECTED} (geom. mean kappa)")
    if KNOB_FREE in result.results:
      ax.axhline(result.results[KNOB_FREE].runs.val_accuracy.mean() * 100,
                 color=colors[KNOB_FREE], ls="-.", label=KNOB_FREE)
    ax.axhline(const * 100, color="gray", ls=":", label="constant eta_0")
    ax.axhline(lrs_acc * 100, color="k", ls="--", label=LRS_OPT)
    ax.set(xscale="log", xlabel=kind, ylabel="final validation accuracy %",
           title=f"mean ± std over seeds vs {kind} (x: some seed diverged)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run(
    preset: Preset,
    out_dir: str,
    datasets: Optional[Sequence[data_lib.Dataset]] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
  """Runs the comparison on every dataset and writes the outputs to ``out_dir``.

  Writes ``results.json`` (every number), ``table.md`` (the summary and full
  tables) and ``figure2_<dataset>.png``.

  Args:
    preset: the sizes.
    out_dir: the output directory (created).
    datasets: the datasets (default: ``preset.datasets`` loaded offline).
    progress: show a tqdm progress bar.
    log: where to print the tables.

  Returns:
    ``{'results': [DatasetResult], 'summary': str, 'full': str, 'seconds':
    float, 'files': [paths]}``.
  """
  t0 = time.perf_counter()
  if datasets is None:
    datasets = [data_lib.load(name) for name in preset.datasets]
  os.makedirs(out_dir, exist_ok=True)
  bar = Progress(total_tasks(preset) * len(datasets), enabled=progress,
                 desc=f"schedules ({preset.name}; runs + LRS-OPT steps)",
                 unit="task")
  results = []
  try:
    for d in datasets:
      results.append(run_dataset(d, preset, bar))
  finally:
    bar.close()
  seconds = time.perf_counter() - t0
  summary, full = tables(results)
  track = tracking_table(results)
  lrs_lines = lrs_opt_lines(results)
  files = []
  for r in results:
    path = os.path.join(out_dir, f"figure2_{r.dataset}.png")
    plot_dataset(r, path)
    files.append(path)
  header = (
      f"preset {preset.name}: {preset.note}\n"
      f"protocol: SGD, batch {preset.config.batch_size}, T={preset.config.steps}, "
      f"eta_0={preset.config.learning_rate}, MLP {preset.config.hidden}; "
      f"E = validation cross-entropy (online: minibatch of "
      f"{preset.config.val_batch_size} per step; LRS-OPT: whole set at w_T); "
      f"{preset.seeds} seeds (LRS-OPT {preset.lrs_opt_seeds}); "
      f"accuracy in % (mean ± std over seeds); "
      f"total {seconds:.0f} s on {jax.device_count()} {jax.default_backend()} "
      "device(s)\n" + "\n".join(r.description for r in results)
  )
  text = (
      f"{header}\n\nEach method at its best grid value (mean validation "
      f"accuracy):\n\n{summary}\n\n{lrs_lines}\n\nHow closely each "
      f"method's schedule (best grid value) tracks LRS-OPT's, mean ± std over "
      f"the LRS-OPT seeds:\n\n{track}\n\nEvery grid value:\n\n{full}\n"
  )
  path = os.path.join(out_dir, "table.md")
  with open(path, "w") as f:
    f.write(text)
  files.append(path)
  path = os.path.join(out_dir, "results.json")
  report.write_json(path, to_json(results, preset, {
      "seconds": seconds,
      "backend": jax.default_backend(),
      "tables": {"summary": summary, "full": full, "tracking": track,
                 "lrs_opt": lrs_lines},
  }))
  files.append(path)
  log(f"{header}\n\n{summary}\n\n{lrs_lines}\n\n{track}\n\n"
      f"(full table in {out_dir}/table.md)")
  return {"results": results, "summary": summary, "full": full,
          "tracking": track, "lrs_opt": lrs_lines, "seconds": seconds,
          "files": files}
