# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE under sharded ``jax.jit`` on simulated CPU devices (run in a subprocess).

``tests/test_sharding.py`` runs this file as a script, because the number of
simulated devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``) is
fixed when JAX starts. It trains a small version of the paper's section-5 MLP
(three hidden layers, cross-entropy, minibatches, validation gradient as
``grad E``) with MARTHE (adaptive ``mu`` and ``beta``) over SGD and over Adam,
three ways:

* ``single``: one device, no sharding (the reference);
* ``dp``: data parallel, batch split over the devices, params replicated;
* ``fsdp``: params, tangents and inner state sharded along each leaf's largest
  axis (:func:`marthe_optax.sharding.fsdp_sharding`), batch split too.

Only ``jax.jit`` with ``NamedSharding`` in/out shardings is used: every
collective comes from XLA's SPMD partitioner. It prints one JSON object with,
per inner optimizer and layout, the relative deviation from ``single`` of the
learning rate, ``mu``, ``beta``, hypergradient and params trajectories, whether
the state leaves carry the params' shardings and the scalars are replicated
(and equal on every device), and the custom calls of the compiled step (host
callbacks would show up there).

It also trains with :func:`marthe_optax.marthe_multi` (``K = 2``: AdamW's
learning rate and weight decay; ``K = 4``: one learning rate per layer through
:func:`marthe_optax.per_group`, whose inner states are masked), on one device
and under FSDP with the state placed by
:func:`marthe_optax.sharding.state_sharding`, and reports the deviation of the
FSDP run from the one-device run, the sharding of every param-shaped slice of
the state (the ``[K, ...]`` tangents and ``b``, the masked inner states)
against the one derived here from the params, and the state's bytes on one
device next to its full size.

Usage: ``python tests/_sharding_worker.py [--devices 8] [--steps 50]
[--part all|multi]`` (``multi``: only the ``marthe_multi`` runs, e.g. to
measure another checkout's ``state_sharding`` with ``PYTHONPATH``).
"""

import argparse
import json
import os
import re
import sys
import time


def _parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--part", choices=("all", "multi"), default="all")
  return parser.parse_args(argv)


def force_host_devices(n: int) -> None:
  """Asks XLA for ``n`` CPU devices; must run before JAX is imported."""
  if "jax" in sys.modules:
    raise RuntimeError("force_host_devices must run before importing jax.")
  flags = os.environ.get("XLA_FLAGS", "")
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", flags)
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":
  _ARGS = _parse_args()
  force_host_devices(_ARGS.devices)

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

import marthe_optax as mo
from marthe_optax import sharding as mo_sharding
from marthe_lab import loop
from marthe_lab.sharded import SCALARS, init_mlp, loss, make_data, train_step

SIZES = (48, 32, 32, 32, 10)  # the section-5 MLP (784-500-500-500-10), small
BATCH = 32
LEARNERS = {
  # name: (inner factory, eta_0, kappa); kappa makes eta move several-fold
  # within 50 steps, with no non-finite hypergradient.
  "sgd": (optax.sgd, 0.05, 1e-4),
  # eps_root > 0 keeps Adam differentiable where nu = 0 (weights of dead ReLU
  # units have exactly zero gradients): d sqrt(nu) / d nu is infinite at 0.
  "adam": (functools.partial(optax.adam, eps_root=1e-8), 1e-3, 1e-9),
}
CALLBACK_PATTERN = re.compile(r"callback", re.IGNORECASE)


def layouts(mesh: jax.sharding.Mesh, params) -> dict:
  """Params and batch shardings of each layout (``None``: one device, unsharded)."""
  batch = NamedSharding(mesh, P(mesh.axis_names[0]))
  replicated = NamedSharding(mesh, P())
  return {
    "single": None,
    "dp": (jax.tree.map(lambda _: replicated, params), batch),
    "fsdp": (mo_sharding.fsdp_sharding(params, mesh), batch),
  }


def custom_call_targets(text: str) -> list[str]:
  """The custom-call targets named in HLO or StableHLO text."""
  hlo = re.findall(r'custom_call_target="([^"]+)"', text)
  stablehlo = re.findall(r"stablehlo\.custom_call\s+@([\w.$-]+)", text)
  return sorted(set(hlo + stablehlo))


def host_callbacks(text: str) -> list[str]:
  """Custom calls that call back into the host (Python) in HLO/StableHLO text."""
  return [t for t in custom_call_targets(text) if CALLBACK_PATTERN.search(t)]


def rel_err(a, b) -> float:
  """``max |a - b| / max |b|`` (normwise, safe where ``b`` crosses zero)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = np.max(np.abs(b))
  return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def params_rel_err(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(rel_err, a, b)))


