# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""What the section-5 experiment measures: its result records, the best online
method, and a progress bar.
"""

from typing import NamedTuple, Optional

import numpy as np

from marthe_lab import choose
from marthe_lab import train as train_lib


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
    return choose.best_in_hindsight(self.runs.val_accuracy)


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

  def __init__(self, total: int, enabled: bool = True, desc: str = "", unit: str = "run"):
    self.bar = None
    if enabled:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

      self.bar = tqdm(total=total, desc=desc, unit=unit, smoothing=0.0, mininterval=1.0)

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


def best_online(results: dict, seeds: Optional[np.ndarray] = None) -> tuple[str, int, float]:
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
