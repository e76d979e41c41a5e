# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Figure 1 of the paper: HD, RTHO and MARTHE on Beale and smoothed Bukin N. 6.

  python benchmarks/figure1.py                 # 500 steps, half-decade grids (~20 s on CPU)
  python benchmarks/figure1.py --steps 100 --coarse

E = L; gradient descent from a fixed point; every method over a grid of
hyper-learning rates (beta, or kappa for full MARTHE). Writes figure1.json,
figure1.md and figure1.png to --out (default results/figure1/) and prints the
table. Setup (starting points, eta_0, Bukin's eps = 1e-2) in
lab/marthe_lab/toy_functions.py.
"""

import argparse
import os
import sys

import numpy as np

from marthe_lab import report
from marthe_lab import figure1
from marthe_lab import toy_functions


def main(argv=None) -> int:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")  # files only, no display
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="results/figure1/")
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--coarse", action="store_true", help="decade grids instead of half decades")
  args = parser.parse_args(argv)
  per = 1 if args.coarse else 2
  beta_grid = np.logspace(-8, 1, 9 * per + 1)
  kappa_grid = np.logspace(-18, 1, 19 * per + 1)
  result = toy_functions.run_figure1(steps=args.steps, beta_grid=beta_grid, kappa_grid=kappa_grid)
  os.makedirs(args.out, exist_ok=True)
  table = figure1.table(result)
  notes = "\n".join(f"{name}: {toy_functions.PROBLEMS[name].note}" for name in result.runs)
  text = (
    f"{args.steps} steps of gradient descent, E = L; {notes}\n({result.seconds:.1f} s)\n\n{table}\n"
  )
  with open(os.path.join(args.out, "figure1.md"), "w") as f:
    f.write(text)
  report.write_json(os.path.join(args.out, "figure1.json"), figure1.to_json(result))
  figure1.plot(result, os.path.join(args.out, "figure1.png"))
  print(text)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
