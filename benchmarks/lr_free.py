"""MARTHE against fixed schedules and Optax's learning-rate-free optimizers.

Usage:
  python benchmarks/lr_free.py                  # --preset fast: minutes on 2 CPU cores
  python benchmarks/lr_free.py --preset tiny    # seconds, for CI
  python benchmarks/lr_free.py --preset paper   # section 5's MLP 3x500, 20 seeds

On digits (MLP), MNIST-1D (MLP) and MNIST-1D (1-D CNN), with one protocol for
every method (see lab/marthe_lab/lr_free.py): constant, cosine and
SGDR schedules of SGD; HD, RTHO and MARTHE (their beta / kappa chosen per seed
by marthe_optax.selection.select_hyper_lr_step over whole-horizon runs of its
default candidates 1, 0.1, ..., 1e-9: divergence only, no validation grid);
knob-free MARTHE (nothing set but eta_0; default, first-order and full
tangent); constant SGD at the best rate of a half-decade grid in hindsight
(chosen on validation accuracy); on the MNIST-1D CNN, Adam at 1e-3 and
knob-free MARTHE over Adam; optax.contrib's prodigy, dadapt_adamw, dog,
mechanize(sgd), schedule_free_sgd and SGD + reduce_on_plateau. Prints a table
(mean ± std over seeds of the final validation and test accuracy,
hyperparameters the user sets, wall time against constant SGD measured in
this process, divergences, knob-free MARTHE's safeguard events, final
learning rate), and writes lr_free.json, lr_free.png (accuracy against wall
time) and lr_free_schedules.png under --out.
"""

import argparse
import os
import time

import matplotlib
from tqdm import tqdm

from marthe_lab import lr_free
from marthe_lab import report
from marthe_lab import schedules

# The inner problem (data, MLP, batch size, T, eta_0, seeds, chunk) is the
# section-5 experiment's preset of the same name (experiments/schedules.py).
PRESETS = {
  # Section 5's sizes: MLP 3x500, T = 512, batches of 100, 20 seeds.
  "paper": dict(section5="paper", tasks=tuple(lr_free.TASKS), repeats=1, min_timing_s=0.0),
  # Same data, T, batches and eta_0; MLP 3x64 and 3 seeds: minutes on two
  # CPU cores. Short runs are timed up to 3 times (median).
  "fast": dict(section5="fast", tasks=tuple(lr_free.TASKS), repeats=3, min_timing_s=5.0),
  # A smoke test of the whole pipeline (numbers meaningless).
  "tiny": dict(section5="tiny", tasks=("digits-mlp",), repeats=1, min_timing_s=0.0),
}


def run(preset: str, out: str, methods=None, tasks=None, seeds=None, progress: bool = True) -> dict:
  cfg = dict(PRESETS[preset])
  section5 = schedules.PRESETS[cfg["section5"]]
  config = section5.config
  n_seeds = seeds or section5.seeds
  tasks = tuple(tasks or cfg["tasks"])
  methods = list(methods or lr_free.METHODS)
  total = sum(len(lr_free.task_methods(t, methods)) for t in tasks)
  bar = tqdm(total=total, desc="lr_free", disable=not progress)
  start = time.perf_counter()

  def step(name):
    bar.set_postfix_str(name)
    bar.update()

  tasks_out = lr_free.run_benchmark(
    tasks,
    methods,
    config,
    list(range(n_seeds)),
    section5.chunk,
    cfg["repeats"],
    cfg["min_timing_s"],
    progress=step,
  )
  bar.close()
  elapsed = time.perf_counter() - start
  result = dict(
    preset=preset,
    config=dict(
      config._asdict(),
      seeds=n_seeds,
      chunk=section5.chunk,
      candidates=lr_free.candidates(),
      timing_repeats=cfg["repeats"],
      min_timing_s=cfg["min_timing_s"],
    ),
    wall_s=elapsed,
    **report.machine(),
    tasks=tasks_out,
  )
  os.makedirs(out, exist_ok=True)
  report.write_json(os.path.join(out, "lr_free.json"), result)
  table = report.format_table(lr_free.TABLE_HEADER, lr_free.table_rows(tasks_out))
  with open(os.path.join(out, "lr_free.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  print(
    f"\n{n_seeds} seeds, T = {config.steps}, MLP {config.hidden}, wall "
    f"time {elapsed:.0f} s. 'time x SGD': everything the method cost on "
    "the task (compilation, every training run, the selection's runs for "
    "HD/RTHO/MARTHE and every grid run of the best constant) over the "
    "same for constant SGD; 'run x SGD': one training run's execution "
    "over one SGD run's; 'safeguards': divergence-safeguard events of "
    "knob-free MARTHE, summed over seeds."
  )
  lr_free.plot_accuracy_vs_time(tasks_out, os.path.join(out, "lr_free.png"))
  lr_free.plot_schedules(tasks_out, os.path.join(out, "lr_free_schedules.png"))
  return result


def main(argv=None):
  matplotlib.use("Agg")  # files only: the figures are written, not shown
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
  parser.add_argument(
    "--methods",
    nargs="+",
    choices=list(lr_free.METHODS),
    help="a subset of the methods (constant SGD always runs)",
  )
  parser.add_argument("--tasks", nargs="+", choices=list(lr_free.TASKS))
  parser.add_argument("--seeds", type=int, help="override the preset's seeds")
  parser.add_argument(
    "--out", default=None, help="output folder (default results/lr_free/<preset>)"
  )
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  out = args.out or os.path.join("results", "lr_free", args.preset)
  return run(args.preset, out, args.methods, args.tasks, args.seeds, progress=not args.no_progress)


if __name__ == "__main__":
  main()
