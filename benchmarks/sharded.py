# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE on several devices: data parallel and FSDP against one device.

Trains the paper's section-5 MLP (784-H-H-H-10, cross-entropy, minibatches,
``E`` = validation loss) with MARTHE (adaptive ``mu`` and ``beta``) three ways,
in one process and on the same data:

* ``single``: one device, no sharding (the reference);
* ``dp``: data parallel: the batch split over the devices, params replicated;
* ``fsdp``: params, tangents and the inner state split over the devices along
  each leaf's largest divisible axis (``marthe_optax.sharding.fsdp_sharding``),
  batch split too;
* ``control``: one device again, with the examples of every batch permuted
  (the same losses summed in another order) and the initial params moved by
  one float32 ulp. Its deviation from ``single`` is the run's own sensitivity
  to float32 round-off (a ReLU that flips on a pre-activation within
  round-off of zero, Adam dividing by tiny second moments, ``mu``'s heuristic
  meeting a hypergradient near zero), the yardstick for the deviations of
  ``dp`` and ``fsdp``, whose kernels round differently from one device's.

The sharded steps are plain ``jax.jit`` with ``NamedSharding`` in/out
shardings: XLA's SPMD partitioner inserts every collective, including the
all-reduces of MARTHE's hypergradient dot products. The script reports the
median warm step time of each layout (and its ratio to one device), and the
largest relative deviation of the learning-rate, ``mu`` and ``beta``
trajectories and of the final params from the single-device run.

Without accelerators it simulates ``--devices`` CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``, set here before JAX is
imported). Simulated devices share the host's cores, so the time ratios then
measure the partitioning and collective overhead, not a speed-up.

