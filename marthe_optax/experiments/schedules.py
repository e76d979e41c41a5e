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
from marthe_optax.experiments import data as data_lib
from marthe_optax.experiments import models
from marthe_optax.experiments import report
from marthe_optax.experiments import train as train_lib


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
LRS_OPT = "LRS-OPT"


@dataclasses.dataclass(frozen=True)
class Preset:
  """Sizes of the experiment.

  Attributes:
    name: ``'tiny'``, ``'fast'`` or ``'paper'``.
    datasets: dataset names (see :func:`marthe_optax.experiments.data.load`).
    config: the inner problem.
    seeds: seeds of every online method.
    beta_grid: hyper-learning rates (HD, RTHO, fixed ``mu``, ``h_mu``).
    kappa_grid: step sizes of the hyper-learning rate (MARTHE).
    lrs_opt_seeds: seeds of LRS-OPT (the first ones of ``seeds``).
    lrs_opt_steps: outer iterations of LRS-OPT.
    lrs_opt_lr: step size of LRS-OPT's outer Adam.
    selection_steps: training steps that the kappa selection watches for
      divergence (``T``, the whole run, in every preset: on MNIST-1D a
      128-step prefix let through step sizes that diverged later).
      The ``kappa`` grid doubles as the selection's candidates.
    chunk: runs per compiled call (bounds memory; ``None``: all at once).
    note: what differs from the paper.
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
        lrs_opt_seeds=1,
        lrs_opt_steps=2,
        lrs_opt_lr=1e-2,
        selection_steps=24,
        chunk=None,
        note="smoke test only: T=24, MLP 3x16, 2 seeds, 2 grid values, "
        "LRS-OPT 1 seed x 2 outer steps",
    ),
    "fast": Preset(
        name="fast",
        datasets=("digits", "mnist1d"),
        config=train_lib.TrainConfig(steps=512, hidden=(64, 64, 64)),
        seeds=3,
        beta_grid=_decades(-6, 0),
        kappa_grid=_decades(-9, 0),
        lrs_opt_seeds=2,
        lrs_opt_steps=40,
        lrs_opt_lr=2.5e-3,
        selection_steps=512,
        chunk=64,
        note="T=512 and batch 100 as the paper, but MLP 3x64 (paper 3x500), "
        "3 seeds (paper 20), decade grids, LRS-OPT 2 seeds x 40 outer Adam "
        "steps (paper 4 x 5000): LRS-OPT is far from converged",
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
        lrs_opt_lr=1e-3,
        selection_steps=512,
        chunk=40,
        note="the paper's sizes: T=512, batch 100, MLP 3x500, 20 seeds, "
        "half-decade grids, LRS-OPT 4 seeds x 5000 outer steps",
    ),
}


class GridResult(NamedTuple):
  """One method over its grid and the seeds.

  Attributes:
    method: the method's name.
    grid_kind: ``'beta'``, ``'kappa'``, ``'none'`` or ``'selected'``.
    grid: ``[G]`` grid values (``[1]`` zeros for ``'none'``; for
      ``'selected'``, ``[1]`` NaN and the per-seed values in ``selected``).
    runs: a :class:`~marthe_optax.experiments.train.RunResult` of ``[G, S]``
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
    objectives: ``[S', outer_steps]`` ``E(w_T)`` along the outer iterations.
    history: ``[S', R, T]`` schedules recorded along the outer iterations.
    history_steps: ``[R]`` the outer steps of ``history``.
    runs: the schedules evaluated on each seed's minibatch progression, a
      :class:`~marthe_optax.experiments.train.RunResult` of ``[1, S']``
      arrays.
    seconds_per_outer_step: measured, excluding the first (compiling) step.
  """

  seeds: np.ndarray
  schedules: np.ndarray
  objectives: np.ndarray
  history: np.ndarray
  history_steps: np.ndarray
  runs: train_lib.RunResult
  seconds_per_outer_step: float


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


def run_lrs_opt(
    arrays: train_lib.Arrays,
    inputs: train_lib.RunInputs,
    preset: Preset,
    progress: Optional[Progress] = None,
) -> LrsOptOutcome:
  """LRS-OPT (:func:`marthe_optax.exact.lrs_opt`) for the first seeds.

  From ``eta = eta_0 * ones(T)`` and the seed's ``w_0``: ``lrs_opt_steps``
  outer steps of Adam (step size ``preset.lrs_opt_lr``; non-finite
  hypergradients skipped) projected onto ``eta >= 0``, on the exact
  reverse-mode hypergradient of the whole-validation-set loss at ``w_T``,
  with fresh random minibatches at every outer step.
  """
  config = preset.config
  seeds = np.arange(preset.lrs_opt_seeds, dtype=np.int32)
  loss = lambda p, b: models.cross_entropy(p, b[0], b[1])
  objective = jax.tree_util.Partial(
      lambda x, y, p: models.cross_entropy(p, x, y), arrays.x_val, arrays.y_val
  )
  sample = exact.random_minibatches(
      (arrays.x_train, arrays.y_train), config.batch_size, config.steps
  )
  record_every = max(1, preset.lrs_opt_steps // 20)
  schedules, objectives, history, step_times = [], [], [], []
  progress = progress or Progress(0, enabled=False)
  for seed in seeds:
    params = jax.tree.map(lambda a: a[seed], inputs.params)
    times = [time.perf_counter()]

    def callback(i, value, schedule, times=times):
      del i, schedule
      value = float(value)  # waits for the step: honest timing
      times.append(time.perf_counter())
      progress.update(1, lrs_opt_seed=int(seed), E=f"{value:.3f}")

    res = exact.lrs_opt(
        jnp.full(config.steps, config.learning_rate), params, optax.sgd, loss,
        sample, objective,
        num_steps=preset.lrs_opt_steps,
        outer=optax.apply_if_finite(optax.adam(preset.lrs_opt_lr), 10),
        key=jax.random.fold_in(jax.random.key(seed), 1),
        record_every=record_every, callback=callback,
    )
    schedules.append(np.asarray(res.schedule))
    objectives.append(np.asarray(res.objectives))
    history.append(np.asarray(res.schedules))
    step_times.extend(np.diff(times)[1:])
  schedules = np.stack(schedules)
  runs = train_lib.run_schedule(
      arrays, config, inputs, jnp.asarray(seeds), jnp.asarray(schedules)
  )
  runs = jax.tree.map(lambda a: np.asarray(a)[None], runs)
  return LrsOptOutcome(
      seeds=seeds,
      schedules=schedules,
      objectives=np.stack(objectives),
      history=np.stack(history),
      history_steps=np.asarray(res.schedule_steps),
      runs=runs,
      seconds_per_outer_step=float(np.mean(step_times)) if step_times else float("nan"),
  )


def total_tasks(preset: Preset) -> int:
  """Units of the progress bar per dataset: online training runs, one per
  seed's kappa selection, and LRS-OPT outer steps."""
  grid = sum(len(_grid_of(m, preset)) for m in METHODS)
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
  t = time.perf_counter()
  lrs = run_lrs_opt(arrays, inputs, preset, progress)
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
  each family for ``probe_steps`` steps, and one exact reverse-mode schedule
  hypergradient over ``probe_steps`` steps (LRS-OPT's outer step), then
  scales linearly to ``T`` steps and the preset's numbers of runs and outer
  steps. Compilation time is not included.

  Returns:
    Seconds per part and in total, and the measured per-run-step costs.
  """
  arrays = train_lib.Arrays.from_dataset(dataset)
  config = preset.config._replace(steps=probe_steps)
  inputs = train_lib.make_inputs(jnp.arange(1), arrays, config, dataset.num_classes)
  n = preset.chunk or 8
  seeds = jnp.zeros(n, jnp.int32)
  hyper = train_lib.Hyper(jnp.full(n, 1e-4), jnp.zeros(n), jnp.full(n, 0.9))

  def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t

  per = {}
  for adaptive in (False, True):
    t = timed(lambda: train_lib.run_online(arrays, config, inputs, seeds, hyper, adaptive))
    per["adaptive" if adaptive else "fixed"] = t / (n * probe_steps)
  params = jax.tree.map(lambda a: a[0], inputs.params)
  batches = exact.random_minibatches(
      (arrays.x_train, arrays.y_train), config.batch_size, probe_steps
  )(jax.random.key(0))
  objective = jax.tree_util.Partial(
      lambda x, y, p: models.cross_entropy(p, x, y), arrays.x_val, arrays.y_val)
  hypergrad = jax.jit(lambda s, p, b, o: exact.schedule_hypergradient(
      s, p, optax.sgd, lambda q, bb: models.cross_entropy(q, bb[0], bb[1]), b, o))
  t = timed(hypergrad, jnp.full(probe_steps, 0.01), params, batches, objective)
  per["lrs_opt"] = t / probe_steps
  steps = preset.config.steps
  fixed_runs = sum(len(_grid_of(m, preset)) for m in METHODS if not m.adaptive_mu)
  adaptive_runs = sum(len(_grid_of(m, preset)) for m in METHODS if m.adaptive_mu)
  parts = {
      "fixed_mu_methods": fixed_runs * preset.seeds * steps * per["fixed"],
      "adaptive_mu_methods": adaptive_runs * preset.seeds * steps * per["adaptive"],
      "lrs_opt": preset.lrs_opt_seeds * preset.lrs_opt_steps * steps * per["lrs_opt"],
  }
  parts["total"] = sum(parts.values())
  log(
      f"estimate for preset {preset.name} on {dataset.describe()} "
      f"({jax.default_backend()}, from {probe_steps}-step probes, chunks of {n}, "
      "compilation excluded): "
      + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in parts.items())
      + "; seconds per run-step: "
      + ", ".join(f"{k} {v:.2e}" for k, v in per.items())
  )
  return {"seconds": parts, "seconds_per_run_step": per}


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
  rows.append(_row(result.dataset, LRS_OPT, f"{result.lrs_opt.objectives.shape[1]} outer steps", lrs))
  return rows


def _row(dataset: str, name: str, value: str, runs: train_lib.RunResult) -> list:
  return [
      dataset, name, value,
      report.mean_std(runs.val_accuracy),
      report.mean_std(runs.test_accuracy),
      f"{int(np.sum(runs.diverged))}/{np.size(runs.diverged)}",
  ]


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


TABLE_HEADER = ["data", "method", "grid value", "val acc %", "test acc %", "diverged"]


def tables(results: Sequence[DatasetResult]) -> tuple[str, str]:
  """The summary table (best grid value per method) and the full table."""
  summary = report.format_table(TABLE_HEADER, [r for d in results for r in summary_rows(d)])
  full = report.format_table(TABLE_HEADER, [r for d in results for r in full_rows(d)])
  return summary, full


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
          "lrs_opt": "exact.lrs_opt, Adam(lrs_opt_lr) wrapped in "
          "apply_if_finite, projection eta >= 0, fresh minibatches per outer "
          "step, E = whole validation set",
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
            **{k: v for k, v in d.lrs_opt._asdict().items() if k != "runs"},
            "evaluation": {
                **{k: v for k, v in d.lrs_opt.runs._asdict().items() if k != "trace"},
                "trace": d.lrs_opt.runs.trace._asdict(),
            },
        },
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

  fig, axes = plt.subplots(1, 4, figsize=(24, 4.8))
  lrs = result.lrs_opt
  ax = axes[0]
  for s, sched in zip(lrs.seeds, lrs.schedules):
    ax.plot(sched, label=f"seed {s}")
  ax.set(xlabel="step t", ylabel="learning rate",
         title=f"{result.dataset}: LRS-OPT schedules "
         f"({lrs.objectives.shape[1]} outer steps)")
  ax.legend(fontsize=8)

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
      f"accuracy):\n\n{summary}\n\nEvery grid value:\n\n{full}\n"
  )
  path = os.path.join(out_dir, "table.md")
  with open(path, "w") as f:
    f.write(text)
  files.append(path)
  path = os.path.join(out_dir, "results.json")
  report.write_json(path, to_json(results, preset, {
      "seconds": seconds,
      "backend": jax.default_backend(),
      "tables": {"summary": summary, "full": full},
  }))
  files.append(path)
  log(f"{header}\n\n{summary}\n\n(full table in {out_dir}/table.md)")
  return {"results": results, "summary": summary, "full": full,
          "seconds": seconds, "files": files}
