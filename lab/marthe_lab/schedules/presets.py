# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The methods, the output names and the sizes (presets) of the section-5 experiment."""

import dataclasses
from typing import Optional

import numpy as np

from marthe_lab import methods
from marthe_lab import train as train_lib


METHODS = (
  methods.Variant("constant", "none", False, 0.0),
  methods.Variant("HD", "beta", False, 0.0),
  methods.Variant("RTHO", "beta", False, 1.0),
  methods.Variant("MARTHE mu=0.9", "beta", False, 0.9),
  methods.Variant("MARTHE mu=0.99", "beta", False, 0.99),
  methods.Variant("MARTHE h_mu", "beta", True),
  methods.Variant("MARTHE", "kappa", True),
)
"""The online methods, each over its grid: every fixed-``mu`` one is the
registry's ``'eq5'`` (one compiled program), every adaptive one
``'eq5_adaptive_mu'``."""

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
    note="smoke test only: T=24, MLP 3x16, 2 seeds, 2 grid values, LRS-OPT 2 seeds x 4 outer steps",
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


def grid_of(method: methods.Variant, preset: Preset) -> np.ndarray:
  """The preset's grid of ``method`` (``[1]`` zeros for ``'none'``)."""
  if method.grid == "beta":
    return np.asarray(preset.beta_grid, np.float64)
  if method.grid == "kappa":
    return np.asarray(preset.kappa_grid, np.float64)
  return np.zeros(1)
