"""Several hyperparameters on digits: MARTHE on per-layer learning rates and weight decay.

Usage:
  python benchmarks/multi_hparams.py                 # digits, fast-preset sizes
  python benchmarks/multi_hparams.py --preset tiny   # seconds, for CI

Same protocol as benchmarks/schedules.py (digits splits, MLP, SGD, batch 100,
T steps from eta_0 = 0.01, E = validation cross-entropy, seeds vmapped):
constant eta_0, full MARTHE on the learning rate, and full MARTHE on one
learning rate per layer plus the weight decay, over one shared kappa grid.
Prints a table, writes multi_hparams.json and multi_hparams.png under --out.
"""

import argparse
import os
import time

import numpy as np
from tqdm import tqdm

from marthe_lab import data as data_lib
from marthe_lab import multi
from marthe_lab import report
from marthe_lab import train as train_lib

PRESETS = {
  "tiny": dict(
    config=train_lib.TrainConfig(steps=24, hidden=(16, 16, 16)), seeds=2, kappas=(1e-4, 1e-2)
  ),
  "fast": dict(
    config=train_lib.TrainConfig(steps=512, hidden=(64, 64, 64)),
    seeds=3,
    kappas=tuple(10.0**-k for k in range(9, 0, -1)),
  ),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
  parser.add_argument("--out", default="results/multi_hparams")
  args = parser.parse_args(argv)
  cfg = PRESETS[args.preset]
  start = time.perf_counter()
  dataset = data_lib.digits()
  with tqdm(total=4, desc="multi_hparams") as bar:

    def tick(label):
      bar.set_postfix_str(label)
      bar.update()

    result = multi.run(dataset, cfg["config"], cfg["seeds"], cfg["kappas"], tick)
  seconds = time.perf_counter() - start

  s = cfg["seeds"]
  grid = lambda runs, field: getattr(runs, field).reshape(len(result.kappas), s)
  rows, per_kappa = [], []
  rows.append(
    [
      "constant",
      "-",
      report.mean_std(result.constant.val_accuracy),
      report.mean_std(result.constant.test_accuracy),
      f"{int(result.constant.diverged.sum())}/{s}",
    ]
  )
  for name, runs in (
    ("MARTHE (learning rate)", result.single),
    ("MARTHE (per-layer lr + weight decay)", result.multi),
  ):
    val, test, div = grid(runs, "val_accuracy"), grid(runs, "test_accuracy"), grid(runs, "diverged")
    means = np.where(np.isfinite(val.mean(1)), val.mean(1), -1)
    best = int(np.argmax(means))
    rows.append(
      [
        name,
        f"kappa={result.kappas[best]:.0e}",
        report.mean_std(val[best]),
        report.mean_std(test[best]),
        f"{int(div[best].sum())}/{s}",
      ]
    )
    for g, kappa in enumerate(result.kappas):
      per_kappa.append(
        [
          name,
          f"{kappa:.0e}",
          report.mean_std(val[g]),
          report.mean_std(test[g]),
          f"{int(div[g].sum())}/{s}",
        ]
      )
  header = ["method", "best value", "val acc %", "test acc %", "diverged"]
  print(f"{dataset.describe()}; {cfg['config']}; {s} seeds; {seconds:.0f} s\n")
  print(report.format_table(header, rows))
  print(
    "\nEvery kappa:\n"
    + report.format_table(["method", "kappa", "val acc %", "test acc %", "diverged"], per_kappa)
  )
  final = {
    k: (
      np.asarray(v).tolist()
      if not isinstance(v, dict)
      else {g: np.asarray(x).tolist() for g, x in v.items()}
    )
    for k, v in result.final_hyperparams.items()
  }
  print(
    f"\nFinal hyperparameters of the per-layer run at kappa={result.best_kappa:.0e} "
    f"(one value per seed): {final}"
  )

  os.makedirs(args.out, exist_ok=True)
  report.write_json(
    os.path.join(args.out, "multi_hparams.json"),
    dict(
      preset=args.preset,
      config=cfg["config"]._asdict(),
      seeds=s,
      seconds=seconds,
      kappas=result.kappas,
      table=rows,
      per_kappa=per_kappa,
      best_kappa=result.best_kappa,
      final_hyperparams=final,
      constant=result.constant._asdict(),
      single=result.single._asdict(),
      multi=result.multi._asdict(),
    ),
  )
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.4))
  for name, runs in (("MARTHE (lr)", result.single), ("MARTHE (per-layer lr + wd)", result.multi)):
    ax.semilogx(result.kappas, 100 * np.nanmean(grid(runs, "val_accuracy"), 1), "o-", label=name)
  ax.axhline(100 * result.constant.val_accuracy.mean(), color="gray", ls=":", label="constant")
  ax.set_xlabel("kappa (hyper_lr_step)")
  ax.set_ylabel("validation accuracy %")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "multi_hparams.png"), dpi=120)
  return result


if __name__ == "__main__":
  main()