def sharding_mismatches(tree, expected, where: str) -> list[str]:
  """Leaves of ``tree`` whose sharding is not equivalent to ``expected``'s."""
  out = []
  for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(expected)):
    if not x.sharding.is_equivalent_to(s, x.ndim):
      out.append(f"{where}{jax.tree_util.keystr(path)}: {x.sharding} != {s}")
  return out


def params_mesh(params_sharding) -> jax.sharding.Mesh:
  return jax.tree.leaves(params_sharding)[0].mesh


def check_state_sharding(state: mo.MartheState, params_sharding, inner) -> dict:
  """Compares the state's shardings with the params' (derived independently)."""
  mismatches = []
  tangent = state.tangent.unseal()
  mismatches += sharding_mismatches(tangent.params, params_sharding, "tangent.params")
  mismatches += sharding_mismatches(state.b.unseal(), params_sharding, "b")
  # The inner state's param-shaped parts, located by Optax's own tree_map_params.
  for name, tree in (
    ("inner_state", state.inner_state.unseal()),
    ("tangent.inner_state", tangent.inner_state),
  ):
    flagged = optax.tree_map_params(
      inner(0.1),
      lambda x, s: (x, s),
      tree,
      params_sharding,
      transform_non_params=lambda x: (x, None),
    )
    for path, (x, s) in jax.tree_util.tree_leaves_with_path(
      flagged, is_leaf=lambda v: isinstance(v, tuple) and len(v) == 2
    ):
      if not isinstance(x, jax.Array):
        continue  # e.g. optax.EmptyState
      s = s if s is not None else NamedSharding(params_mesh(params_sharding), P())
      if not x.sharding.is_equivalent_to(s, x.ndim):
        mismatches.append(f"{name}{jax.tree_util.keystr(path)}: {x.sharding} != {s}")
  scalars = {name: getattr(state, name) for name in ("count", "nonfinite_count", "c") + SCALARS}
  not_replicated = [n for n, x in scalars.items() if not x.sharding.is_fully_replicated]
  # Every device holds the same value, bit for bit.
  unequal = [
    n
    for n, x in scalars.items()
    if len({np.asarray(s.data).tobytes() for s in x.addressable_shards}) != 1
  ]
  n_devices = {n: len(x.sharding.device_set) for n, x in scalars.items()}
  return dict(
    mismatches=mismatches,
    scalars_not_replicated=not_replicated,
    scalars_unequal_across_devices=unequal,
    scalar_devices=min(n_devices.values()),
  )


def place(tx, step, params0, layout, third_sharding):
  """``(params, state, put_batch, jitted step)`` on one device (``layout`` None)
  or in ``layout = (params_sharding, batch_sharding)`` with the state sharded
  by :func:`marthe_optax.sharding.state_sharding`; the step's third output is
  placed by ``third_sharding(state_sharding)``. Params and state are donated."""
  if layout is None:
    device = jax.devices()[0]
    put = lambda x: jax.device_put(x, device)
    params = put(params0)
    return params, jax.jit(tx.init)(params), put, jax.jit(step, donate_argnums=(0, 1))
  params_sharding, batch_sharding = layout
  params = jax.device_put(params0, params_sharding)
  state_sharding = mo_sharding.state_sharding(
    jax.eval_shape(tx.init, params), params, params_sharding
  )
  state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  jitted = jax.jit(
    step,
    in_shardings=(params_sharding, state_sharding, batch_sharding, batch_sharding),
    out_shardings=(params_sharding, state_sharding, third_sharding(state_sharding)),
    donate_argnums=(0, 1),
  )
  return params, state, lambda x: jax.device_put(x, batch_sharding), jitted


