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
With ``marthe_multi`` (``K = 2``: AdamW's learning rate and weight decay;
``K = 4``: a learning rate per layer through ``per_group``, whose inner states
are masked), every ``[K, ...]`` and masked slice of a param must be split like
that param under FSDP, the FSDP run must match one device, and each device
must hold ``1 / 8`` of the state (plus the leaves that cannot be split). The
helpers of ``marthe_optax.sharding`` are also tested in process, on abstract
meshes.
"""

import collections
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
MULTI = {"adamw_k2": 2, "per_group_k4": 4}  # case: K


@pytest.fixture(scope="module")
def result() -> dict:
  env = dict(os.environ)
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
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
  for name in (
    "learning_rate",
    "learning_rate_pointwise",
    "mu",
    "hyper_lr",
    "hypergradient",
    "params",
  ):
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


def test_multi_cases_ran(result):
  assert {name: case["k"] for name, case in result["multi"].items()} == MULTI


@pytest.mark.parametrize("case", MULTI)
def test_multi_slices_sharded_like_their_params(result, case):
  """Every [K, ...] and masked slice of a split param is split like it."""
  c = result["multi"][case]
  assert c["mismatches"] == []  # each leaf against the sharding its path implies
  assert c["params_mismatches"] == []
  kinds = c["kinds"]
  # b and Z.w at least, one [K, ...] leaf per param each (4 layers, w and b).
  assert kinds["stacked"]["leaves"] >= 16
  for kind in ("stacked", "masked", "param"):
    assert kinds[kind]["split"] == kinds[kind]["param_split"], kind
  # All but the 10-wide output bias's slices can be split over 8 devices.
  assert kinds["stacked"]["param_split"] == kinds["stacked"]["leaves"] * 7 // 8
  if case.startswith("per_group"):
    # The masked momentum of each group and its [K, ...] tangent.
    assert kinds["masked"]["leaves"] == 16
    assert kinds["masked"]["param_split"] == 14
  else:
    assert kinds["masked"]["leaves"] == 0
    assert kinds["param"]["param_split"] == 14  # Adam's mu and nu
  assert kinds["other"]["split"] == 0  # scalars and [K] vectors: replicated


@pytest.mark.parametrize("case", MULTI)
def test_multi_state_bytes_per_device(result, case):
  """Each device holds 1/8 of the state, plus what cannot be split."""
  c = result["multi"][case]
  assert c["bytes_per_device"] == c["bytes_ideal"]
  assert c["bytes_per_device"] <= c["bytes_total"] / DEVICES + c["bytes_replicated"]
  # The unsplittable part (scalars, [K] vectors, the 10-wide bias's copies)
  # is small, so the bound above is close to bytes_total / 8.
  assert c["bytes_replicated"] < 0.01 * c["bytes_total"]


@pytest.mark.parametrize("case", MULTI)
def test_multi_matches_single_device(result, case):
  c = result["multi"][case]
  for name, err in c["rel_err"].items():
    assert err < RTOL, f"{case}: {name} deviates by {err:.2e}"
  assert c["params_rel_err"] < RTOL
  # Not vacuous: every hyperparameter moved, and no guard fired.
  assert len(c["hyper_moved"]) == MULTI[case]
  assert min(c["hyper_moved"].values()) > 0.1, c["hyper_moved"]
  assert c["counters"]["count"] == STEPS
  assert c["counters"]["nonfinite_count"] == c["counters"]["safeguard_count"] == 0


# In process: marthe_optax.sharding on an abstract mesh (no devices needed).

MESH = AbstractMesh((DEVICES,), ("data",))


def _shapes(**shapes):
  return {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in shapes.items()}


def test_fsdp_sharding_splits_largest_divisible_axis():
  params = _shapes(w1=(784, 512), w2=(500, 512), tie=(16, 16), b=(500,), s=(), odd=(3, 5))
  specs = {k: s.spec for k, s in mo_sharding.fsdp_sharding(params, MESH).items()}
  assert specs == dict(
    w1=P("data", None),
    w2=P(None, "data"),
    tie=P("data", None),
    b=P(),
    s=P(),
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
  for name in ("count", "learning_rate", "hyper_lr", "mu", "c", "hypergradient", "nonfinite_count"):
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
  placed = {
    "w": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=NamedSharding(MESH, P("data")))
  }
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


def _seals(node) -> bool:
  return callable(getattr(node, "unseal", None))


def _unsealed(tree):
  """``tree`` with each sealing node replaced by the tree it holds (same leaves)."""
  return jax.tree.map(lambda x: _unsealed(x.unseal()) if _seals(x) else x, tree, is_leaf=_seals)


def _slices(state, sharding, params, params_sharding, k):
  """(path, kind, spec, expected spec) of each state leaf, kind from its path.

  A leaf whose path in the unsealed state ends with a param's path is a
  ``'param'`` slice (that param's shape) or a ``'stacked'`` one (``[k,
  *shape]``); any other leaf is ``'other'`` and must be replicated.
  """
  by_path = {
    jax.tree_util.keystr(path): (np.shape(p), s.spec)
    for (path, p), s in zip(
      jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(params_sharding)
    )
  }
  out = []
  for (path, x), s in zip(
    jax.tree_util.tree_leaves_with_path(_unsealed(state)), jax.tree.leaves(sharding)
  ):
    name = jax.tree_util.keystr(path)
    match = max((p for p in by_path if name.endswith(p)), key=len, default=None)
    shape, spec = by_path.get(match, (None, P()))
    if match is None:
      kind, expected = "other", P()
    elif x.shape == (k,) + shape:
      kind, expected = "stacked", P(None, *spec) if spec != P() else P()
    else:
      assert x.shape == shape, (name, x.shape, shape)
      kind, expected = "param", spec
    out.append((name, kind, s.spec, expected))
  return out


def _mlp_shapes():
  return {
    "dense": _shapes(w=(16, 24), b=(24,)),
    "out": _shapes(w=(24, 8), b=(8,)),
    "scale": jax.ShapeDtypeStruct((), jnp.float32),
  }


@pytest.mark.parametrize(
  "hyperparams",
  [
    {"learning_rate": 1e-3, "weight_decay": 1e-4},
    {"learning_rate": 1e-3, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999},
  ],
  ids=["k2", "k4"],
)
@pytest.mark.parametrize("first_order", [True, False], ids=["first_order", "hvp"])
@pytest.mark.parametrize("mu,copies", [("smoothed", 4), (0.99, 3)], ids=["smoothed", "fixed"])
def test_state_sharding_stacked_slices(hyperparams, first_order, mu, copies):
  """marthe_multi's [K, ...] tangents and b: leading axis whole, rest like the param."""
  params = _mlp_shapes()
  params_sharding = mo_sharding.fsdp_sharding(params, MESH)
  tx = mo.marthe_multi(optax.adamw, hyperparams, first_order=first_order, mu=mu)
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert jax.tree.structure(sharding) == jax.tree.structure(state)
  k = len(hyperparams)
  slices = _slices(state, sharding, params, params_sharding, k)
  assert [s for s in slices if s[2] != s[3]] == []
  kinds = [kind for _, kind, _, _ in slices]
  # b (adaptive horizons only), Z.w and the tangents of Adam's mu and nu: 4 (3)
  # stacked copies of 5 params; Adam's mu and nu themselves: 2 copies.
  assert kinds.count("stacked") == copies * 5
  assert kinds.count("param") == 2 * 5
  n_split = sum(spec != P() for _, kind, spec, _ in slices if kind == "stacked")
  assert n_split == copies * 4  # all but the scalar "scale"
  # The per-hyperparameter vectors are replicated.
  for name in ("mu", "hyper_lr", "hypergradient"):
    assert optax.tree.get(sharding, name) == NamedSharding(MESH, P()), name


