# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""How long a preset of the section-5 experiment would take, from short probes."""

import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from marthe_optax import exact
from marthe_lab import data as data_lib
from marthe_lab import models
from marthe_lab import train as train_lib
from marthe_lab.schedules.presets import METHODS, Preset, grid_of


def estimate(
  preset: Preset,
  dataset: data_lib.Dataset,
  probe_steps: int = 16,
  log: Callable[[str], None] = print,
) -> dict:
  """Extrapolates the preset's run time on one dataset from short probes.

  Times (after compilation) one chunk of ``preset.chunk`` vmapped runs of
  each family for ``probe_steps`` steps; one outer step of LRS-OPT as
  :func:`run_lrs_opt` runs it (the exact reverse-mode hypergradient, vmapped
  over the ``lrs_opt_seeds`` seeds and ``lrs_opt_draws`` draws, with the
  preset's checkpointing) over ``probe_steps`` steps; and the forward runs of
  a ``'best constant'`` start. Scales linearly to ``T`` steps and to the
  preset's numbers of runs, and gives LRS-OPT's time for ``lrs_opt_steps``
  outer steps (the most; with ``lrs_opt_tol`` it may stop earlier, after
  ``2 * lrs_opt_window`` at the least). Compilation time is not included.

  The probes' CPU time is measured too: on a machine shared with other jobs
  the wall-time extrapolation overstates the cost, and the CPU-hours (the
  wall-time total times the cores the probes used on average) are the
  figure to divide by the cores of an idle machine.

  Returns:
    Seconds per part and in total, the measured per-run-step costs, the
    probes' CPU time and cores used, and the total in CPU-seconds.
  """
  arrays = train_lib.Arrays.from_dataset(dataset)
  config = preset.config._replace(steps=probe_steps)
  lrs_seeds = preset.lrs_opt_seeds
  inputs = train_lib.make_inputs(jnp.arange(lrs_seeds), arrays, config, dataset.num_classes)
  n = preset.chunk or 8
  seeds = jnp.zeros(n, jnp.int32)
  hyper = train_lib.Hyper(jnp.full(n, 1e-4), jnp.zeros(n), jnp.full(n, 0.9))

  cpu = []  # the probes' CPU time, in the order of the wall times

  def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    cpu.append(time.process_time() - c)
    return time.perf_counter() - t

  per = {}
  for adaptive in (False, True):
    t = timed(lambda: train_lib.run_online(arrays, config, inputs, seeds, hyper, adaptive))
    per["adaptive" if adaptive else "fixed"] = t / (n * probe_steps)
  sample = exact.random_minibatches(
    (arrays.x_train, arrays.y_train), config.batch_size, probe_steps
  )
  objective = jax.tree_util.Partial(
    lambda x, y, p: models.cross_entropy(models.mlp_apply, p, x, y), arrays.x_val, arrays.y_val
  )
  loss = lambda q, bb: models.cross_entropy(models.mlp_apply, q, bb[0], bb[1])
  draws = preset.lrs_opt_draws

  def outer_step(p, key, sample, objective):
    keys = jax.random.split(key, draws)
    return jax.vmap(
      lambda k: exact.schedule_hypergradient(
        jnp.full(probe_steps, 0.01),
        p,
        optax.sgd,
        loss,
        sample(k),
        objective,
        checkpoint=preset.lrs_opt_checkpoint,
      )
    )(keys)

  keys = jax.random.split(jax.random.key(0), lrs_seeds)
  t = timed(
    jax.jit(jax.vmap(outer_step, (0, 0, None, None))), inputs.params, keys, sample, objective
  )
  per["lrs_opt_outer_step"] = t / probe_steps
  candidates = 6 if preset.lrs_opt_start == "best constant" else 0
  forward_runs = lrs_seeds * candidates * 2 * draws
  if forward_runs:
    runs = jax.jit(
      jax.vmap(
        lambda p, k, sample, objective: exact.schedule_objective(
          jnp.full(probe_steps, 0.01), p, optax.sgd, loss, sample(k), objective
        ),
        (None, 0, None, None),
      )
    )
    t = timed(
      runs,
      jax.tree.map(lambda a: a[0], inputs.params),
      jax.random.split(jax.random.key(1), n),
      sample,
      objective,
    )
    per["forward_run"] = t / (n * probe_steps)
  steps = preset.config.steps
  fixed_runs = sum(len(grid_of(m, preset)) for m in METHODS if not m.adaptive_mu)
  adaptive_runs = sum(len(grid_of(m, preset)) for m in METHODS if m.adaptive_mu)
  outer = steps * per["lrs_opt_outer_step"]
  parts = {
    "fixed_mu_methods": fixed_runs * preset.seeds * steps * per["fixed"],
    "adaptive_mu_methods": adaptive_runs * preset.seeds * steps * per["adaptive"],
    "lrs_opt_start": forward_runs * steps * per.get("forward_run", 0.0),
    "lrs_opt": preset.lrs_opt_steps * outer,
  }
  parts["total"] = sum(parts.values())
  # CPU time over wall time of the probes: about the cores used when the
  # machine is idle; well below it when other jobs share the cores, and then
  # the wall-time extrapolation overstates an idle machine's time.
  cpu_per_wall = sum(cpu) / (
    sum(per[k] * probe_steps * (n if k in ("fixed", "adaptive", "forward_run") else 1) for k in per)
  )
  earliest = (
    2 * preset.lrs_opt_window * outer if preset.lrs_opt_tol is not None else parts["lrs_opt"]
  )
  log(
    f"estimate for preset {preset.name} on {dataset.describe()} "
    f"({jax.default_backend()}, from {probe_steps}-step probes, chunks of {n}, "
    "compilation excluded): "
    + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in parts.items())
    + f" (LRS-OPT: {preset.lrs_opt_steps} outer steps at most, "
    f"{outer:.1f} s each for its {lrs_seeds} seeds x {draws} draws; "
    f"{earliest / 3600:.2f} h if the tolerance stops it at the earliest); "
    "seconds per run-step: "
    + ", ".join(f"{k} {v:.2e}" for k, v in per.items())
    + f"; the probes used {cpu_per_wall:.2f} CPU cores on average "
    f"(CPU time {sum(cpu):.1f} s over their wall time; "
    f"{os.cpu_count()} cores here), so the total is "
    f"{parts['total'] * cpu_per_wall / 3600:.2f} CPU-hours"
  )
  return {
    "seconds": parts,
    "seconds_per_run_step": per,
    "probe_cpu_seconds": sum(cpu),
    "probe_cpu_per_wall": cpu_per_wall,
    "cpu_seconds": parts["total"] * cpu_per_wall,
    "lrs_opt_seconds_per_outer_step": outer,
    "lrs_opt_earliest_seconds": earliest,
  }
