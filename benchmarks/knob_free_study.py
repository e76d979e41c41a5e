"""Knob-free MARTHE: the step-size, horizon and tangent study behind its default.

Usage:
  python benchmarks/knob_free_study.py                  # --preset fast: the sweep
  python benchmarks/knob_free_study.py --preset paper   # MLP 3x500, the default only
  python benchmarks/knob_free_study.py --preset tiny    # seconds, for CI

The protocol of benchmarks/lr_free.py (lab/marthe_lab/lr_free.py):
same data splits, w_0 and minibatches per seed, batches of 100, T = 512,
eta_0 = 0.01, E the validation loss (its minibatch gradient as val_grads),
value= the training minibatch loss. On digits (MLP), MNIST-1D (MLP) and
MNIST-1D (1-D CNN), knob-free MARTHE over SGD, marthe(sgd, eta_0,
step_size=s, mu=mu, first_order=f), is swept over

  step_size s in {0.01, 0.03, 0.1, 0.3} (log-units of the learning rate per
    step),
  horizon mu in {"adaptive", "smoothed", 0.9, 0.99, 1.0},
  first_order f in {True, False}

(40 configurations per task; one compiled program per (mu, f), the step size
a traced argument). References, same seeds: constant SGD (the time
reference), Prodigy, and constant SGD at the best rate of a half-decade grid
in hindsight (chosen on the mean validation accuracy). Each configuration
reports mean ± std test and validation accuracy, divergences (a non-finite
training loss, or a final validation loss above the initial one: lr_free's
rule), safeguard and non-finite events of the optimizer state, the final
learning rate, and one run's time over one SGD run's (measured in this
process).

--preset paper runs the section-5 MLP 3x500 on the two MLP tasks with the
package's default only (marthe(sgd, eta_0), nothing else set), to check that
the default does not diverge at that size.

Writes knob_free_study.json, knob_free_study.md (the table) and
knob_free_study.png (test accuracy against the step size, one line per
(mu, first_order), the references dashed) under --out.
"""

import argparse
import os
import time

import jax
import numpy as np
from tqdm import tqdm

import marthe_optax as mo
from marthe_lab import lr_free
from marthe_lab import methods
from marthe_lab import report
from marthe_lab import schedules

# 0.3 extends the grid past 0.1, where the CNN's best configurations sat.
STEP_SIZES = (0.01, 0.03, 0.1, 0.3)
MUS = ("adaptive", "smoothed", 0.9, 0.99, 1.0)
FIRST_ORDER = (True, False)
REFERENCES = ("prodigy", "sgd_best")

PRESETS = {
  # The lr_free fast sizes (MLP 3x64, T = 512, batch 100), 5 seeds.
  "fast": dict(section5="fast", tasks=tuple(lr_free.TASKS), seeds=5, sweep=True),
  # Section 5's MLP 3x500 on the MLP tasks: the default only.
  "paper": dict(section5="paper", tasks=("digits-mlp", "mnist1d-mlp"), seeds=5, sweep=False),
  # A smoke test (numbers meaningless): T = 24, MLP 3x16, a reduced sweep.
  "tiny": dict(
    section5="tiny",
    tasks=("digits-mlp",),
    seeds=2,
    sweep=True,
    step_sizes=(0.01, 0.1),
    mus=("smoothed", 1.0),
  ),
}


def sweep_method(mu, first_order: bool, step_sizes) -> lr_free.Method:
  """Knob-free MARTHE over SGD at ``(mu, first_order)``, ``step_size`` the
  traced grid value (every value of ``step_sizes`` runs, for every seed)."""
  name = f"kf_mu={mu}_fo={first_order}"
  registry = methods.Method(
    name,
    lambda inner, lr, h: mo.marthe(
      inner, learning_rate=lr, step_size=h, mu=mu, first_order=first_order
    ),
    ("val_grads", "value") + (() if first_order else ("value_fn",)),
    value="step_size",
  )
  return lr_free.Method(
    name,
    f"knob-free mu={mu} first_order={first_order}",
    "hypergradient",
    registry,
    ("learning_rate",),
    selects="step_size",
    grid=tuple(step_sizes),
  )


def _stats(run: lr_free.Run, run_ratio: float) -> dict:
  """Per-seed results and their summary, JSON-ready."""
  pct = lambda a: np.asarray(a, np.float64)
  counts = lambda a: None if not np.all(np.isfinite(a)) else [int(v) for v in np.asarray(a)]
  final_lr = np.asarray(run.learning_rate, np.float64)[:, -1]
  return dict(
    val_accuracy=pct(run.val_accuracy),
    test_accuracy=pct(run.test_accuracy),
    val_mean=float(np.mean(run.val_accuracy)),
    test_mean=float(np.mean(run.test_accuracy)),
    diverged=int(np.sum(run.diverged)),
    nonfinite_loss=int(np.sum(~np.all(np.isfinite(run.train_loss), -1))),
    safeguard_count=counts(run.safeguard_count),
    nonfinite_count=counts(run.nonfinite_count),
    repaired_count=counts(run.repaired_count),
    final_lr=final_lr,
    lr_mean=np.nanmean(np.asarray(run.learning_rate, np.float64), axis=0),
    run_ratio=run_ratio,
  )