@pytest.mark.parametrize(
  "inner",
  [functools.partial(optax.sgd, momentum=0.9), optax.adam],
  ids=["momentum", "adam"],
)
def test_state_sharding_per_group_masked_states(inner):
  """per_group's masked inner states (and their [K, ...] tangents) are split."""
  params = _mlp_shapes()
  labels = {
    "dense": {"w": "hidden", "b": "hidden"},
    "out": {"w": "out", "b": "out"},
    "scale": "out",
  }
  params_sharding = mo_sharding.fsdp_sharding(params, MESH)
  tx = mo.marthe_multi(
    mo.per_group(inner, labels),
    {"learning_rate": {"hidden": 0.1, "out": 0.01}},
    first_order=False,
  )
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  slices = _slices(state, sharding, params, params_sharding, 2)
  assert [s for s in slices if s[2] != s[3]] == []
  masked = [s for s in slices if ".inner_states[" in s[0] and s[1] != "other"]
  n_moments = 1 if inner is not optax.adam else 2
  # Each param's moments in its own group's masked state, and their tangents;
  # all but the scalar "scale" are split.
  assert len(masked) == 2 * n_moments * 5
  assert sum(spec != P() for _, _, spec, _ in masked) == 2 * n_moments * 4
  # The masked trees keep optax.MaskedNode where the other group's params are.
  leaves = jax.tree.leaves(_unsealed(sharding), is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  assert sum(isinstance(x, optax.MaskedNode) for x in leaves) == 2 * n_moments * 5


def test_state_sharding_optax_masked_inner():
  """An optax.masked inner optimizer: the unmasked params' moments follow them."""
  params = _mlp_shapes()
  params_sharding = mo_sharding.fsdp_sharding(params, MESH)
  mask = {"dense": {"w": True, "b": False}, "out": {"w": True, "b": False}, "scale": False}
  tx = mo.marthe(
    lambda learning_rate: optax.masked(optax.adam(learning_rate), mask),
    learning_rate=0.1,
    hyper_lr_step=1e-3,
  )
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  slices = _slices(state, sharding, params, params_sharding, None)
  assert [s for s in slices if s[2] != s[3]] == []
  # b, Z.w: 5 params each; Adam's mu and nu and their tangents: 2 params each.
  assert sum(kind == "param" for _, kind, _, _ in slices) == 2 * 5 + 4 * 2
  assert sum(spec != P() for _, _, spec, _ in slices) == 2 * 4 + 4 * 2


def test_state_sharding_same_shape_different_shardings():
  """Two params of one shape, split differently: each copy follows its place."""
  params = _shapes(a=(16, 8), b=(16, 8))
  params_sharding = {
    "a": NamedSharding(MESH, P("data", None)),
    "b": NamedSharding(MESH, P(None, "data")),
  }
  tx = mo.marthe_multi(optax.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-4})
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  slices = _slices(state, sharding, params, params_sharding, 2)
  assert [s for s in slices if s[2] != s[3]] == []
  specs = {spec for _, kind, spec, _ in slices if kind != "other"}
  assert specs == {P("data", None), P(None, "data"), P(None, "data", None), P(None, None, "data")}