def run_layout(tx, params0, train, val, layout, steps: int, key: str) -> dict:
  """Trains ``steps`` steps in one layout; returns trajectories and diagnostics."""
  params, state, put_batch, jitted = place(
    tx, functools.partial(train_step, tx), params0, layout, lambda s: s.learning_rate
  )
  val_batch = put_batch(val)
  batch0 = put_batch((train[0][0], train[1][0]))
  t0 = time.perf_counter()
  lowered = jitted.lower(params, state, batch0, val_batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  hlo = compiled.as_text()
  metrics = []
  t0 = time.perf_counter()
  for t in range(steps):
    batch = put_batch((train[0][t], train[1][t]))
    params, state, m = compiled(params, state, batch, val_batch)
    # Block on each step: with more simulated devices than cores, XLA:CPU's
    # in-process all-reduces of two steps in flight were seen to deadlock.
    metrics.append(jax.block_until_ready(m))
  jax.block_until_ready((params, state))
  run_s = time.perf_counter() - t0
  out = dict(
    params=params,
    state=state,
    trajectory={k: np.asarray(jnp.stack([m[k] for m in metrics])).tolist() for k in metrics[0]},
    host_callbacks=sorted(set(host_callbacks(hlo) + host_callbacks(lowered.as_text()))),
    custom_calls=custom_call_targets(hlo),
    collectives={
      op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo))
      for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all")
    },
    compile_s=compile_s,
    run_s=run_s,
  )
  if layout is not None:
    out["sharding"] = check_state_sharding(state, layout[0], LEARNERS[key][0])
    out["params_mismatches"] = sharding_mismatches(params, layout[0], "params")
  return out


def detector_sanity() -> list[str]:
  """The callback detector must flag a step that does call back to the host."""
  f = jax.jit(lambda x: (jax.debug.callback(lambda v: None, x), 2 * x)[1])
  lowered = f.lower(jnp.ones(3))
  return sorted(
    set(host_callbacks(lowered.compile().as_text()) + host_callbacks(lowered.as_text()))
  )


def update_all_gathers(mesh: jax.sharding.Mesh, params0) -> list[str]:
  """All-gathers in the compiled ``tx.update`` alone, params split on their last axis.

  With an elementwise loss nothing in the update needs a whole parameter on
  one device: the dot products are local partial sums and one all-reduce.
  """
  sharding = jax.tree.map(lambda x: NamedSharding(mesh, P(*[None] * (x.ndim - 1), "data")), params0)
  params = jax.device_put(
    jax.tree.map(lambda x: np.ones((x.shape[:-1] + (8 * mesh.size,))), params0),
    jax.tree.map(lambda s: s, sharding),
  )
  tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
  state = jax.jit(
    tx.init,
    out_shardings=mo_sharding.state_sharding(jax.eval_shape(tx.init, params), params),
  )(params)
  quadratic = lambda p: 0.5 * optax.tree.norm(p, squared=True)
  update = lambda g, s, p, v: tx.update(g, s, p, value_fn=quadratic, val_grads=v)
  hlo = jax.jit(update).lower(params, state, params, params).compile().as_text()
  return re.findall(r"= (\S+\[[^\]]*\])[^=\n]*all-gather(?:-start)?\(", hlo)


def explicit_mode(params0, train, val, steps: int) -> dict:
  """FSDP under explicit sharding (``jax.make_mesh``'s default axis type).

  With explicit axes the model itself gathers each weight before using it
  (``jax.sharding.reshard``); MARTHE's state and update need nothing more.
  Returns the learning rates of ``steps`` steps, or the error raised.
  """
  mesh = jax.make_mesh((len(jax.devices()),), ("data",), (jax.sharding.AxisType.Explicit,))
  inner, eta0, kappa = LEARNERS["sgd"]
  tx = mo.marthe(inner, learning_rate=eta0, hyper_lr_step=kappa)

  def gathered_loss(p, batch):
    return loss(jax.tree.map(lambda x: jax.sharding.reshard(x, P()), p), batch)

  marthe_step = loop.make_step(tx, gathered_loss, ("value_fn", "val_grads"))

  def step(params, state, batch, val_batch):
    params, state, _, _ = marthe_step(params, state, batch, val_batch)
    return params, state

  try:
    with jax.set_mesh(mesh):
      params = jax.device_put(params0, mo_sharding.fsdp_sharding(params0, mesh))
      state = jax.jit(
        tx.init,
        out_shardings=mo_sharding.state_sharding(jax.eval_shape(tx.init, params), params),
      )(params)
      batch_sharding = NamedSharding(mesh, P("data"))
      val_batch = jax.device_put(val, batch_sharding)
      jitted = jax.jit(step)
      lrs = []
      for t in range(steps):
        batch = jax.device_put((train[0][t], train[1][t]), batch_sharding)
        params, state = jax.block_until_ready(jitted(params, state, batch, val_batch))
        lrs.append(float(state.learning_rate))
      sharding = check_state_sharding(state, mo_sharding.fsdp_sharding(params0, mesh), inner)
    return dict(error=None, learning_rate=lrs, mismatches=sharding["mismatches"])
  except Exception as e:  # pylint: disable=broad-except
    return dict(error=f"{type(e).__name__}: {str(e)[:400]}")


