# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Figure 2 of the paper, per dataset, from a section-5 result."""

import numpy as np

from marthe_lab.schedules.presets import KNOB_FREE, LRS_OPT, SELECTED
from marthe_lab.schedules.results import DatasetResult
from marthe_lab.schedules.tables import lrs_opt_label, lrs_opt_summary


def plot_dataset(result: DatasetResult, path: str, seed: int = 0) -> None:
  """Figure 2 for one dataset: LRS-OPT schedules (left); online schedules of
  seed ``seed`` at each method's best grid value against LRS-OPT's (center);
  mean validation accuracy against ``beta`` and against ``kappa`` (right),
  with diverged grid values marked by crosses."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 5, figsize=(30, 4.8))
  lrs = result.lrs_opt
  ax = axes[0]
  for s, sched in zip(lrs.seeds, lrs.schedules):
    ax.plot(sched, label=f"seed {s}")
  ax.set(
    xlabel="step t",
    ylabel="learning rate",
    title=f"{result.dataset}: LRS-OPT schedules ({lrs_opt_label(lrs)})",
  )
  ax.legend(fontsize=8)

  ax = axes[4]
  w = max(1, min(lrs.objectives.shape[1] // 4, 10))
  for s, curve, slope in zip(lrs.seeds, lrs.objectives, lrs.final_slope):
    curve = curve[np.isfinite(curve)]
    (line,) = ax.plot(curve, lw=0.6, alpha=0.5)
    if curve.size >= w:
      smooth = np.convolve(curve, np.ones(w) / w, mode="valid")
      ax.plot(
        np.arange(w - 1, curve.size),
        smooth,
        color=line.get_color(),
        lw=2,
        label=f"seed {s} (final slope {slope:.1e}/step)",
      )
  best = lrs_opt_summary(result)["best_online"]
  ax.axhline(
    best["val_loss"], color="gray", ls=":", label=f"best online ({best['method']}), final val loss"
  )
  ax.set(
    yscale="log",
    xlabel="outer step",
    ylabel="E(w_T) on that step's minibatches",
    title=f"LRS-OPT convergence (thick: {w}-step mean)",
  )
  ax.legend(fontsize=7)

  colors = dict(zip(list(result.results) + [LRS_OPT], plt.cm.tab10.colors))
  ax = axes[1]
  for name, g in result.results.items():
    i = g.best_index()
    ax.plot(g.runs.trace.learning_rate[i, seed], color=colors[name], lw=1.2, label=name)
  if seed in lrs.seeds:
    j = int(np.flatnonzero(lrs.seeds == seed)[0])
    ax.plot(lrs.schedules[j], color="k", lw=2, label=LRS_OPT)
  ax.set_yscale("symlog", linthresh=1e-3)
  ax.set(
    xlabel="step t",
    ylabel="learning rate (symlog: 0 shown)",
    title=f"seed {seed}: each method at its best grid value",
  )
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
      ax.errorbar(g.grid, acc, yerr=std, fmt="o-", ms=3, capsize=2, color=colors[name], label=name)
      ax.plot(g.grid[div], acc[div], "x", ms=9, color=colors[name])
    if kind == "kappa" and SELECTED in result.results:
      sel = result.results[SELECTED]
      ax.errorbar(
        [np.exp(np.mean(np.log(sel.selected)))],
        [sel.runs.val_accuracy.mean() * 100],
        yerr=[sel.runs.val_accuracy.std() * 100],
        fmt="*",
        ms=12,
        color=colors[SELECTED],
        label=f"{SELECTED} (geom. mean kappa)",
      )
    if KNOB_FREE in result.results:
      ax.axhline(
        result.results[KNOB_FREE].runs.val_accuracy.mean() * 100,
        color=colors[KNOB_FREE],
        ls="-.",
        label=KNOB_FREE,
      )
    ax.axhline(const * 100, color="gray", ls=":", label="constant eta_0")
    ax.axhline(lrs_acc * 100, color="k", ls="--", label=LRS_OPT)
    ax.set(
      xscale="log",
      xlabel=kind,
      ylabel="final validation accuracy %",
      title=f"mean ± std over seeds vs {kind} (x: some seed diverged)",
    )
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
