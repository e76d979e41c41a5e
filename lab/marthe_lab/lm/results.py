# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The language-model benchmark's summaries, table and figures (the caller picks the Matplotlib backend)."""

import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import numpy as np

from marthe_lab import report
from marthe_lab.lm.corpus import LN2
from marthe_lab.lm.model import Config
from marthe_lab.lm.runs import Trace
from marthe_lab.lm.methods import METHODS


class Run(NamedTuple):
  """One seed's run (leading axes when vmapped)."""

  trace: Trace
  val_loss: jax.Array  # final, nats, every non-overlapping validation window
  test_loss: jax.Array  # final, nats, every non-overlapping test window
  counters: dict  # MARTHE's nonfinite / safeguard / repaired counts (0 elsewhere)


class Timing(NamedTuple):
  """Seconds: compiling, selecting, the runs; the reference run measured just before."""

  compile_s: float
  select_s: float
  run_s: float  # every full run (the whole grid for 'cosine')
  runs: int  # full runs per seed
  reference_s: float

  @property
  def total_s(self) -> float:
    return self.compile_s + self.select_s + self.run_s


class Result(NamedTuple):
  """What one method produced: the reported run per seed and its cost."""

  method: str
  run: Run  # NumPy, leading axis S
  timing: Timing
  hyper: np.ndarray  # [S] the peak / beta / kappa used (nan if none)
  settings: int  # settings trained per seed (grid points, candidates + 1)
  grid_val: Optional[np.ndarray] = None  # [len(peaks), S] the grid's final val losses
  diverged: Optional[np.ndarray] = None  # [S, C] the selection's verdicts


def bits(nats: Any) -> np.ndarray:
  """Nats to bits."""
  return np.asarray(nats, np.float64) / LN2


def summarize(result: Result, reference: Timing, config: Config) -> dict:
  """JSON-ready summary; times as ratios to constant AdamW's.

  ``time.total_ratio``: everything the method cost (compilation, selection,
  every run) over constant AdamW's compilation and run; ``time.run_ratio``:
  one full run over one constant-AdamW run measured just before.
  """
  m, r, t = METHODS[result.method], result.run, result.timing
  stat = lambda a: dict(mean=float(np.mean(a)), std=float(np.std(a)), per_seed=a)
  lr = np.asarray(r.trace.learning_rate, np.float64)  # [S, steps] or [S, steps, K]
  scalar_lr = np.exp(np.mean(np.log(lr), axis=-1)) if lr.ndim == 3 else lr
  has_lr = bool(np.isfinite(scalar_lr).any())
  # The curve on a time axis: the selection (or the other grid runs) first.
  before = t.select_s + (t.run_s - t.run_s / t.runs)
  points = np.arange(len(r.trace.curve[0])) * config.eval_every
  elapsed = before + t.run_s / t.runs * points / config.steps
  return dict(
    method=m.name,
    label=m.label,
    family=m.registry.family,
    notes=m.notes,
    user_set=list(m.user_set),
    n_user_set=len(m.user_set),
    tune=m.tune,
    hyper=result.hyper,
    settings=result.settings,
    grid=dict(peaks=config.peaks, val_bits=bits(result.grid_val))
    if result.grid_val is not None
    else None,
    candidate_diverged=result.diverged,
    val_bits=stat(bits(r.val_loss)),
    test_bits=stat(bits(r.test_loss)),
    diverged=int(np.sum(~np.isfinite(r.val_loss) | (r.val_loss > r.trace.curve[:, 0]))),
    counters={k: v for k, v in r.counters.items()},
    seeds=int(len(r.val_loss)),
    time=dict(
      **t._asdict(),
      total_s=t.total_s,
      run_ratio=(t.run_s / t.runs) / t.reference_s,
      total_ratio=t.total_s / (reference.compile_s + t.reference_s),
    ),
    curve=dict(
      step=points,
      seconds=elapsed,
      ref_run_s=t.reference_s,
      val_bits_mean=bits(r.trace.curve).mean(0),
    ),
    learning_rate=dict(
      mean=np.nanmean(scalar_lr, 0) if has_lr else None,
      groups=np.nanmean(lr, 0) if lr.ndim == 3 else None,
      final_mean=float(np.nanmean(scalar_lr[:, -1])) if has_lr else None,
    ),
    train_bits_mean=bits(r.trace.train_loss).mean(0),
  )


TABLE_HEADER = (
  "method",
  "val bits/char",
  "test bits/char",
  "# set",
  "# runs",
  "chosen",
  "time x AdamW",
  "run x AdamW",
  "diverged",
  "final lr",
)


def _chosen(s: dict) -> str:
  if s["tune"] is None:
    return "-"
  name = "peak" if s["tune"] == "grid" else s["tune"]
  vals = sorted({float(v) for v in s["hyper"] if math.isfinite(v)})
  return f"{name}=" + "/".join(report.format_value(v) for v in vals)


def table_rows(methods: Sequence[dict]) -> list[list[str]]:
  """One row per method."""
  rows = []
  for s in methods:
    final = s["learning_rate"]["final_mean"]
    rows.append(
      [
        s["label"],
        report.mean_std(s["val_bits"]["per_seed"], 1.0, 3),
        report.mean_std(s["test_bits"]["per_seed"], 1.0, 3),
        str(s["n_user_set"]),
        str(s["settings"]),
        _chosen(s),
        f"{s['time']['total_ratio']:.2f}",
        f"{s['time']['run_ratio']:.2f}",
        f"{s['diverged']}/{s['seeds']}",
        "-" if final is None or not math.isfinite(final) else f"{final:.2e}",
      ]
    )
  return rows


# ----------------------------------------------------------------------------
# Figures.


def plot(out: dict, path: str, lr_path: str) -> None:
  """Validation curves against steps and against wall time (``path``), and the
  learning-rate trajectories (``lr_path``), means over seeds."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cmap = plt.get_cmap("tab10")
  methods = out["methods"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
  for i, s in enumerate(methods):
    c = s["curve"]
    y = np.asarray(c["val_bits_mean"], np.float64)
    ls = "--" if s["family"] == "lr-free" else "-"
    axes[0].plot(c["step"], y, ls, color=cmap(i % 10), label=s["label"])
    axes[1].plot(np.asarray(c["seconds"]) / c["ref_run_s"], y, ls, color=cmap(i % 10))
  axes[0].set(xlabel="step", ylabel="validation bits/char (mean over seeds)")
  axes[1].set(xlabel="wall time / one constant-AdamW run (selection or grid runs first)")
  finite = np.concatenate([np.asarray(s["curve"]["val_bits_mean"], np.float64) for s in methods])
  finite = finite[np.isfinite(finite) & (finite > 0)]
  for ax in axes:  # diverged runs (nan, or huge) stay off the chart
    ax.set_ylim(finite.min() - 0.05 if finite.size else 0.0, 5.0)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7.5, 4.4))
  for i, s in enumerate(methods):
    lr = s["learning_rate"]
    if lr["groups"] is not None:
      for g in np.asarray(lr["groups"], np.float64).T:
        ax.plot(g, ":", color=cmap(i % 10), lw=0.8)
    if lr["mean"] is not None:
      ax.plot(
        np.asarray(lr["mean"], np.float64),
        color=cmap(i % 10),
        label=s["label"],
        ls="--" if s["family"] == "lr-free" else "-",
      )
  ax.set(
    xlabel="step",
    ylabel="learning rate / effective step (mean over seeds)",
    yscale="log",
    ylim=(1e-5, 1.0),
  )  # rates above 1 have diverged
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(lr_path, dpi=110)
  plt.close(fig)