def test_state_sharding_stacked_shape_that_is_another_params_shape():
  """With K = 4, v's [4, 16] slices have w's shape; their place says they are v's."""
  mesh = AbstractMesh((4,), ("data",))
  params = _shapes(w=(4, 16), v=(16,))
  params_sharding = {"w": NamedSharding(mesh, P("data", None)), "v": NamedSharding(mesh, P("data"))}
  tx = mo.marthe_multi(
    optax.adamw,
    {"learning_rate": 1e-3, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999},
    mu="smoothed",  # keeps b: four stacked copies of v
  )
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  slices = _slices(state, sharding, params, params_sharding, 4)
  assert [s for s in slices if s[2] != s[3]] == []
  v_slices = [
    spec for name, kind, spec, _ in slices if kind == "stacked" and name.endswith("['v']")
  ]
  assert len(v_slices) == 4 and set(v_slices) == {P(None, "data")}


def test_state_sharding_hyperparameter_vectors_stay_replicated():
  """[K] vectors are replicated even when a param is a vector of length K."""
  mesh = AbstractMesh((2,), ("data",))
  params = _shapes(w=(4, 2), v=(2,))
  params_sharding = mo_sharding.fsdp_sharding(params, mesh)
  assert params_sharding["v"].spec == P("data")
  tx = mo.marthe_multi(optax.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-4})
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  for name in ("mu", "c", "hyper_lr", "hypergradient"):
    assert np.shape(optax.tree.get(state, name)) == (2,)
    assert optax.tree.get(sharding, name).spec == P(), name
  slices = _slices(state, sharding, params, params_sharding, 2)
  assert [s for s in slices if s[2] != s[3]] == []


def test_state_sharding_bare_array_params():
  params = jax.ShapeDtypeStruct((16, 3), jnp.float32)
  shard = NamedSharding(MESH, P("data", None))
  tx = mo.marthe_multi(optax.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-4})
  state = jax.eval_shape(tx.init, params)
  sharding = mo_sharding.state_sharding(state, params, shard)
  specs = [(np.shape(x), s.spec) for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(sharding))]
  assert {spec for shape, spec in specs if shape == (2, 16, 3)} == {P(None, "data", None)}
  assert {spec for shape, spec in specs if shape == (16, 3)} == {P("data", None)}
  assert {spec for shape, spec in specs if len(shape) < 2} == {P()}


@jax.tree_util.register_pytree_node_class
class _Boxed:
  """A node that holds one tree as its single, unnamed child (no ``unseal``)."""

  def __init__(self, tree):
    self.tree = tree

  def tree_flatten(self):
    return (self.tree,), None

  @classmethod
  def tree_unflatten(cls, _, children):
    return cls(*children)


@jax.tree_util.register_pytree_node_class
class _Flat:
  """A node that hides its tree: its children are the leaves, by position."""

  def __init__(self, leaves, treedef):
    self.leaves, self.treedef = tuple(leaves), treedef

  def tree_flatten(self):
    return self.leaves, self.treedef

  @classmethod
  def tree_unflatten(cls, treedef, leaves):
    return cls(leaves, treedef)


def _stacked(tree, k):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((k,) + x.shape, x.dtype), tree)


