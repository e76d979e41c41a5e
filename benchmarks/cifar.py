"""Section 6 of the paper: MARTHE, HD, RTHO and fixed schedules on CIFAR.

Usage:
  python benchmarks/cifar.py --preset smoke       # tiny synthetic data, for CI
  python benchmarks/cifar.py --preset synthetic   # no data needed, minutes on a CPU
  MARTHE_CIFAR_DIR=/data python benchmarks/cifar.py --preset paper
  MARTHE_CIFAR_DIR=/data python benchmarks/cifar.py --preset paper \\
      --experiment resnet18-cifar100
  python benchmarks/cifar.py --preset paper --time-steps 5 --batch-size 32 \\
      --dataset synthetic                        # step-time ratio only
  MARTHE_CIFAR_DIR=/data python benchmarks/cifar.py --preset paper --resume
                                                 # continue an interrupted run

The paper preset: batch 128, 200 epochs, 5 seeds, L = CE + weight decay 5e-4,
E = unregularised CE on 5000 validation images carved from the training set;
VGG-11-BN / CIFAR-10 / SGD-momentum 0.9 / eta_0 = 0.1, or ResNet-18 /
CIFAR-100 / Adam / eta_0 = 3e-4. CIFAR is read from the python-pickle
archives under --data-dir or $MARTHE_CIFAR_DIR (never downloaded).

Writes cifar.json (per-epoch accuracy, losses and learning rate of every
method and seed, subsampled per-step schedules) and cifar.png (the paper's
figure 3/4 layout) under --out.

Checkpoints (Orbax) go to --out/checkpoints every --checkpoint-every epochs:
model, optimizer, the minibatch generator's state and the records so far,
and the record of every finished run. --resume continues from them (same
options required) with the results of an uninterrupted run; without it they
are cleared at the start. --stop-after-epochs N ends the invocation after N
epochs (and a checkpoint), for schedulers with a time limit.
"""

import argparse
import dataclasses
import json
import os

import matplotlib

from marthe_lab import cifar


def _floats(text):
  return tuple(int(s) for s in text.split(","))


def parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--preset", choices=("smoke", "synthetic", "paper"), default="synthetic")
  p.add_argument("--experiment", choices=sorted(cifar.EXPERIMENTS), default="vgg11-cifar10")
  p.add_argument("--methods", help=f"comma-separated subset of {','.join(cifar.METHODS)}")
  p.add_argument("--seeds", type=_floats, help="comma-separated seeds, e.g. 0,1,2")
  p.add_argument("--epochs", type=int)
  p.add_argument("--batch-size", type=int)
  p.add_argument("--width", type=float, help="channel multiplier of the model")
  p.add_argument("--kappa", type=float, help="MARTHE's hyper_lr_step (kappa)")
  p.add_argument(
    "--select-kappa",
    action="store_true",
    help="choose kappa with marthe_optax.selection (the paper preset's default)",
  )
  p.add_argument("--dataset", choices=("cifar10", "cifar100", "synthetic"))
  p.add_argument("--data-dir", help="folder with cifar-10-batches-py/ or cifar-100-python/")
  p.add_argument("--max-steps-per-epoch", type=int)
  p.add_argument(
    "--time-steps",
    type=int,
    default=0,
    help="only time N warm steps of staircase vs marthe (and hd, rtho)",
  )
  p.add_argument("--out", default="results/cifar")
  p.add_argument("--no-progress", action="store_true")
  p.add_argument(
    "--resume", action="store_true", help="continue from the checkpoints under --out/checkpoints"
  )
  p.add_argument(
    "--checkpoint-every",
    type=int,
    default=1,
    metavar="EPOCHS",
    help="epochs between checkpoints (default 1)",
  )
  p.add_argument("--no-checkpoints", action="store_true", help="do not write checkpoints")
  p.add_argument(
    "--stop-after-epochs",
    type=int,
    metavar="N",
    help="stop after N epochs in this invocation; continue with --resume",
  )
  return p.parse_args(argv)


def config(args) -> cifar.Config:
  overrides = {}
  for field, value in (
    ("epochs", args.epochs),
    ("batch_size", args.batch_size),
    ("width", args.width),
    ("kappa", args.kappa),
    ("dataset", args.dataset),
    ("data_dir", args.data_dir),
    ("seeds", args.seeds),
    ("max_steps_per_epoch", args.max_steps_per_epoch),
  ):
    if value is not None:
      overrides[field] = value
  if args.select_kappa:
    if args.kappa is not None:
      raise SystemExit("pass --kappa or --select-kappa, not both")
    overrides["kappa"] = None
  if args.batch_size is not None:
    overrides["val_batch_size"] = args.batch_size
  if args.methods:
    overrides["methods"] = tuple(m.strip() for m in args.methods.split(","))
    unknown = set(overrides["methods"]) - set(cifar.METHODS)
    if unknown:
      raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {tuple(cifar.METHODS)}")
  return cifar.preset(args.preset, args.experiment, **overrides)


def main(argv=None) -> dict:
  matplotlib.use("Agg")  # files only: the figures are written, not shown
  args = parse(argv)
  cfg = config(args)
  os.makedirs(args.out, exist_ok=True)
  if args.time_steps:
    methods = ("staircase",) + tuple(m for m in ("hd", "rtho", "marthe") if m in cfg.methods)
    timing = cifar.time_steps(cfg, methods, steps=args.time_steps)
    for m in methods:
      print(
        f"{m:10s} {1e3 * timing['median_s'][m]:9.1f} ms/step  "
        f"x{timing['ratio_to'][m]:.2f} of staircase  "
        f"(compile+warmup {timing['compile_s'][m]:.1f}s)"
      )
    path = os.path.join(args.out, "cifar_step_time.json")
    with open(path, "w") as f:
      json.dump(dict(timing, config=dataclasses.asdict(cfg)), f, indent=1)
    print(f"wrote {path}")
    return timing
  if args.no_checkpoints and (args.resume or args.stop_after_epochs):
    raise SystemExit("--resume and --stop-after-epochs need checkpoints")
  try:
    results = cifar.run(
      cfg,
      progress=not args.no_progress,
      checkpoint_dir=None if args.no_checkpoints else os.path.join(args.out, "checkpoints"),
      resume=args.resume,
      checkpoint_every=args.checkpoint_every,
      stop_after_epochs=args.stop_after_epochs,
    )
  except cifar.Stopped as stopped:
    print(stopped)
    return None
  json_path = os.path.join(args.out, "cifar.json")
  png_path = os.path.join(args.out, "cifar.png")
  cifar.save_json(results, json_path)
  cifar.plot(results, png_path, title=f"{args.experiment} ({args.preset} preset)")
  print(f"wrote {json_path} and {png_path}")
  return results


if __name__ == "__main__":
  main()
