# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The benchmark's summaries, table and figures.

:func:`summarize` turns a method's result into JSON-ready statistics (times
as ratios to constant SGD), :func:`table_rows` into the README table, and
:func:`plot_accuracy_vs_time` / :func:`plot_schedules` into figures (the
caller picks the Matplotlib backend).
"""

import math
from typing import NamedTuple, Optional

import numpy as np

from marthe_lab import report
from marthe_lab.lr_free.methods import get_method
from marthe_lab.lr_free.runs import Run


class Timing(NamedTuple):
  """Wall-clock seconds of one method on one task (all seeds together).

  Attributes:
    compile_s: compiling the vmapped program.
    run_s: executing it (median of ``run_samples``): the seeds' runs, and for
      the hypergradient methods every candidate the selection tried, for
      every seed.
    select_s: reading the selection off the candidates' loss curves.
    runs_per_seed: training runs per seed (1, or the candidates tried).
    reference_s: constant SGD's run time, measured right before (median).
    run_samples: every timed execution.
  """

  compile_s: float
  run_s: float
  select_s: float
  runs_per_seed: int
  reference_s: float
  run_samples: tuple = ()

  @property
  def total_s(self) -> float:
    return self.compile_s + self.run_s + self.select_s


class MethodResult(NamedTuple):
  """What one method produced on one task.

  Attributes:
    method: its key in :data:`METHODS`.
    run: the reported :class:`Run` per seed (NumPy, leading axis ``S``): for
      the hypergradient methods, each seed's run at its selected value.
    timing: the :class:`Timing`.
    selected: ``[S]`` selected ``beta`` / ``kappa`` (``nan`` where every
      candidate diverged), or ``None``.
    candidate_diverged: ``[S, C]`` the selection's divergence verdicts
      (``False`` for candidates below every seed's first survivor, which
      were not run; for a :attr:`Method.grid`, :attr:`Run.diverged` of every
      value), or ``None``.
    grid: the ``C`` candidates or grid values, or ``None``.
    candidate_val_accuracy: ``[S, C]`` final validation accuracy of every
      grid value (methods with a :attr:`Method.grid`), or ``None``.
  """

  method: str
  run: Run
  timing: Timing
  selected: Optional[np.ndarray]
  candidate_diverged: Optional[np.ndarray]
  grid: Optional[np.ndarray] = None
  candidate_val_accuracy: Optional[np.ndarray] = None


def summarize(result: MethodResult, sgd: Timing) -> dict:
  """JSON-ready summary of one method, times as ratios to constant SGD.

  ``time.total_ratio`` is everything the method cost on this task
  (compilation, all its training runs, the selection) over the same for
  constant SGD; ``time.run_ratio`` is the execution time of one training run
  over one SGD run (for the hypergradient methods the selection's runs are
  divided by the number of candidates tried). SGD's run time is the one
  measured next to the method's (:attr:`Timing.reference_s`).
  """
  m, r, t = get_method(result.method), result.run, result.timing
  lr = r.learning_rate
  has_lr = bool(np.isfinite(lr).any())
  stat = lambda a: dict(
    mean=float(np.mean(a)), std=float(np.std(a)), per_seed=np.asarray(a, np.float64)
  )
  return dict(
    method=m.name,
    label=m.label,
    family=m.family,
    notes=m.notes,
    user_set=list(m.user_set),
    n_user_set=len(m.user_set),
    selects=m.selects,
    selected=result.selected,
    candidates=result.grid,
    candidate_diverged=result.candidate_diverged,
    candidate_val_accuracy=result.candidate_val_accuracy,
    val_accuracy=stat(r.val_accuracy),
    test_accuracy=stat(r.test_accuracy),
    val_loss=stat(r.val_loss),
    test_loss=stat(r.test_loss),
    diverged=int(np.sum(r.diverged)),
    seeds=int(len(r.val_accuracy)),
    safeguard_count=_counts(r.safeguard_count),
    nonfinite_count=_counts(r.nonfinite_count),
    repaired_count=_counts(r.repaired_count),
    time=dict(
      compile_s=t.compile_s,
      run_s=t.run_s,
      select_s=t.select_s,
      total_s=t.total_s,
      runs_per_seed=t.runs_per_seed,
      reference_s=t.reference_s,
      run_samples=list(t.run_samples),
      run_ratio=(t.run_s / t.runs_per_seed) / t.reference_s,
      total_ratio=t.total_s / (sgd.compile_s + t.reference_s),
    ),
    learning_rate=dict(
      exposed=has_lr,
      mean=np.nanmean(lr, axis=0) if has_lr else None,
      seed0=lr[0] if has_lr else None,
      final_mean=float(np.nanmean(lr[:, -1])) if has_lr else None,
      max_mean=float(np.nanmean(np.nanmax(lr, axis=1))) if has_lr else None,
    ),
    train_loss_mean=np.mean(r.train_loss, axis=0),
  )


def _counts(values: np.ndarray) -> Optional[list]:
  """Per-seed event counts as ints; ``None`` where the state has none."""
  values = np.asarray(values, np.float64)
  if not np.all(np.isfinite(values)):
    return None
  return [int(v) for v in values]


TABLE_HEADER = (
  "task",
  "method",
  "val acc %",
  "test acc %",
  "# set",
  "selected",
  "time x SGD",
  "run x SGD",
  "diverged",
  "safeguards",
  "final lr",
)


def _selected_text(summary: dict) -> str:
  sel = summary["selected"]
  if sel is None:
    return "-"
  vals = sorted({v for v in sel if v is not None})
  text = "/".join(report.format_value(v) for v in vals) or "none"
  return f"{summary['selects']}={text}"


def table_rows(tasks: dict) -> list[list[str]]:
  """Rows of the results table, one per (task, method)."""
  rows = []
  for task_name, task in tasks.items():
    for s in task["methods"]:
      final = s["learning_rate"]["final_mean"]
      rows.append(
        [
          task_name,
          s["label"],
          report.mean_std(s["val_accuracy"]["per_seed"]),
          report.mean_std(s["test_accuracy"]["per_seed"]),
          str(s["n_user_set"]),
          _selected_text(s),
          f"{s['time']['total_ratio']:.2f}",
          f"{s['time']['run_ratio']:.2f}",
          f"{s['diverged']}/{s['seeds']}",
          "-" if s["safeguard_count"] is None else str(sum(s["safeguard_count"])),
          "-" if final is None or not math.isfinite(final) else f"{final:.2e}",
        ]
      )
  return rows


# ----------------------------------------------------------------------------
# Figures.

_MARKERS = {"schedule": "s", "hypergradient": "o", "lr-free": "^"}


def plot_accuracy_vs_time(tasks: dict, path: str) -> None:
  """One panel per task: test accuracy (mean ± std over seeds) against the
  whole run's wall time (selection and compilation included) over constant
  SGD's, log scale."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker as mticker  # pylint: disable=g-import-not-at-top

  names = list(tasks)
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
  cmap = plt.get_cmap("tab20")
  for ax, name in zip(axes[0], names):
    for i, s in enumerate(tasks[name]["methods"]):
      acc = 100 * np.asarray(s["test_accuracy"]["per_seed"])
      ax.errorbar(
        s["time"]["total_ratio"],
        acc.mean(),
        yerr=acc.std(),
        marker=_MARKERS[s["family"]],
        color=cmap(i % 20),
        ms=7,
        capsize=3,
        ls="none",
        label=s["label"],
      )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("wall time / constant SGD (selection + compile + run)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(f"{name} ({tasks[name]['n_params']:,} params)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_schedules(tasks: dict, path: str) -> None:
  """One panel per task: the mean (over seeds) learning rate or effective
  step of every method that exposes one, log scale."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(tasks)
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.0), squeeze=False)
  cmap = plt.get_cmap("tab20")
  for ax, name in zip(axes[0], names):
    for i, s in enumerate(tasks[name]["methods"]):
      lr = s["learning_rate"]["mean"]
      if lr is None:
        continue
      lr = np.asarray(lr, np.float64)
      ax.plot(
        np.where(lr > 0, lr, np.nan),
        color=cmap(i % 20),
        lw=1.2,
        ls="--" if s["family"] == "lr-free" else "-",
        label=s["label"],
      )
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-4)  # the cosine and SGDR tails go on to 0
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate / effective step (mean over seeds)")
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3, which="both")
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
