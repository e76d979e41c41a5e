"""Every public transformation held to Optax's contract for contributed optimizers.

In the style of optax/contrib/_common_test.py: extra arguments accepted and
ignored, ``optax.inject_hyperparams`` (honoured), dtypes kept, accumulation
with ``optax.MultiSteps``, a state whose shapes and dtypes do not change
across steps, ``optax.tree.map_params``, and ``optax.tree.get`` unambiguous
next to the inner optimizer's own names. Each transformation runs over SGD,
SGD with momentum 0.9 and Adam. ``tests/test_common.py`` holds the rest
(jit, vmap, wrappers, checkpoints).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from tests import _problems as P

INNERS = ("sgd", "momentum", "adam")
LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.01}
MULTI = {
  "sgd": {"learning_rate": 0.1},
  "momentum": {"learning_rate": 0.05, "momentum": 0.9},
  "adam": {"learning_rate": 0.01, "b1": 0.9},
}
# name -> (factory, its arguments after `inner` for an inner optimizer).
TRANSFORMS = {
  "knob_free": (mo.marthe, lambda i: {"learning_rate": LR[i]}),
  "eq5": (mo.marthe, lambda i: {"learning_rate": LR[i], "hyper_lr_step": 1e-2}),
  "hd": (mo.hd, lambda i: {"learning_rate": LR[i], "hyper_lr": 1e-3}),
  "rtho": (mo.rtho, lambda i: {"learning_rate": LR[i], "hyper_lr": 1e-4}),
  "multi": (mo.marthe_multi, lambda i: {"hyperparams": MULTI[i]}),
}
CASES = [(t, i) for t in TRANSFORMS for i in INNERS]
SINGLE = ("knob_free", "eq5", "hd", "rtho")
TARGET = {"w": jnp.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]]), "b": jnp.array([0.5, -0.5, 2.0])}


def _tx(name, inner):
  factory, kwargs = TRANSFORMS[name]
  return factory(P.INNERS[inner], **kwargs(inner))


def _params(dtype=jnp.float32):
  return {"w": jnp.zeros((2, 3), dtype), "b": jnp.ones(3, dtype)}


def objective(params):
  return sum(
    jnp.sum((p - t.astype(p.dtype)) ** 2)
    for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(TARGET))
  )


def _update(tx, params, state, **extra):
  value, grads = jax.value_and_grad(objective)(params)
  return tx.update(grads, state, params, value_fn=objective, value=value, **extra)


def _train(tx, params, state, steps):
  step = jax.jit(functools.partial(_update, tx))
  for _ in range(steps):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  return params, state


def _marthe_state(state):
  kinds = (mo.MartheState, mo.MultiMartheState)
  (found,) = [
    x
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kinds))
    if isinstance(x, kinds)
  ]
  return found


# --------------------------------------------------------------------------
# Extra arguments.


@pytest.mark.parametrize("name,inner", CASES)
def test_extra_args_are_accepted_and_ignored_without_recompiling(name, inner):
  tx = _tx(name, inner)
  traces = []

  @jax.jit
  def step(params, state, extra):
    traces.append(1)
    return _update(tx, params, state, unexpected_extra_args_your_optimizer_doesnt_expect=extra)

  params = _params()
  params, state = _train(tx, params, tx.init(params), 2)
  out_a = step(params, state, jnp.float32(1.0))
  out_b = step(params, state, jnp.float32(2.0))
  assert len(traces) == 1
  chex.assert_trees_all_equal(out_a, out_b)
  chex.assert_trees_all_close(
    out_a, jax.jit(functools.partial(_update, tx))(params, state), rtol=1e-6, atol=1e-8
  )


# --------------------------------------------------------------------------
# optax.inject_hyperparams.


def _injected(name, inner, **override):
  factory, kwargs = TRANSFORMS[name]
  kwargs = dict(kwargs(inner), **override)
  return optax.inject_hyperparams(factory, static_args=("inner",))(P.INNERS[inner], **kwargs)


@pytest.mark.parametrize("name,inner", CASES)
def test_inject_hyperparams_unchanged_is_the_plain_transformation(name, inner):
  tx, injected = _tx(name, inner), _injected(name, inner)
  params = _params()
  state, state_inject = jax.jit(tx.init)(params), jax.jit(injected.init)(params)
  step, step_inject = (jax.jit(functools.partial(_update, t)) for t in (tx, injected))
  for _ in range(3):
    updates, state = step(params, state)
    updates_inject, state_inject = step_inject(params, state_inject)
    chex.assert_trees_all_close(updates_inject, updates, rtol=1e-6, atol=1e-8)
    chex.assert_trees_all_close(state_inject.inner_state, state, rtol=1e-6, atol=1e-8)
    params = optax.apply_updates(params, updates)
  # MARTHE moved the learning rate away from the injected (unchanged) value.
  lr = jax.tree.leaves(optax.tree.get(state_inject.inner_state, "learning_rate"))[0]
  if name != "eq5":  # beta_0 = 0: eq. 5 waits for two agreeing hypergradients
    assert float(lr) != pytest.approx(LR[inner], rel=1e-6)


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize("inner", ["momentum", "adam"])
def test_injected_learning_rate_restarts_eta(name, inner):
  """A value set in ``state.hyperparams`` is the learning rate the step starts from."""
  tx, injected = _tx(name, inner), _injected(name, inner)
  params = _params()
  params, state = _train(injected, params, injected.init(params), 3)
  before = state.inner_state
  assert float(before.learning_rate) != pytest.approx(0.02)
  state.hyperparams["learning_rate"] = jnp.float32(0.02)
  updates, new = jax.jit(functools.partial(_update, injected))(params, state)
  # The same step of the plain transformation from a state whose eta is 0.02.
  expected_updates, expected = jax.jit(functools.partial(_update, tx))(
    params, before._replace(learning_rate=jnp.float32(0.02))
  )
  chex.assert_trees_all_close(updates, expected_updates, rtol=1e-6, atol=1e-8)
  chex.assert_trees_all_close(
    new.inner_state._replace(start_learning_rate=expected.start_learning_rate),
    expected,
    rtol=1e-6,
    atol=1e-8,
  )
  assert float(new.inner_state.start_learning_rate) == pytest.approx(0.02)
  # The next unchanged step adapts from there: no second restart.
  _, newer = jax.jit(functools.partial(_update, injected))(params, new)
  _, expected_next = jax.jit(functools.partial(_update, tx))(params, expected)
  chex.assert_trees_all_close(
    newer.inner_state.learning_rate, expected_next.learning_rate, rtol=1e-6
  )


def test_injected_hyper_lr_is_honoured():
  injected = _injected("hd", "sgd")
  params = _params()
  params, state = _train(injected, params, injected.init(params), 2)
  assert float(state.inner_state.hyper_lr) == pytest.approx(1e-3)
  state.hyperparams["hyper_lr"] = jnp.float32(5e-2)
  _, state = jax.jit(functools.partial(_update, injected))(params, state)
  assert float(state.inner_state.hyper_lr) == pytest.approx(5e-2)  # HD's beta is fixed


def test_injected_learning_rate_schedule_drives_hd_without_hyper_lr():
  """HD with beta = 0 restarted from a schedule every step is the inner optimizer
  on that schedule."""
  schedule = optax.linear_schedule(0.1, 0.01, 5)
  hd = optax.inject_hyperparams(mo.hd, static_args=("inner",))(
    optax.sgd, learning_rate=schedule, hyper_lr=0.0
  )
  sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
  params = _params()
  s_hd, s_sgd = hd.init(params), sgd.init(params)
  for t in range(5):
    grads = jax.grad(objective)(params)
    u_hd, s_hd = hd.update(grads, s_hd, params)
    u_sgd, s_sgd = sgd.update(grads, s_sgd, params)
    chex.assert_trees_all_close(u_hd, u_sgd, rtol=1e-6)
    assert float(s_hd.inner_state.learning_rate) == pytest.approx(float(schedule(t)))
    params = optax.apply_updates(params, u_hd)


def test_rebuilt_multi_restarts_only_the_changed_hyperparameter():
  inner = P.INNERS["momentum"]
  tx = mo.marthe_multi(inner, {"learning_rate": 0.05, "momentum": 0.9})
  rebuilt = mo.marthe_multi(inner, {"learning_rate": 0.02, "momentum": 0.9})
  params = _params()
  params, state = _train(tx, params, tx.init(params), 3)
  updates, new = jax.jit(functools.partial(_update, rebuilt))(params, state)
  moved = dict(state.hyperparams, learning_rate=jnp.float32(0.02))
  assert float(state.hyperparams["momentum"]) != pytest.approx(0.9)
  expected_updates, expected = jax.jit(functools.partial(_update, tx))(
    params, state._replace(hyperparams=moved)
  )
  chex.assert_trees_all_close(updates, expected_updates, rtol=1e-6, atol=1e-8)
  chex.assert_trees_all_close(new.hyperparams, expected.hyperparams, rtol=1e-6)
  np.testing.assert_allclose(new.start_hyperparams, [0.02, 0.9], rtol=1e-6)


def test_inject_hyperparams_needs_a_static_inner_and_an_hd_mu():
  params = _params()
  with pytest.raises(ValueError, match=r"static_args=\('inner',\)"):
    optax.inject_hyperparams(mo.marthe)(optax.sgd, learning_rate=0.1).init(params)
  # mu = 0 is HD, a state without a tangent: it cannot become traced.
  traced_mu = optax.inject_hyperparams(mo.marthe, static_args=("inner",))(
    optax.sgd, learning_rate=0.1, hyper_lr_step=0.0, mu=0.0
  )
  state = traced_mu.init(params)
  with pytest.raises(ValueError, match=r"static_args=\('inner', 'mu'\)"):
    jax.jit(functools.partial(_update, traced_mu))(params, state)
  static_mu = optax.inject_hyperparams(mo.marthe, static_args=("inner", "mu"))(
    optax.sgd, learning_rate=0.1, hyper_lr_step=0.0, mu=0.0
  )
  _, state = jax.jit(functools.partial(_update, static_mu))(params, static_mu.init(params))
  assert int(state.inner_state.count) == 1


# --------------------------------------------------------------------------
# Dtypes, accumulation, a stable state.


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name,inner", CASES)
def test_dtypes_are_preserved(name, inner, dtype):
  tx = _tx(name, inner)
  params = _params(dtype)
  state = jax.jit(tx.init)(params)
  step = jax.jit(functools.partial(_update, tx))
  for _ in range(3):
    updates, state = step(params, state)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(dtype)}
    params = optax.apply_updates(params, updates)
  s = _marthe_state(state)
  # The hyper-state is at least float32; the params-shaped trees keep the
  # params' dtype.
  for field in ("hyper_lr", "mu", "c", "hypergradient", "loss_ema"):
    assert getattr(s, field).dtype == jnp.float32, field
  # HD keeps no tangent beyond b; a fixed horizon (RTHO's mu = 1) no b.
  trees = [t for t in (s.b.unseal(), s.tangent.unseal().params) if jax.tree.leaves(t)]
  assert trees
  for tree in trees:
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}
  chex.assert_tree_all_finite(state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name,inner", CASES)
def test_gradient_accumulation_with_multisteps(name, inner, dtype):
  tx = _tx(name, inner)
  accumulated = optax.MultiSteps(tx, every_k_schedule=2)
  params = _params(dtype)
  step = jax.jit(functools.partial(_update, accumulated))
  updates, state = step(params, jax.jit(accumulated.init)(params))
  chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
  assert int(_marthe_state(state).count) == 0
  # The second micro-step (the same gradient: their mean is exact) is one
  # step of the transformation.
  updates, state = step(params, state)
  expected_updates, expected = jax.jit(functools.partial(_update, tx))(params, tx.init(params))
  chex.assert_trees_all_close(updates, expected_updates, rtol=1e-6, atol=1e-8)
  chex.assert_trees_all_close(state.inner_opt_state, expected, rtol=1e-6, atol=1e-8)
  assert int(_marthe_state(state).count) == 1


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name,inner", CASES)
def test_state_shapes_and_dtypes_are_stable(name, inner, dtype):
  tx = _tx(name, inner)
  params = _params(dtype)
  state = tx.init(params)

  def step(params, state):
    value, grads = jax.value_and_grad(objective)(params)
    value = value.astype(jnp.bfloat16 if dtype == jnp.float16 else jnp.float16)
    # lax.cond between the update and no update: both branches must agree.
    cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
    updates, state = jax.lax.cond(
      cond,
      lambda: tx.update(grads, state, params, value_fn=objective, value=value),
      lambda: (optax.tree.zeros_like(params), state),
    )
    return optax.apply_updates(params, updates), state

  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  expected = jax.eval_shape(tx.init, params)
  for _ in range(2):
    params, state = jax.jit(step)(params, state)
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    assert shapes(state) == shapes(expected)
    assert shapes(jax.eval_shape(step, params, state)[1]) == shapes(expected)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(dtype)}


# --------------------------------------------------------------------------
# optax.tree.map_params and optax.tree.get.


def _per_group(inner):
  labels = {"w": "weights", "b": "biases"}
  return mo.marthe_multi(
    mo.per_group(P.INNERS[inner], labels),
    {"learning_rate": {"weights": LR[inner], "biases": LR[inner]}},
  )


MAP_CASES = [pytest.param(lambda i, n=n: _tx(n, i), n in SINGLE, id=n) for n in TRANSFORMS] + [
  pytest.param(_per_group, False, id="multi_per_group"),
  pytest.param(
    lambda i: optax.chain(optax.clip_by_global_norm(1.0), _tx("eq5", i)), True, id="chain_eq5"
  ),
  pytest.param(lambda i: optax.chain(optax.identity(), _tx("multi", i)), False, id="chain_multi"),
]


def _params_copies(s):
  """The params-shaped trees in a MARTHE state, with their own leading axes."""
  copies = [s.b.unseal()] if jax.tree.leaves(s.b.unseal()) else []
  tangent = s.tangent.unseal()
  if jax.tree.leaves(tangent):
    copies.append(tangent.params)
  return copies


@pytest.mark.parametrize("make,single", MAP_CASES)
@pytest.mark.parametrize("inner", INNERS)
def test_map_params_maps_every_params_copy(make, single, inner):
  tx = make(inner)
  params = _params()
  _, state = _train(tx, params, tx.init(params), 2)
  # A no-op map, as optax's own check.
  chex.assert_trees_all_equal(optax.tree.map_params(tx, lambda v: v, state), state)
  mapped = optax.tree.map_params(tx, lambda v: jnp.full_like(v, 7.0), state)
  s, m = _marthe_state(state), _marthe_state(mapped)
  for tree in _params_copies(m) + [m.inner_state.unseal()]:
    for x in jax.tree.leaves(tree):
      if jnp.issubdtype(x.dtype, jnp.floating):  # step counts are not params
        assert np.all(np.asarray(x) == 7.0)
  # b (unless the horizon is fixed), Z.w (unless HD), the inner moments (a
  # momentum trace, Adam's mu and nu) and their tangents (unless HD): two
  # leaves (w, b) each.
  moments = {"sgd": 0, "momentum": 1, "adam": 2}[inner]
  has_tangent = bool(jax.tree.leaves(s.tangent.unseal()))
  copies = len(_params_copies(s)) + moments * (1 + has_tangent)
  sevens = [x for x in jax.tree.leaves(mapped) if np.all(np.asarray(x) == 7.0)]
  assert len(sevens) == 2 * copies
  # The scalars are not params.
  for field in ("hyper_lr", "mu", "hypergradient", "count", "start_hyper_lr"):
    np.testing.assert_array_equal(getattr(m, field), getattr(s, field))
  # With a tree like the params, as for shardings (optax.masked, inside
  # per_group, leaves MaskedNode where a group has no params).
  specs = {"w": "spec_w", "b": "spec_b"}
  masked = lambda x: isinstance(x, optax.MaskedNode)
  tagged = optax.tree.map_params(
    tx,
    lambda v, spec: v if masked(v) else spec,
    state,
    specs,
    transform_non_params=lambda _: None,
    is_leaf=masked,
  )
  t = _marthe_state(tagged)
  for copy in _params_copies(t):
    assert copy == specs
  if single:
    assert t.learning_rate is None
  else:
    assert jax.tree.leaves(t.hyperparams) == []


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_tree_get_is_unambiguous_with_an_adam_inner(name):
  tx = optax.chain(optax.identity(), _tx(name, "adam"))
  params = _params()
  _, state = _train(tx, params, tx.init(params), 2)
  s = _marthe_state(state)
  inner_adam = s.inner_state.unseal()[0]
  assert isinstance(inner_adam, optax.ScaleByAdamState)  # it has mu and count
  for field in (
    "mu",
    "count",
    "hyper_lr",
    "hypergradient",
    "c",
    "nonfinite_count",
    "safeguard_count",
    "repaired_count",
  ):
    found = optax.tree.get_all_with_path(state, field)
    assert len(found) == 1, (field, found)
    assert optax.tree.get(state, field) is getattr(s, field)
  assert optax.tree.get(state, "nu") is None  # the inner names are sealed
  lr = optax.tree.get(state, "learning_rate")
  assert lr is (s.learning_rate if name in SINGLE else s.hyperparams["learning_rate"])
  # optax.tree.set reaches MARTHE's fields and leaves the sealed trees alone.
  edited = optax.tree.set(state, mu=jnp.full_like(s.mu, 0.5))
  np.testing.assert_array_equal(optax.tree.get(edited, "mu"), 0.5)
  chex.assert_trees_all_equal(_marthe_state(edited).inner_state, s.inner_state)