Inputs are Gaussian, labelled by a random linear teacher (no download). The
default width is 512 (the paper's 500 rounded up to a multiple of 8, so FSDP
splits every layer; ``--hidden 500`` replicates the 500-wide layers on 8
devices), and the batch (the paper's 100) is rounded up to a multiple of the
device count.

Usage::

  python benchmarks/sharded.py                     # 8 devices, SGD, 50 steps
  python benchmarks/sharded.py --inner adam --devices 4
  python benchmarks/sharded.py --small --steps 20  # seconds, for a smoke test
"""

import argparse
import json
import os
import pathlib
import platform
import re
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description="MARTHE on N devices (data parallel, FSDP) vs one device.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    "--devices", type=int, default=8, help="number of devices (simulated on CPU when needed)"
  )
  parser.add_argument("--steps", type=int, default=50, help="training steps per layout")
  parser.add_argument(
    "--warmup", type=int, default=5, help="first steps left out of the median step time"
  )
  parser.add_argument("--inner", choices=("sgd", "adam"), default="sgd", help="inner optimizer")
  parser.add_argument(
    "--learning-rate",
    type=float,
    default=None,
    help="eta_0 (default: 0.01 for sgd, as in the paper; 1e-3 for adam)",
  )
  parser.add_argument(
    "--hyper-lr-step",
    type=float,
    default=None,
    help="kappa (default: 1e-6 for sgd, 1e-12 for adam; 1e-4 and 1e-9 with --small)",
  )
  parser.add_argument("--hidden", type=int, default=512, help="hidden width")
  parser.add_argument(
    "--batch", type=int, default=100, help="global batch, rounded up to a multiple of --devices"
  )
  parser.add_argument(
    "--small", action="store_true", help="a small MLP (64-64-64-64-10, batch 32) for smoke tests"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    default=pathlib.Path("results/sharded"),
    help="directory of the JSON result",
  )
  return parser.parse_args(argv)


if __name__ == "__main__":
  ARGS = parse_args()
  if "jax" in sys.modules:
    raise RuntimeError("XLA_FLAGS must be set before jax is imported.")
  _flags = re.sub(
    r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")
  )
  os.environ["XLA_FLAGS"] = (
    f"{_flags} --xla_force_host_platform_device_count={ARGS.devices}".strip()
  )

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
from tqdm import tqdm

import marthe_optax as mo
from marthe_optax import sharding as mo_sharding
from marthe_lab.sharded import SCALARS, init_mlp, make_data, train_step

INNER = {
  # name: (factory, eta_0, kappa for the full MLP, kappa for --small); each
  # kappa moves eta within 50 steps without divergence. Adam gets
  # eps_root > 0: weights of dead ReLU units have exactly zero gradients,
  # where d sqrt(nu) / d nu is infinite, and the tangent of Adam's update
  # divides by sqrt(nu + eps_root), whose round-off (tiny nu) would dominate
  # the hypergradient with eps_root much below 1e-8.
  "sgd": (optax.sgd, 0.01, 1e-6, 1e-4),
  "adam": (functools.partial(optax.adam, eps_root=1e-8), 1e-3, 1e-12, 1e-9),
}


def compile_layout(tx, params0, batch0, val, params_sharding, batch_sharding):
  """Places params, state and data; compiles the step. ``None``: one device."""
  step = functools.partial(train_step, tx)
  if params_sharding is None:
    put = functools.partial(jax.device_put, device=jax.devices()[0])
    params = put(params0)
    state = jax.jit(tx.init)(params)
    jitted = jax.jit(step, donate_argnums=(0, 1))
    put_batch = put
  else:
    params = jax.device_put(params0, params_sharding)
    state_sharding = mo_sharding.state_sharding(jax.eval_shape(tx.init, params), params)
    state = jax.jit(tx.init, out_shardings=state_sharding)(params)
    replicated = NamedSharding(batch_sharding.mesh, P())
    jitted = jax.jit(
      step,
      in_shardings=(params_sharding, state_sharding, batch_sharding, batch_sharding),
      out_shardings=(params_sharding, state_sharding, replicated),
      donate_argnums=(0, 1),
    )
    put_batch = lambda x: jax.device_put(x, batch_sharding)
  val_batch = put_batch(val)
  t0 = time.perf_counter()
  compiled = jitted.lower(params, state, put_batch(batch0), val_batch).compile()
  return compiled, params, state, put_batch, val_batch, time.perf_counter() - t0


class Layout:
  """One layout's compiled step, its placed data and what its steps measured."""

  def __init__(self, tx, params0, train, val, params_sharding, batch_sharding, steps):
    compiled, self.params, self.state, put_batch, self.val, self.compile_s = compile_layout(
      tx, params0, (train[0][0], train[1][0]), val, params_sharding, batch_sharding
    )
    self.compiled = compiled
    self.batches = [put_batch((train[0][t], train[1][t])) for t in range(steps)]
    self.step_s, self.metrics = [], []

  def step(self, t: int) -> None:
    t0 = time.perf_counter()
    self.params, self.state, m = self.compiled(self.params, self.state, self.batches[t], self.val)
    # Blocking on every step times it, and keeps the in-process collectives
    # of simulated CPU devices from interleaving across two in-flight steps.
    jax.block_until_ready((self.params, self.state, m))
    self.step_s.append(time.perf_counter() - t0)
    self.metrics.append(m)

  def result(self, warmup: int) -> dict:
    trajectory = {
      k: np.asarray(jnp.stack([m[k] for m in self.metrics]), np.float64) for k in self.metrics[0]
    }
    warm = self.step_s[min(warmup, len(self.step_s) - 1) :]
    return dict(
      params=jax.tree.map(np.asarray, self.params),
      trajectory=trajectory,
      step_s=self.step_s,
      median_step_s=float(np.median(warm)),
      compile_s=self.compile_s,
      nonfinite_count=int(self.state.nonfinite_count),
    )


def run_layouts(tx, layouts: dict, batch_sharding, args) -> dict:
  """Trains every layout, interleaving their steps so that load from other
  processes on the host falls on all layouts alike."""
  runs = {
    name: Layout(tx, p0, data, val, sharding, batch_sharding, args.steps)
    for name, (sharding, p0, data, val) in tqdm(
      layouts.items(), desc="compile", unit="layout", leave=False
    )
  }
  for t in tqdm(range(args.steps), desc="train", unit="step"):
    for run in runs.values():
      run.step(t)
  return {name: run.result(args.warmup) for name, run in runs.items()}


def max_rel_dev(a, b) -> float:
  """``max |a - b| / max |b|``."""
  scale = np.max(np.abs(b))
  return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def deviations(run: dict, ref: dict) -> dict:
  devs = {k: max_rel_dev(run["trajectory"][k], ref["trajectory"][k]) for k in SCALARS}
  lr, lr_ref = run["trajectory"]["learning_rate"], ref["trajectory"]["learning_rate"]
  devs["learning_rate_pointwise"] = float(np.max(np.abs(lr - lr_ref) / lr_ref))
  devs["params"] = max(jax.tree.leaves(jax.tree.map(max_rel_dev, run["params"], ref["params"])))
  return devs


def sharded_fraction(params, params_sharding) -> float:
  """Fraction of the parameters that FSDP splits (the rest is replicated)."""
  sizes = [np.size(p) for p in jax.tree.leaves(params)]
  split = [s.spec != P() for s in jax.tree.leaves(params_sharding)]
  return float(np.dot(sizes, split) / np.sum(sizes))


def main(args: argparse.Namespace) -> dict:
  n = jax.device_count()
  if n < args.devices:
    raise RuntimeError(f"asked for {args.devices} devices, JAX sees {n}")
  devices = jax.devices()[: args.devices]
  mesh = jax.sharding.Mesh(np.array(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  if args.small:
    sizes, batch = (64, 64, 64, 64, 10), 32
  else:
    sizes, batch = (784, args.hidden, args.hidden, args.hidden, 10), args.batch
  batch = -(-batch // args.devices) * args.devices  # a multiple of the devices
  inner, eta0, kappa_full, kappa_small = INNER[args.inner]
  kappa = kappa_small if args.small else kappa_full
  eta0 = eta0 if args.learning_rate is None else args.learning_rate
  kappa = kappa if args.hyper_lr_step is None else args.hyper_lr_step
  tx = mo.marthe(inner, learning_rate=eta0, hyper_lr_step=kappa)

  key = jax.random.key(args.seed)
  params0 = jax.tree.map(np.asarray, init_mlp(key, sizes))
  train, val = make_data(jax.random.fold_in(key, 1), args.steps, sizes, batch)
  batch_sharding = NamedSharding(mesh, P("data"))
  fsdp = mo_sharding.fsdp_sharding(params0, mesh)
  # The round-off control: one device, the examples of each batch permuted
  # (the mean loss summed in another order) and the initial params moved by
  # one float32 ulp. Its deviation from "single" is this run's own sensitivity
  # to round-off, the yardstick for the deviations of dp and fsdp.
  rng = np.random.default_rng(args.seed)
  perm = rng.permutation(batch)
  nudged = jax.tree.map(
    lambda p: np.where(
      rng.random(p.shape) < 0.5, np.nextafter(p, np.inf), np.nextafter(p, -np.inf)
    ).astype(p.dtype),
    params0,
  )
  layouts = {
    "single": (None, params0, train, val),
    "control": (None, nudged, (train[0][:, perm], train[1][:, perm]), (val[0][perm], val[1][perm])),
    "dp": (jax.tree.map(lambda _: NamedSharding(mesh, P()), params0), params0, train, val),
    "fsdp": (fsdp, params0, train, val),
  }
  runs = run_layouts(tx, layouts, batch_sharding, args)
  ref = runs["single"]
  layouts_out = {}
  for name, run in runs.items():
    layouts_out[name] = dict(
      devices=1 if name in ("single", "control") else args.devices,
      median_step_ms=1e3 * run["median_step_s"],
      time_ratio=run["median_step_s"] / ref["median_step_s"],
      compile_s=run["compile_s"],
      step_ms=[1e3 * t for t in run["step_s"]],
      nonfinite_count=run["nonfinite_count"],
      final_loss=float(run["trajectory"]["loss"][-1]),
      trajectory={k: v.tolist() for k, v in run["trajectory"].items()},
      max_rel_dev=None if name == "single" else deviations(run, ref),
    )
  return dict(
    config=dict(
      sizes=sizes,
      batch=batch,
      steps=args.steps,
      warmup=args.warmup,
      inner=args.inner,
      learning_rate=eta0,
      hyper_lr_step=kappa,
      devices=args.devices,
      seed=args.seed,
      fsdp_sharded_fraction=sharded_fraction(params0, fsdp),
    ),
    environment=dict(
      jax=jax.__version__,
      optax=optax.__version__,
      platform=jax.default_backend(),
      device_kind=devices[0].device_kind,
      host_cpus=os.cpu_count(),
      python=platform.python_version(),
    ),
    layouts=layouts_out,
  )


def print_table(result: dict) -> None:
  cfg = result["config"]
  print(
    f"\nMARTHE ({cfg['inner']}) on MLP {'-'.join(map(str, cfg['sizes']))}, batch "
    f"{cfg['batch']}, {cfg['steps']} steps; {result['environment']['platform']} x "
    f"{cfg['devices']}; FSDP splits {100 * cfg['fsdp_sharded_fraction']:.0f}% of params"
  )
  head = (
    f"{'layout':<7}{'devices':>8}{'step ms':>10}{'vs 1 dev':>10}"
    f"{'lr dev':>10}{'mu dev':>10}{'beta dev':>10}{'params dev':>12}{'final lr':>11}"
  )
  print(head)
  print("-" * len(head))
  for name, r in result["layouts"].items():
    dev = r["max_rel_dev"] or {}
    fmt = lambda k: f"{dev[k]:.1e}" if k in dev else "-"
    print(
      f"{name:<7}{r['devices']:>8}{r['median_step_ms']:>10.1f}{r['time_ratio']:>10.2f}"
      f"{fmt('learning_rate'):>10}{fmt('mu'):>10}{fmt('hyper_lr'):>10}"
      f"{fmt('params'):>12}{r['trajectory']['learning_rate'][-1]:>11.4g}"
    )
  print(
    "dev: max relative deviation from the single-device run. control: one "
    "device, batches\npermuted and initial params moved by one ulp (the "
    "run's own round-off sensitivity).\n"
    f"step ms: median after {cfg['warmup']} warm-up steps."
  )


if __name__ == "__main__":
  result = main(ARGS)
  print_table(result)
  ARGS.out.mkdir(parents=True, exist_ok=True)
  tag = "small" if ARGS.small else f"h{result['config']['sizes'][1]}"
  path = ARGS.out / f"sharded_{ARGS.inner}_{tag}_d{ARGS.devices}.json"
  path.write_text(json.dumps(result, indent=1))
  print(f"wrote {path}")
