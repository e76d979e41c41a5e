# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Section 5 of the paper: LRS-OPT against HD, RTHO and MARTHE schedules.

  python benchmarks/schedules.py --preset fast          # digits + MNIST-1D, 3x64 net, ~5 min on 2 CPU cores
  python benchmarks/schedules.py --preset medium        # figure 2 at the paper's 3x500 net, 5 seeds
  python benchmarks/schedules.py --preset paper --data ~/mnist   # the paper's sizes on real MNIST
  python benchmarks/schedules.py --preset tiny          # seconds, a smoke test
  python benchmarks/schedules.py --preset paper --estimate   # time probes, extrapolate

Writes results.json, table.md and figure2_<dataset>.png to --out
(default results/schedules/) and prints the summary table. See
lab/marthe_lab/schedules.py for the protocol.
"""

import argparse
import dataclasses
import sys

from marthe_lab import data as data_lib
from marthe_lab import schedules


def main(argv=None) -> int:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # files only, no display
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(schedules.PRESETS), default="fast")
  parser.add_argument(
    "--out", default="results/schedules/", help="output directory (default: results/schedules/)"
  )
  parser.add_argument(
    "--data",
    default=None,
    metavar="PATH",
    help="a directory with the four MNIST IDX files (gz or raw): run on "
    "real MNIST (7,000 train / 700 validation, as the paper) instead of "
    "the preset's datasets",
  )
  parser.add_argument(
    "--datasets",
    default=None,
    help="comma-separated subset of digits,mnist1d (default: the preset's)",
  )
  parser.add_argument(
    "--seeds", type=int, default=None, help="override the preset's number of seeds"
  )
  parser.add_argument(
    "--lrs-opt-steps", type=int, default=None, help="override the preset's most LRS-OPT outer steps"
  )
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument(
    "--estimate",
    action="store_true",
    help="only time short probes and extrapolate the preset's run time "
    "(e.g. --preset paper --estimate)",
  )
  args = parser.parse_args(argv)

  preset = schedules.PRESETS[args.preset]
  changes = {}
  if args.seeds is not None:
    changes["seeds"] = args.seeds
    changes["lrs_opt_seeds"] = min(preset.lrs_opt_seeds, args.seeds)
  if args.lrs_opt_steps is not None:
    changes["lrs_opt_steps"] = args.lrs_opt_steps
  if args.datasets is not None:
    changes["datasets"] = tuple(args.datasets.split(","))
  if changes:
    preset = dataclasses.replace(preset, note=preset.note + f"; overridden: {changes}", **changes)
  datasets = None
  if args.data is not None:
    datasets = [data_lib.mnist_idx(args.data)]
  if args.estimate:
    for d in datasets or [data_lib.load(name) for name in preset.datasets]:
      schedules.estimate(preset, d)
    return 0
  schedules.run(preset, args.out, datasets=datasets, progress=not args.no_progress)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