def _row(task, label, step, mu, first_order, s) -> list:
  total = lambda c: "-" if c is None else str(sum(c))
  lr = np.asarray(s["final_lr"], np.float64)
  lr_text = f"{np.nanmean(lr):.2e}" if np.isfinite(lr).any() else "-"
  return [
    task,
    label,
    step,
    mu,
    first_order,
    report.mean_std(s["val_accuracy"]),
    report.mean_std(s["test_accuracy"]),
    f"{s['diverged']}/{len(s['val_accuracy'])}",
    total(s["safeguard_count"]),
    total(s["nonfinite_count"]),
    lr_text,
    f"{s['run_ratio']:.2f}",
  ]


HEADER = (
  "task",
  "method",
  "step_size",
  "mu",
  "first_order",
  "val acc %",
  "test acc %",
  "diverged",
  "safeguards",
  "nonfinite",
  "final lr",
  "run x SGD",
)


def run_task(task_name, config, seeds, chunk, sweep, step_sizes, mus, bar):
  """The references and the knob-free configurations on one task."""
  prepared = lr_free.prepare(lr_free.TASKS[task_name], config, seeds)
  out = dict(references={}, configs=[])
  sgd = lr_free.Runner("sgd", prepared, config, chunk)
  names = REFERENCES + (() if sweep else ("marthe_kf",))
  for name in ("sgd",) + names:
    bar.set_postfix_str(f"{task_name}/{name}")
    runner = sgd if name == "sgd" else lr_free.Runner(name, prepared, config, chunk)
    result = lr_free.run_method(runner, None if name == "sgd" else sgd)
    t = result.timing
    s = _stats(result.run, (t.run_s / t.runs_per_seed) / t.reference_s)
    if result.selected is not None and runner.spec.grid is not None:
      s["selected"] = float(result.selected[0])
      s["grid"] = list(runner.grid)
      s["grid_val_mean"] = np.mean(result.candidate_val_accuracy, 0)
      s["grid_diverged"] = np.sum(result.candidate_diverged, 0)
    s["compile_s"], s["label"] = t.compile_s, runner.spec.label
    out["references"][name] = s
    bar.update()
  if not sweep:
    return out
  for mu in mus:
    for first_order in FIRST_ORDER:
      bar.set_postfix_str(f"{task_name}/mu={mu}/first_order={first_order}")
      runner = lr_free.Runner(sweep_method(mu, first_order, step_sizes), prepared, config, chunk)
      ref_s = sgd.timed()[1]
      runs, seconds = runner.timed()  # [len(step_sizes), S, ...]
      for i, step in enumerate(step_sizes):
        run = jax.tree.map(lambda a, i=i: a[i], runs)
        s = _stats(run, (seconds / len(step_sizes)) / ref_s)
        s.update(step_size=step, mu=mu, first_order=first_order, compile_s=runner.compile_s)
        out["configs"].append(s)
      bar.update()
  return out


def table_rows(tasks: dict) -> list:
  rows = []
  for task, t in tasks.items():
    for name, s in t["references"].items():
      step = f"lr={report.format_value(s['selected'])}" if "selected" in s else "-"
      default = "default" if name == "marthe_kf" else "-"
      rows.append(_row(task, s["label"], default if step == "-" else step, default, default, s))
    for s in t["configs"]:
      rows.append(
        _row(task, "MARTHE knob-free (SGD)", s["step_size"], s["mu"], s["first_order"], s)
      )
  return rows


def ranking(tasks: dict) -> list:
  """Configurations ranked by their mean validation accuracy over tasks.

  Returns:
    Rows ``(step_size, mu, first_order, mean val %, mean test %, diverged
    seeds, safeguard events, per-task test means)``, best first.
  """
  keys = {}
  for task, t in tasks.items():
    for s in t["configs"]:
      keys.setdefault((s["step_size"], str(s["mu"]), s["first_order"]), []).append((task, s))
  rows = []
  for (step, mu, fo), items in keys.items():
    if len(items) != len(tasks):
      continue
    val = np.mean([s["val_mean"] for _, s in items])
    test = np.mean([s["test_mean"] for _, s in items])
    div = sum(s["diverged"] for _, s in items)
    guards = sum(sum(s["safeguard_count"] or [0]) for _, s in items)
    gaps = []
    for task, s in items:
      refs = tasks[task]["references"]
      best = max(refs[r]["test_mean"] for r in REFERENCES)
      gaps.append(f"{100 * (s['test_mean'] - best):+.1f}")
    rows.append(
      [
        step,
        mu,
        fo,
        f"{100 * val:.1f}",
        f"{100 * test:.1f}",
        str(div),
        str(guards),
        " / ".join(gaps),
      ]
    )
  rows.sort(key=lambda r: -float(r[3]))
  return rows


RANK_HEADER = (
  "step_size",
  "mu",
  "first_order",
  "val acc % (mean of tasks)",
  "test acc % (mean of tasks)",
  "diverged seeds",
  "safeguards",
  "test - max(Prodigy, best const) per task",
)