def multi_learners(layers: int) -> dict:
  """``marthe_multi`` with ``K = 2`` (AdamW) and ``K = 4`` (a rate per layer)."""
  labels = {f"dense_{i}": {"w": f"dense_{i}", "b": f"dense_{i}"} for i in range(layers)}
  return {
    "adamw_k2": mo.marthe_multi(
      functools.partial(optax.adamw, eps_root=1e-8),
      {"learning_rate": 1e-3, "weight_decay": 1e-4},
    ),
    f"per_group_k{layers}": mo.marthe_multi(
      mo.per_group(functools.partial(optax.sgd, momentum=0.9), labels),
      {"learning_rate": {group: 0.02 for group in sorted(set(jax.tree.leaves(labels)))}},
    ),
  }


def _seals(node) -> bool:
  return callable(getattr(node, "unseal", None))


def unsealed(tree):
  """``tree`` with each sealing node replaced by the tree it holds (same leaves)."""
  return jax.tree.map(lambda x: unsealed(x.unseal()) if _seals(x) else x, tree, is_leaf=_seals)


def slice_report(state, params0, params_sharding, k: int) -> dict:
  """Every leaf of a ``marthe_multi`` state: what it is, where it is, its bytes.

  The expected sharding of each leaf is derived from its path in the unsealed
  state, independently of ``state_sharding``: a leaf whose path ends with a
  param's path is a slice of that param (``[K, *shape]``: its sharding with
  the leading axis whole; ``shape``: its sharding); any other leaf is
  replicated.
  """
  mesh = params_mesh(params_sharding)
  replicated = NamedSharding(mesh, P())
  by_path = {
    jax.tree_util.keystr(path): (np.shape(p), s)
    for (path, p), s in zip(
      jax.tree_util.tree_leaves_with_path(params0), jax.tree.leaves(params_sharding)
    )
  }
  tree = unsealed(state)
  masked = jax.tree.leaves(
    jax.tree.map(
      lambda x: jax.tree.map(lambda _: True, x) if isinstance(x, optax.MaskedState) else False,
      tree,
      is_leaf=lambda x: isinstance(x, optax.MaskedState),
    )
  )
  device = jax.devices()[0]
  kinds = {
    kind: dict(leaves=0, param_split=0, split=0) for kind in ("stacked", "masked", "param", "other")
  }
  out = dict(mismatches=[], bytes_per_device=0, bytes_total=0, bytes_ideal=0, bytes_replicated=0)
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  assert len(leaves) == len(masked) == len(jax.tree.leaves(state))
  for (path, x), in_masked in zip(leaves, masked):
    name = jax.tree_util.keystr(path)
    match = max((p for p in by_path if name.endswith(p)), key=len, default=None)
    if match is None:
      kind, expected = "other", replicated
    else:
      shape, s = by_path[match]
      if x.shape == (k,) + shape:
        kind, expected = "stacked", NamedSharding(mesh, P(None, *s.spec))
      elif x.shape == shape:
        kind, expected = ("masked" if in_masked else "param"), s
      else:
        out["mismatches"].append(f"{name}: shape {x.shape} is no slice of {match} {shape}")
        continue
    shard = next(s for s in x.addressable_shards if s.device == device)
    ideal = int(np.prod(expected.shard_shape(x.shape))) * x.dtype.itemsize
    counts = kinds["masked" if in_masked and kind == "stacked" else kind]
    counts["leaves"] += 1
    counts["param_split"] += int(not expected.is_fully_replicated)
    counts["split"] += int(shard.data.nbytes < x.nbytes)
    if in_masked and kind == "stacked":
      kinds["stacked"]["leaves"] += 1
      kinds["stacked"]["param_split"] += int(not expected.is_fully_replicated)
      kinds["stacked"]["split"] += int(shard.data.nbytes < x.nbytes)
    if not x.sharding.is_equivalent_to(expected, x.ndim):
      out["mismatches"].append(f"{name}: {x.sharding.spec} != {expected.spec}")
    out["bytes_per_device"] += int(shard.data.nbytes)
    out["bytes_total"] += int(x.nbytes)
    out["bytes_ideal"] += ideal
    if expected.is_fully_replicated:
      out["bytes_replicated"] += int(x.nbytes)
  out["kinds"] = kinds
  return out


