# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE under sharded ``jax.jit`` on 8 simulated CPU devices.

The number of CPU devices is fixed when JAX starts, so the training runs in a
subprocess (``tests/_sharding_worker.py``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) that prints its
measurements as JSON; the tests here check them. Data parallel (batch split,
params replicated) and FSDP (params, tangents and inner state split along
their largest axis, batch split) training of a small section-5 MLP with
MARTHE (adaptive ``mu`` and ``beta``) over SGD and Adam must match one device
to float32 round-off for 50 steps, keep the state sharded like the params and
the hyperparameters replicated, and compile to a step with no host callback.
The helpers of ``marthe_optax.sharding`` are also tested in process, on an
abstract 8-device mesh.
"""

import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_optax import sharding as mo_sharding

WORKER = pathlib.Path(__file__).with_name("_sharding_worker.py")
DEVICES = 8
STEPS = 50
RTOL = 1e-5
SHARDED = ("sgd/dp", "sgd/fsdp", "adam/dp", "adam/fsdp")
ALL = ("sgd/single", "adam/single") + SHARDED



@pytest.fixture(scope="module")
def result() -> dict:
  env = dict(os.environ)
  flags = re.sub(
      r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")
  )
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={DEVICES}"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [sys.executable, str(WORKER), "--devices", str(DEVICES), "--steps", str(STEPS)],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runs_on_all_devices(result):
  assert result["devices"] == DEVICES
  assert set(result["cases"]) == set(ALL)


@pytest.mark.parametrize("case", SHARDED)
def test_matches_single_device(result, case):
  errs = result["cases"][case]["rel_err"]
  for name in ("learning_rate", "learning_rate_pointwise", "mu", "hyper_lr",
               "hypergradient", "params"):
    assert errs[name] < RTOL, f"{case}: {name} deviates by {errs[name]:.2e}"
  single = result["cases"][case.split("/")[0] + "/single"]
  chex.assert_trees_all_close(
      result["cases"][case]["learning_rate"], single["learning_rate"], rtol=RTOL
  )


@pytest.mark.parametrize("case", ALL)
def test_schedule_moves(result, case):
  """The comparison is not vacuous: eta, beta and mu all change, no guard fires."""
  c = result["cases"][case]
  lr = np.asarray(c["learning_rate"])
  assert lr.shape == (STEPS,)
  assert lr.max() > 2 * lr[0], lr
  assert c["hyper_lr_max"] > 0
  assert c["mu_range"][0] == 0.0 and c["mu_range"][1] == 1.0
  assert c["nonfinite_count"] == 0


@pytest.mark.parametrize("case", SHARDED)
def test_state_sharded_like_params(result, case):
  c = result["cases"][case]
  assert c["mismatches"] == []  # tangent, b, inner state and its tangent
  assert c["params_mismatches"] == []


@pytest.mark.parametrize("case", SHARDED)
def test_hyperparameters_replicated(result, case):
  c = result["cases"][case]
  assert c["scalars_not_replicated"] == []
  assert c["scalars_unequal_across_devices"] == []
  assert c["scalar_devices"] == DEVICES


@pytest.mark.parametrize("case", SHARDED)
def test_reductions_by_spmd_partitioner(result, case):
  """The dot products and gradient means are XLA all-reduces."""
  assert result["cases"][case]["collectives"]["all-reduce"] > 0


@pytest.mark.parametrize("case", ALL)
def test_no_host_callbacks(result, case):
  assert result["cases"][case]["host_callbacks"] == []


def test_callback_detector_sees_callbacks(result):
  """The check above can fail: a jax.debug.callback is flagged."""
  assert result["detector_sanity"]


def test_update_gathers_no_parameter(result):
  assert result["update_all_gathers"] == []


def test_explicit_sharding_fsdp(result):
  explicit = result["explicit"]
  assert explicit["error"] is None, explicit["error"]
  assert explicit["mismatches"] == []
  n = len(explicit["learning_rate"])
  chex.assert_trees_all_close(
      explicit["learning_rate"],
      result["cases"]["sgd/single"]["learning_rate"][:n],
      rtol=RTOL,
  )


# In process: marthe_optax.sharding on an abstract mesh (no devices needed).

MESH = AbstractMesh((DEVICES,), ("data",))


def _shapes(**shapes):
  return {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in shapes.items()}


def test_fsdp_sharding_splits_largest_divisible_axis():
  params = _shapes(
      w1=(784, 512), w2=(500, 512), tie=(16, 16), b=(500,), s=(), odd=(3, 5)
  )
  specs = {k: s.spec for k, s in mo_sharding.fsdp_sharding(params, MESH).items()}
  assert specs == dict(
      w1=P("data", None), w2=P(None, "data"), tie=P("data", None), b=P(), s=P(),
      odd=P(),
  )


@pytest.mark.parametrize(
    "inner",
    [optax.sgd, functools.partial(optax.sgd, momentum=0.9), optax.adam],
    ids=["sgd", "momentum", "adam"],
)
def test_state_sharding_follows_params(inner):
  params = {
      "dense": _shapes(w=(16, 24), b=(24,)),
      "scale": jax.ShapeDtypeStruct((), jnp.float32),
  }
  params_sharding = mo_sharding.fsdp_sharding(params, MESH)
  # MARTHE inside a chain: the helper finds it wherever it sits.
  tx = optax.chain(
      optax.clip_by_global_norm(1.0),
      mo.marthe(inner, learning_rate=0.1, hyper_lr_step=1e-3),
  )
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert jax.tree.structure(sharding) == jax.tree.structure(state)
  replicated = NamedSharding(MESH, P())
  marthe_sharding = sharding[1]
  tangent = marthe_sharding.tangent.unseal()
  assert marthe_sharding.b.unseal() == params_sharding
  assert tangent.params == params_sharding
  for name in ("count", "learning_rate", "hyper_lr", "mu", "c", "hypergradient",
               "nonfinite_count"):
    assert getattr(marthe_sharding, name) == replicated, name
  # The inner state's param-shaped parts, located by Optax's tree_map_params.
  for tree in (marthe_sharding.inner_state.unseal(), tangent.inner_state):
    expected = optax.tree_map_params(
        inner(0.1),
        lambda _, s: s,
        tree,
        params_sharding,
        transform_non_params=lambda _: replicated,
    )
    assert tree == expected
  n_sharded = sum(s.spec != P() for s in jax.tree.leaves(sharding))
  n_copies = {optax.sgd: 2, optax.adam: 6}.get(inner, 4)  # b, Z.w (+ moments, tangents)
  assert n_sharded == 2 * n_copies  # dense.w and dense.b in each copy


def test_state_sharding_defaults_to_the_params_own_sharding():
  params = _shapes(w=(16, 8))
  placed = {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32,
                                      sharding=NamedSharding(MESH, P("data")))}
  tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, placed)
  assert sharding.b.unseal()["w"].spec == P("data")
  assert sharding.learning_rate.spec == P()
  one = mo_sharding.state_sharding(state, params, NamedSharding(MESH, P("data")))
  assert jax.tree.structure(one) == jax.tree.structure(sharding)
  assert jax.tree.leaves(one) == jax.tree.leaves(sharding)


def test_state_sharding_errors():
  params = _shapes(w=(16, 8))
  tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
  state = jax.eval_shape(tx.init, params)
  with pytest.raises(ValueError, match="carry no sharding"):
    mo_sharding.state_sharding(state, params)
  with pytest.raises(ValueError, match="structure of params"):
    mo_sharding.state_sharding(state, params, {"v": NamedSharding(MESH, P())})


def test_state_sharding_hd_has_no_tangent():
  params = _shapes(w=(16, 8))
  params_sharding = mo_sharding.fsdp_sharding(params, MESH)
  tx = mo.hd(optax.adam, learning_rate=1e-3, hyper_lr=1e-7)
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert jax.tree.structure(sharding) == jax.tree.structure(state)
  assert jax.tree.leaves(sharding.tangent) == []
  assert sharding.b.unseal() == params_sharding
  adam_state = sharding.inner_state.unseal()[0]
  assert adam_state.mu == adam_state.nu == params_sharding
  assert adam_state.count.spec == P()