def plot(tasks: dict, path: str) -> None:
  """One panel per task: mean test accuracy against the step size, one line
  per (mu, first_order); the references (and, without the sweep, the
  default) as dashed levels."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(tasks)
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
  cmap = plt.get_cmap("tab10")
  for ax, name in zip(axes[0], names):
    t = tasks[name]
    if not t["configs"]:  # no sweep: the references and the default, as bars
      refs = list(t["references"].values())
      acc = [100 * np.asarray(s["test_accuracy"], np.float64) for s in refs]
      ax.bar(
        range(len(refs)),
        [a.mean() for a in acc],
        yerr=[a.std() for a in acc],
        capsize=3,
        color=[plt.get_cmap("Set1")(j % 9) for j in range(len(refs))],
      )
      ax.set_xticks(
        range(len(refs)), [s["label"] for s in refs], rotation=20, ha="right", fontsize=8
      )
      low = min(a.mean() - a.std() for a in acc)
      ax.set_ylim(max(0.0, low - 5), 100)
      ax.set_ylabel("test accuracy % (mean ± std over seeds)")
      ax.set_title(name, fontsize=10)
      ax.grid(alpha=0.3, axis="y")
      continue
    lines = {}
    for s in t["configs"]:
      lines.setdefault((str(s["mu"]), s["first_order"]), []).append(s)
    colors = list(dict.fromkeys(mu for mu, _ in lines))
    for (mu, fo), ss in lines.items():
      x = [s["step_size"] for s in ss]
      y = [100 * np.mean(s["test_accuracy"]) for s in ss]
      e = [100 * np.std(s["test_accuracy"]) for s in ss]
      ax.errorbar(
        x,
        y,
        yerr=e,
        marker="o" if fo else "s",
        capsize=3,
        color=cmap(colors.index(mu) % 10),
        ls="-" if fo else ":",
        label=f"mu={mu}, {'first-order' if fo else 'full'}",
      )
    refs = list(t["references"].values())
    for j, s in enumerate(refs):
      ax.axhline(
        100 * s["test_mean"],
        color=plt.get_cmap("Set1")(j % 9),
        alpha=0.7,
        ls="--",
        lw=1.2,
        label=f"{s['label']} ({100 * s['test_mean']:.1f})",
      )
    ax.set_xscale("log")
    ax.set_xlabel("step_size (log-units of the learning rate per step)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3, which="both")
  if any(tasks[n]["configs"] for n in names):
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(preset: str, out: str, tasks=None, seeds=None, progress=True) -> dict:
  cfg = PRESETS[preset]
  section5 = schedules.PRESETS[cfg["section5"]]
  config = section5.config
  n_seeds = seeds or cfg["seeds"]
  tasks = tuple(tasks or cfg["tasks"])
  sweep = cfg["sweep"]
  step_sizes = cfg.get("step_sizes", STEP_SIZES)
  mus = cfg.get("mus", MUS)
  units = 1 + len(REFERENCES) + (len(mus) * len(FIRST_ORDER) if sweep else 1)
  bar = tqdm(total=units * len(tasks), desc="knob_free_study", disable=not progress)
  start = time.perf_counter()
  tasks_out = {}
  for task in tasks:
    tasks_out[task] = run_task(
      task, config, list(range(n_seeds)), section5.chunk, sweep, step_sizes, mus, bar
    )
  bar.close()
  elapsed = time.perf_counter() - start
  result = dict(
    preset=preset,
    config=dict(
      config._asdict(),
      seeds=n_seeds,
      chunk=section5.chunk,
      step_sizes=step_sizes if sweep else None,
      mus=[str(m) for m in mus] if sweep else None,
      first_order=FIRST_ORDER if sweep else None,
      best_constant_grid=lr_free.BEST_CONSTANT_GRID,
    ),
    wall_s=elapsed,
    **report.machine(),
    tasks=tasks_out,
  )
  os.makedirs(out, exist_ok=True)
  report.write_json(os.path.join(out, "knob_free_study.json"), result)
  table = report.format_table(HEADER, table_rows(tasks_out))
  text = table
  if sweep:
    text += "\n\n" + report.format_table(RANK_HEADER, ranking(tasks_out))
  with open(os.path.join(out, "knob_free_study.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  print(
    f"\n{n_seeds} seeds, T = {config.steps}, MLP {config.hidden}, wall "
    f"time {elapsed:.0f} s. 'run x SGD': one training run's execution "
    "over one constant-SGD run's, measured next to it (the best constant: "
    "per grid value). 'safeguards' / 'nonfinite': events summed over "
    "seeds."
  )
  plot(tasks_out, os.path.join(out, "knob_free_study.png"))
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
  parser.add_argument("--tasks", nargs="+", choices=list(lr_free.TASKS))
  parser.add_argument("--seeds", type=int, help="override the preset's seeds")
  parser.add_argument(
    "--out", default=None, help="output folder (default results/knob_free/<preset>)"
  )
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  out = args.out or os.path.join("results", "knob_free", args.preset)
  return run(args.preset, out, args.tasks, args.seeds, progress=not args.no_progress)


if __name__ == "__main__":
  main()
