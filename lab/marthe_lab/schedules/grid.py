# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The online methods of the section-5 experiment over their grids and seeds,
the paper's ``kappa`` selection, and the whole comparison on one dataset.
"""

import functools
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marthe_optax import selection
from marthe_lab import choose
from marthe_lab import data as data_lib
from marthe_lab import loop
from marthe_lab import methods
from marthe_lab import train as train_lib
from marthe_lab.schedules.lrs_opt import run_lrs_opt
from marthe_lab.schedules.presets import KNOB_FREE, METHODS, SELECTED, Preset, grid_of
from marthe_lab.schedules.results import DatasetResult, GridResult, Progress


def run_family(
  arrays: train_lib.Arrays,
  inputs: train_lib.RunInputs,
  preset: Preset,
  variants: Sequence[methods.Variant],
  adaptive_mu: bool,
  progress: Progress,
) -> dict:
  """All (method, grid value, seed) runs of one family in vmapped chunks.

  Args:
    arrays: the data.
    inputs: the seeds' inputs.
    preset: the sizes.
    variants: methods of one family (all with ``adaptive_mu``, or none).
    adaptive_mu: the family.
    progress: advanced by the runs done.

  Returns:
    ``{name: GridResult}`` of the ``variants``.
  """
  rows = [(m, v) for m in variants for v in grid_of(m, preset)]
  if not rows:
    return {}
  hypers = [m.hyper(float(v)) for m, v in rows for _ in range(preset.seeds)]
  seeds = np.tile(np.arange(preset.seeds, dtype=np.int32), len(rows))
  hyper = train_lib.Hyper(*(np.array([h[k] for h in hypers], np.float32) for k in range(3)))
  fn = functools.partial(
    train_lib.run_online,
    arrays,
    preset.config,
    inputs,
    adaptive_mu=adaptive_mu,
  )
  out = loop.run_in_chunks(fn, (seeds, hyper), preset.chunk, callback=progress.update)
  results, start = {}, 0
  for m in variants:
    grid = grid_of(m, preset)
    n = len(grid) * preset.seeds
    runs = jax.tree.map(
      lambda a: a[start : start + n].reshape((len(grid), preset.seeds) + a.shape[1:]),
      out,
    )
    results[m.name] = GridResult(m.name, m.grid, grid, runs)
    start += n
  return results


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

  Raises:
    ValueError: when every ``kappa`` of the grid diverged.
  """
  chosen, i = choose.select_from_curves(marthe.runs.trace.train_loss[:, seed, :steps], marthe.grid)
  if chosen is None:
    raise ValueError(f"Every kappa of {marthe.grid} diverged on seed {seed}.")
  return chosen, i


def total_tasks(preset: Preset) -> int:
  """Units of the progress bar per dataset: online training runs, one per
  seed's kappa selection, and LRS-OPT outer steps."""
  grid = sum(len(grid_of(m, preset)) for m in METHODS)
  grid += train_lib.knob_free_available()
  return (grid + 1) * preset.seeds + preset.lrs_opt_seeds * preset.lrs_opt_steps


def run_dataset(
  dataset: data_lib.Dataset,
  preset: Preset,
  progress: Optional[Progress] = None,
) -> DatasetResult:
  """The whole comparison on one dataset.

  Args:
    dataset: the data.
    preset: the sizes.
    progress: advanced by the runs and LRS-OPT steps done.

  Returns:
    A :class:`~marthe_lab.schedules.results.DatasetResult`.
  """
  progress = progress or Progress(0, enabled=False)
  arrays = train_lib.Arrays.from_dataset(dataset)
  inputs = train_lib.make_inputs(
    jnp.arange(preset.seeds), arrays, preset.config, dataset.num_classes
  )
  seconds, results = {}, {}
  t = time.perf_counter()
  fixed = [m for m in METHODS if not m.adaptive_mu]
  adaptive = [m for m in METHODS if m.adaptive_mu]
  results.update(run_family(arrays, inputs, preset, fixed, False, progress))
  seconds["fixed_mu_methods"] = time.perf_counter() - t
  t = time.perf_counter()
  results.update(run_family(arrays, inputs, preset, adaptive, True, progress))
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
  picked = jax.tree.map(lambda a: a[np.array(rows), np.arange(preset.seeds)][None], marthe.runs)
  results[SELECTED] = GridResult(
    SELECTED,
    "selected",
    np.full(1, np.nan),
    picked,
    selected=marthe.grid[np.array(rows)],
  )
  seconds["kappa_selection"] = time.perf_counter() - t
  if train_lib.knob_free_available():
    t = time.perf_counter()
    runs = train_lib.run_knob_free(arrays, preset.config, inputs, jnp.arange(preset.seeds))
    results[KNOB_FREE] = GridResult(
      KNOB_FREE, "none", np.zeros(1), jax.tree.map(lambda a: np.asarray(a)[None], runs)
    )
    progress.update(preset.seeds)
    seconds["knob_free"] = time.perf_counter() - t
  t = time.perf_counter()
  lrs = run_lrs_opt(arrays, inputs, preset, progress, results)
  seconds["lrs_opt"] = time.perf_counter() - t
  return DatasetResult(dataset.name, dataset.describe(), results, lrs, selections, seconds)
