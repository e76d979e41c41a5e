# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The section-5 experiment's tables, tracking metrics and JSON."""

import dataclasses
from typing import Sequence

import jax
import numpy as np

from marthe_lab import report
from marthe_lab import train as train_lib
from marthe_lab.schedules.presets import LRS_OPT, Preset
from marthe_lab.schedules.results import DatasetResult, LrsOptOutcome, best_online


def summary_rows(result: DatasetResult) -> list:
  """One row per method at its best grid value (by mean validation accuracy)."""
  rows = []
  for name, g in result.results.items():
    i = g.best_index()
    value = (
      "per seed " + ", ".join(report.format_value(v) for v in g.selected)
      if g.grid_kind == "selected"
      else "-"
      if g.grid_kind == "none"
      else f"{g.grid_kind}={report.format_value(g.grid[i])}"
    )
    runs = jax.tree.map(lambda a: a[i], g.runs)
    rows.append(_row(result.dataset, name, value, runs))
  lrs = jax.tree.map(lambda a: a[0], result.lrs_opt.runs)
  rows.append(_row(result.dataset, LRS_OPT, lrs_opt_label(result.lrs_opt), lrs))
  return rows


def lrs_opt_label(lrs: LrsOptOutcome) -> str:
  taken = lrs.steps_taken
  steps = (
    f"{int(taken.min())}"
    if taken.min() == taken.max()
    else f"{int(taken.min())}-{int(taken.max())}"
  )
  return f"{steps} outer steps from {lrs.start}"


def _row(dataset: str, name: str, value: str, runs: train_lib.RunResult) -> list:
  return [
    dataset,
    name,
    value,
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
    log_eta = np.log10(np.maximum(np.nan_to_num(eta, nan=TRACKING_FLOOR), TRACKING_FLOOR))
    dist = np.mean(np.abs(log_eta - ref), axis=1)
    corr = np.full(len(lrs.seeds), np.nan)
    for j in range(len(lrs.seeds)):
      if np.ptp(log_eta[j]) > 1e-6 and np.ptp(ref[j]) > 1e-6:  # not constant
        corr[j] = np.corrcoef(log_eta[j], ref[j])[0, 1]
    out[name] = {"mean_abs_log10": dist, "correlation": corr}
  return out


TRACKING_HEADER = [
  "data",
  "method",
  "mean |log10(eta/eta_LRS-OPT)|",
  "corr(log eta, log eta_LRS-OPT)",
]


def tracking_rows(result: DatasetResult) -> list:
  """One row per method: the :func:`tracking` metrics, mean ± std over the
  LRS-OPT seeds."""
  rows = []
  for name, m in tracking(result).items():
    corr = m["correlation"]
    rows.append(
      [
        result.dataset,
        name,
        report.mean_std(m["mean_abs_log10"], scale=1.0, digits=2),
        "-"
        if np.all(np.isnan(corr))
        else report.mean_std(corr[np.isfinite(corr)], scale=1.0, digits=2),
      ]
    )
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
    "best_online": {
      "method": name,
      "grid_kind": g.grid_kind,
      "grid_value": float(g.grid[i]),
      "val_loss": value,
    },
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
      + (
        ""
        if b["grid_kind"] == "none"
        else f" {b['grid_kind']}={report.format_value(b['grid_value'])}"
      )
      + f") on seeds "
      f"{list(map(int, r.lrs_opt.seeds))}; outer steps "
      f"{list(map(int, m['steps_taken']))}, converged "
      f"{list(map(bool, m['converged']))}, final slope "
      + ", ".join(f"{v:.1e}" for v in m["final_slope"])
      + f" per outer step; {m['seconds_per_outer_step']:.2f} s per outer "
      f"step of all seeds (+{m['compile_seconds']:.0f} s compilation)"
    )
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


TABLE_HEADER = ["data", "method", "grid value", "val acc %", "test acc %", "val loss", "diverged"]


def tables(results: Sequence[DatasetResult]) -> tuple[str, str]:
  """The summary table (best grid value per method) and the full table."""
  summary = report.format_table(TABLE_HEADER, [r for d in results for r in summary_rows(d)])
  full = report.format_table(TABLE_HEADER, [r for d in results for r in full_rows(d)])
  return summary, full


def tracking_table(results: Sequence[DatasetResult]) -> str:
  """The :func:`tracking` metrics of every method and dataset."""
  return report.format_table(TRACKING_HEADER, [r for d in results for r in tracking_rows(d)])


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
        {k: v for k, v in s._asdict().items() if k != "losses"} for s in d.selections
      ],
      "lrs_opt": {
        **{k: v for k, v in d.lrs_opt._asdict().items() if k not in ("runs", "start_runs")},
        "evaluation": {
          **{k: v for k, v in d.lrs_opt.runs._asdict().items() if k != "trace"},
          "trace": d.lrs_opt.runs.trace._asdict(),
        },
        "start_evaluation": {
          k: v for k, v in d.lrs_opt.start_runs._asdict().items() if k != "trace"
        },
        "summary": lrs_opt_summary(d),
      },
      "tracking": tracking(d),
    }
  return out
