"""Learning-rate methods on a character-level transformer (Flax NNX), on text that ships with Python.

Usage:
  python benchmarks/lm.py                  # --preset fast: minutes on 2 CPU cores
  python benchmarks/lm.py --preset tiny    # seconds, for CI
  python benchmarks/lm.py --preset gpu     # a larger model, for an accelerator

The corpus is CPython's pydoc_data.topics (contiguous train / validation /
test blocks, random windows; nothing downloaded), the model a decoder-only
transformer (lab/marthe_lab/lm.py), every method on the same seeds,
windows and horizon (lab/marthe_lab/lm.py): AdamW constant,
AdamW warm-up + cosine with its peak tuned on a grid, Prodigy, D-Adapt AdamW,
schedule-free AdamW, HD and MARTHE over AdamW (beta / kappa by
select_hyper_lr_step), and MARTHE's knob-free modes. Prints a table (final
validation and test loss in bits per character, mean ± std over seeds; values
the user sets; runs needed; cost against constant AdamW measured in this
process), and writes lm.json, lm.md, lm.png (validation loss against step and
wall time) and lm_lr.png (learning rates) under --out.
"""

import argparse
import os
import time

import matplotlib
from tqdm import tqdm

from marthe_lab import lm
from marthe_lab import report


def run(preset: str, out: str, methods=None, seeds=None, progress: bool = True) -> dict:
  config = lm.PRESETS[preset]
  if seeds:
    config = config._replace(seeds=seeds)
  methods = list(methods or lm.METHODS)
  names = ["adamw"] + [m for m in methods if m != "adamw"]
  bar = tqdm(total=len(names), desc="lm", disable=not progress)

  def step(name):
    bar.set_postfix_str(name)
    bar.update()

  start = time.perf_counter()
  bench = lm.run_benchmark(config, names, progress=step)
  bar.close()
  elapsed = time.perf_counter() - start
  result = dict(
    preset=preset,
    config=config._asdict(),
    wall_s=elapsed,
    **report.machine(),
    **bench,
  )
  os.makedirs(out, exist_ok=True)
  report.write_json(os.path.join(out, "lm.json"), result)
  table = report.format_table(lm.TABLE_HEADER, lm.table_rows(bench["methods"]))
  with open(os.path.join(out, "lm.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  c = config
  print(
    f"\n{c.seeds} seeds, T = {c.steps}, {c.layers} layers of width {c.width}, context "
    f"{c.context}, batch {c.batch}, {bench['n_params']:,} params; wall time "
    f"{elapsed:.0f} s. 'time x AdamW': everything the method cost (compilation, "
    "selection or grid runs, the run) over the same for constant AdamW; 'run x "
    "AdamW': one run over one constant-AdamW run measured just before it."
  )
  lm.plot(bench, os.path.join(out, "lm.png"), os.path.join(out, "lm_lr.png"))
  return result


def main(argv=None):
  matplotlib.use("Agg")  # files only: the figures are written, not shown
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(lm.PRESETS), default="fast")
  parser.add_argument(
    "--methods",
    nargs="+",
    choices=list(lm.METHODS),
    help="a subset of the methods (constant AdamW always runs)",
  )
  parser.add_argument("--seeds", type=int, help="override the preset's seeds")
  parser.add_argument("--out", default=None, help="output folder (default results/lm/<preset>)")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  out = args.out or os.path.join("results", "lm", args.preset)
  return run(args.preset, out, args.methods, args.seeds, progress=not args.no_progress)


if __name__ == "__main__":
  main()