def multi_case(mesh, params0, train, val, tx, steps: int) -> dict:
  """``marthe_multi`` on one device and under FSDP, with the state sharded."""
  marthe_step = loop.make_step(tx, loss, ("value_fn", "val_grads", "value"))

  def step(params, state, batch, val_batch):
    params, state, _, _ = marthe_step(params, state, batch, val_batch)
    return params, state, mo.hyperparam_log(state)

  params_sharding = mo_sharding.fsdp_sharding(params0, mesh)
  batch_sharding = NamedSharding(mesh, P("data"))
  runs = {}
  placements = {"single": None, "fsdp": (params_sharding, batch_sharding)}
  for layout, placement in placements.items():
    params, state, put_batch, jitted = place(
      tx, step, params0, placement, lambda _: NamedSharding(mesh, P())
    )
    val_batch = put_batch(val)
    logs = []
    for t in range(steps):
      batch = put_batch((train[0][t], train[1][t]))
      params, state, log = jitted(params, state, batch, val_batch)
      logs.append(jax.block_until_ready(log))  # see run_layout
    runs[layout] = dict(
      params=params,
      state=state,
      log={name: np.asarray([float(g[name]) for g in logs]) for name in logs[0]},
    )
  single, fsdp = runs["single"], runs["fsdp"]
  k = len(single["state"].mu)
  names = [n for n in single["log"] if not n.endswith("count")]
  hyper = [n for n in names if "/" not in n or n.startswith("learning_rate/")]
  out = dict(
    k=k,
    rel_err={n: rel_err(fsdp["log"][n], single["log"][n]) for n in names},
    params_rel_err=params_rel_err(fsdp["params"], single["params"]),
    counters={n: int(single["log"][n][-1]) for n in single["log"] if n.endswith("count")},
    # How far each hyperparameter moved (max |log(theta_t / theta_0)|).
    hyper_moved={
      n: float(np.max(np.abs(np.log(single["log"][n] / single["log"][n][0])))) for n in hyper
    },
    params_mismatches=sharding_mismatches(fsdp["params"], params_sharding, "params"),
  )
  out.update(slice_report(fsdp["state"], params0, params_sharding, k))
  return out


def rel_errs(run: dict, ref: dict) -> dict:
  """Relative deviation of ``run`` from the reference run ``ref``."""
  errs = {k: rel_err(run["trajectory"][k], ref["trajectory"][k]) for k in SCALARS}
  lr, lr_ref = (np.asarray(r["trajectory"]["learning_rate"]) for r in (run, ref))
  errs["learning_rate_pointwise"] = float(np.max(np.abs(lr - lr_ref) / lr_ref))
  errs["params"] = params_rel_err(run["params"], ref["params"])
  return errs


def main(args) -> dict:
  start = time.perf_counter()
  n = len(jax.devices())
  if n != args.devices:
    raise RuntimeError(f"asked for {args.devices} devices, JAX sees {n}")
  mesh = jax.sharding.Mesh(
    np.array(jax.devices()), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  key = jax.random.key(0)
  params0 = jax.tree.map(np.asarray, init_mlp(key, SIZES))
  train, val = make_data(jax.random.fold_in(key, 1), args.steps, SIZES, BATCH)
  result = {"devices": n, "steps": args.steps, "cases": {}}
  result["multi"] = {
    name: multi_case(mesh, params0, train, val, tx, args.steps)
    for name, tx in multi_learners(len(SIZES) - 1).items()
  }
  if args.part == "multi":
    result["seconds"] = time.perf_counter() - start
    return result
  for name, (inner, eta0, kappa) in LEARNERS.items():
    tx = mo.marthe(inner, learning_rate=eta0, hyper_lr_step=kappa)
    runs = {
      layout_name: run_layout(tx, params0, train, val, layout, args.steps, name)
      for layout_name, layout in layouts(mesh, params0).items()
    }
    for layout_name, run in runs.items():
      trajectory = run["trajectory"]
      case = {
        k: run[k] for k in ("host_callbacks", "custom_calls", "collectives", "compile_s", "run_s")
      }
      case.update(
        learning_rate=trajectory["learning_rate"],
        mu_range=[min(trajectory["mu"]), max(trajectory["mu"])],
        hyper_lr_max=max(trajectory["hyper_lr"]),
        nonfinite_count=int(run["state"].nonfinite_count),
      )
      if layout_name != "single":
        case["rel_err"] = rel_errs(run, runs["single"])
        case.update(run["sharding"])
        case["params_mismatches"] = run["params_mismatches"]
      result["cases"][f"{name}/{layout_name}"] = case
  result["update_all_gathers"] = update_all_gathers(mesh, params0)
  result["explicit"] = explicit_mode(params0, train, val, steps=5)
  result["detector_sanity"] = detector_sanity()
  result["seconds"] = time.perf_counter() - start
  return result


if __name__ == "__main__":
  print(json.dumps(main(_ARGS)))
