# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Figure 1's report: its table, its JSON and its plot (:mod:`.toy_functions` runs it)."""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marthe_lab import methods as methods_lib
from marthe_lab import report
from marthe_lab.toy_functions import METHODS, PROBLEMS, Figure1Result, best_index


def table(result: Figure1Result, methods: Sequence[methods_lib.Variant] = METHODS) -> str:
  """Per problem and method: the best grid value, its best and final
  objective, how many grid values diverged and the smallest that did."""
  rows = []
  for name, per_method in result.runs.items():
    c = result.constant[name]
    rows.append([name, "constant eta_0", "-", f"{c.best:.4g}", f"{c.loss[-1]:.4g}", "-", "-"])
    for m in methods:
      traj = per_method[m.name]
      grid = result.beta_grid if m.grid == "beta" else result.kappa_grid
      i = best_index(traj)
      div = np.asarray(traj.diverged)
      first = report.format_value(grid[div].min()) if div.any() else "none"
      rows.append(
        [
          name,
          m.name,
          f"{m.grid}={report.format_value(grid[i])}" if i >= 0 else "-",
          f"{traj.best[i]:.4g}" if i >= 0 else "-",
          f"{traj.loss[i, -1]:.4g}" if i >= 0 else "-",
          f"{div.sum()}/{len(grid)}",
          first,
        ]
      )
  return report.format_table(
    ["problem", "method", "best grid value", "best L", "final L", "diverged", "smallest diverging"],
    rows,
  )


def to_json(result: Figure1Result, methods: Sequence[methods_lib.Variant] = METHODS) -> dict:
  """Every number of the experiment, as a JSON-ready dict."""
  out = {
    "steps": result.steps,
    "beta_grid": result.beta_grid,
    "kappa_grid": result.kappa_grid,
    "seconds": result.seconds,
    "problems": {},
  }
  for name, per_method in result.runs.items():
    p = PROBLEMS[name]
    entry = {
      "note": p.note,
      "start": p.start,
      "learning_rate": p.learning_rate,
      "minimum": p.minimum,
      "constant": result.constant[name]._asdict(),
      "methods": {},
    }
    for m in methods:
      traj = per_method[m.name]
      entry["methods"][m.name] = {
        "grid": m.grid,
        "best_index": best_index(traj),
        **traj._asdict(),
      }
    out["problems"][name] = entry
  return out


def plot(result: Figure1Result, path: str, methods: Sequence[methods_lib.Variant] = METHODS):
  """Saves the figure, one row per problem: the loss surface with each
  method's trajectory at its best grid value; the objective and the learning
  rate along those runs; the best (solid) and final (dashed) objective against
  ``beta`` and against ``kappa``, diverged runs marked with crosses at the top
  of the panel."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(result.runs)
  fig, axes = plt.subplots(len(names), 5, figsize=(25, 4.6 * len(names)), squeeze=False)
  colors = dict(zip([m.name for m in methods], plt.cm.tab10.colors))
  for row, name in zip(axes, names):
    p, per_method = PROBLEMS[name], result.runs[name]
    const = result.constant[name]
    chosen = {m.name: best_index(per_method[m.name]) for m in methods}
    ax = row[0]
    xs = np.linspace(*p.xlim, 300)
    ys = np.linspace(*p.ylim, 300)
    xx, yy = np.meshgrid(xs, ys)
    zz = np.asarray(
      jax.vmap(jax.vmap(lambda a, b: p.fn(jnp.stack([a, b]))))(jnp.asarray(xx), jnp.asarray(yy))
    )
    ax.contourf(xx, yy, np.log10(zz - p.minimum + 1e-3), levels=30, cmap="Greys")
    ax.plot(*const.points.T, color="k", ls=":", lw=1.5, label="constant eta_0")
    for m in methods:
      if chosen[m.name] >= 0:
        pts = per_method[m.name].points[chosen[m.name]]
        ax.plot(pts[:, 0], pts[:, 1], color=colors[m.name], lw=1.5, label=m.name)
    ax.plot(*p.start, "o", color="k")
    ax.set(
      xlim=p.xlim,
      ylim=p.ylim,
      xlabel="x",
      ylabel="y",
      title=f"{p.note}\nlog10(L - min L), best grid value of each method",
    )
    ax.legend(fontsize=7)
    for ax, field, label in (
      (row[1], "loss", "L(w_t) - min L"),
      (row[2], "learning_rate", "learning rate"),
    ):
      if field == "loss":
        ax.plot(const.loss - p.minimum, color="k", ls=":", label="constant eta_0")
      for m in methods:
        i = chosen[m.name]
        if i >= 0:
          v = getattr(per_method[m.name], field)[i]
          ax.plot(v - p.minimum if field == "loss" else v, color=colors[m.name], label=m.name)
      ax.set(yscale="log", xlabel="step", ylabel=label, title=f"{label} at the best grid value")
      ax.legend(fontsize=7)
    for ax, grid_kind in ((row[3], "beta"), (row[4], "kappa")):
      grid = result.beta_grid if grid_kind == "beta" else result.kappa_grid
      top = const.loss[0]
      for m in methods:
        if m.grid != grid_kind:
          continue
        traj = per_method[m.name]
        div = np.asarray(traj.diverged)
        ax.plot(
          grid,
          np.where(div, np.nan, traj.best),
          "o-",
          color=colors[m.name],
          label=f"{m.name}: best",
          ms=3,
        )
        ax.plot(
          grid,
          np.where(div, np.nan, traj.loss[:, -1]),
          "--",
          color=colors[m.name],
          lw=1,
          label=f"{m.name}: final",
        )
        ax.plot(grid[div], np.full(div.sum(), top), "x", color=colors[m.name])
      ax.axhline(const.best, color="k", ls=":", label="constant eta_0")
      ax.set(
        xscale="log",
        yscale="log",
        xlabel=grid_kind,
        ylabel=f"L within {result.steps} steps",
        title=f"best / final objective vs {grid_kind} (x: diverged)",
      )
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