def test_state_sharding_any_node_holding_a_tree():
  """No reliance on Sealed: a node whose one child is the tree is looked into."""
  params = _shapes(a=(16, 8), b=(16, 8), c=(24,))
  params_sharding = {
    "a": NamedSharding(MESH, P("data", None)),
    "b": NamedSharding(MESH, P(None, "data")),
    "c": NamedSharding(MESH, P("data")),
  }
  masked = {"a": params["a"], "b": optax.MaskedNode(), "c": params["c"]}
  state = {
    "stacked": _Boxed(_stacked(params, 3)),
    "masked": _Boxed(optax.MaskedState(inner_state=(masked, _stacked(masked, 3)))),
    "count": jax.ShapeDtypeStruct((), jnp.int32),
    "vector": jax.ShapeDtypeStruct((3,), jnp.float32),
  }
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert sharding["stacked"].tree == {
    "a": NamedSharding(MESH, P(None, "data", None)),
    "b": NamedSharding(MESH, P(None, None, "data")),
    "c": NamedSharding(MESH, P(None, "data")),
  }
  plain, stacked = sharding["masked"].tree.inner_state
  assert plain == {"a": params_sharding["a"], "b": optax.MaskedNode(), "c": params_sharding["c"]}
  assert stacked == {
    "a": sharding["stacked"].tree["a"],
    "b": optax.MaskedNode(),
    "c": sharding["stacked"].tree["c"],
  }
  assert sharding["count"].spec == sharding["vector"].spec == P()


def test_state_sharding_copy_in_another_container_follows_key_paths():
  """An OrderedDict copy of dict params: matched leaf by leaf by key path."""
  params = _shapes(a=(16, 8), b=(16, 8))
  params_sharding = {
    "a": NamedSharding(MESH, P("data", None)),
    "b": NamedSharding(MESH, P(None, "data")),
  }
  copy = collections.OrderedDict(a=params["a"], b=_stacked(params["b"], 2))
  state = (copy, {"c": params["a"]})
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert sharding[0]["a"].spec == P("data", None)
  assert sharding[0]["b"].spec == P(None, None, "data")
  assert sharding[1]["c"].spec == P()  # named like no param: replicated


def test_state_sharding_hidden_leaves_follow_unambiguous_shapes():
  """Leaves of a node that hides its tree: by shape, only when unambiguous."""
  params = {
    "a": jax.ShapeDtypeStruct((16, 8), jnp.float32),
    "b": jax.ShapeDtypeStruct((16, 8), jnp.float32),
    "c": jax.ShapeDtypeStruct((24,), jnp.float32),
    "d": jax.ShapeDtypeStruct((4, 24), jnp.float32),
  }
  params_sharding = {
    "a": NamedSharding(MESH, P("data", None)),
    "b": NamedSharding(MESH, P(None, "data")),
    "c": NamedSharding(MESH, P("data")),
    "d": NamedSharding(MESH, P(None, "data")),
  }
  hidden = [
    jax.ShapeDtypeStruct((24,), jnp.float32),  # c's shape: c
    jax.ShapeDtypeStruct((3, 24), jnp.float32),  # [3, *c]: c, stacked
    jax.ShapeDtypeStruct((4, 24), jnp.float32),  # d, or [4, *c]: the same split
    jax.ShapeDtypeStruct((16, 8), jnp.float32),  # a or b: ambiguous
    jax.ShapeDtypeStruct((2, 16, 8), jnp.float32),  # [2, *a] or [2, *b]
    jax.ShapeDtypeStruct((), jnp.float32),  # a scalar
  ]
  state = _Flat(hidden, None)
  sharding = mo_sharding.state_sharding(state, params, params_sharding)
  assert [s.spec for s in sharding.leaves] == [
    P("data"),
    P(None, "data"),
    P(None, "data"),
    P(),
    P(),
    P(),
  ]
  # d split on its first axis: [4, *c] and d now disagree.
  params_sharding["d"] = NamedSharding(AbstractMesh((4, 2), ("x", "data")), P("x", None))
  sharding = mo_sharding.state_sharding(
    state, params, params_sharding, replicated=NamedSharding(MESH, P())
  )
  assert sharding.leaves[2].spec == P()


def test_state_sharding_leading_axis_of_other_shardings():
  """A spec gains a whole leading axis even on a 1-device mesh; a
  SingleDeviceSharding is the same at every rank."""
  params = _shapes(w=(4,))
  tx = mo.marthe_multi(optax.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-4})
  state = jax.eval_shape(tx.init, params)
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
  sharding = mo_sharding.state_sharding(state, params, NamedSharding(mesh, P("data")))
  specs = {(np.shape(x), s.spec) for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(sharding))}
  assert {spec for shape, spec in specs if shape == (2, 4)} == {P(None, "data")}
  assert {spec for shape, spec in specs if shape == (4,)} == {P("data")}
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  sharding = mo_sharding.state_sharding(state, params, device)
  assert set(jax.tree.leaves(sharding)) == {device}
