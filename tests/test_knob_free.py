"""The knob-free mode: scale-free steps, first-order tangent, safeguard, schedules.

Exact values against autodiff where the mode defines a derivative (the
first-order tangent is the hypergradient of the dynamics whose training
gradients are held fixed; a schedule's scale), invariants where it promises
one (the objective's scale), and the safeguard and the NaN-tangent repair on
constructed cases.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_optax import _rules
from marthe_optax import _tangent
from tests import _problems as P

STEPS = 7
ETA0 = {"sgd": 0.3, "momentum": 0.1, "adam": 0.05, "adamw": 0.05, "chain": 0.1}


def _runner(tx, problem, steps=None, value=True):
  """``run(scale)``: like ``P.run``, ``E`` times ``scale``, ``value=`` fed.

  The step is compiled once per ``tx`` (``scale`` is traced).
  """
  steps = problem.xs.shape[0] if steps is None else steps

  @jax.jit
  def step(params, state, t, scale):
    x, y = problem.xs[t], problem.ys[t]
    loss, grads = jax.value_and_grad(P.loss)(params, x, y)
    val_grads = jax.grad(lambda p: scale * P.loss(p, problem.x_val, problem.y_val))(params)
    extra = dict(value=loss) if value else {}
    updates, state = tx.update(
      grads, state, params, val_grads=val_grads, value_fn=lambda p: P.loss(p, x, y), **extra
    )
    return optax.apply_updates(params, updates), state

  def run(scale=1.0):
    params, state = problem.params, tx.init(problem.params)
    trace = []
    for t in range(steps):
      params, state = step(params, state, t, scale)
      trace.append(mo.hyperparam_log(state))
    return params, state, {k: np.array([r[k] for r in trace]) for k in trace[0]}

  return run


def _run(tx, problem, steps=None, value=True):
  return _runner(tx, problem, steps, value)()


# --------------------------------------------------------------------------
# Scale invariance: multiplying E by c > 0 changes nothing.


@pytest.mark.parametrize("first_order", [True, False])
@pytest.mark.parametrize("mu", ["smoothed", "adaptive", 0.9])
def test_trajectory_is_invariant_to_the_scale_of_the_objective(mu, first_order):
  with jax.enable_x64(True):
    problem = P.make_problem(seed=4, steps=12, dtype=jnp.float64)
    tx = mo.marthe(optax.sgd, 0.1, mu=mu, first_order=first_order, step_size=0.1)
    run = _runner(tx, problem)
    base = run()
    moved = base[2]["learning_rate"]
    assert np.ptp(moved) > 1e-3  # the learning rate does move
    for c in (8.0, 2.0**-10):  # powers of two: bit-for-bit
      params, _, trace = run(c)
      np.testing.assert_array_equal(trace["learning_rate"], moved)
      chex.assert_trees_all_equal(params, base[0])
    for c in (3.7, 1e-3, 250.0):  # any c > 0: to round-off
      params, _, trace = run(c)
      np.testing.assert_allclose(trace["learning_rate"], moved, rtol=1e-12)
      np.testing.assert_allclose(trace["mu/learning_rate"], base[2]["mu/learning_rate"], rtol=1e-12)
      chex.assert_trees_all_close(params, base[0], rtol=1e-12)


def test_multi_trajectory_is_invariant_to_the_scale_of_the_objective():
  with jax.enable_x64(True):
    problem = P.make_problem(seed=5, steps=10, dtype=jnp.float64)
    tx = mo.marthe_multi(
      functools.partial(optax.sgd, nesterov=True),
      {"learning_rate": 0.1, "momentum": 0.5},
      step_size=0.1,
    )
    run = _runner(tx, problem)
    _, _, base = run()
    _, _, scaled = run(42.0)
    for name in ("learning_rate", "momentum"):
      assert np.ptp(base[name]) > 1e-4, name
      np.testing.assert_allclose(scaled[name], base[name], rtol=1e-12)
    assert np.all((base["momentum"] > 0) & (base["momentum"] < 1))


# --------------------------------------------------------------------------
# The first-order tangent.


@pytest.mark.parametrize("mu", [0.5, 1.0])
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "chain"])
def test_first_order_hypergradient_matches_autodiff_with_fixed_gradients(name, mu):
  """step_size = 0 freezes eta; the tangent is that of the H = 0 dynamics."""
  with jax.enable_x64(True):
    problem = P.make_problem(seed=3, steps=STEPS, dtype=jnp.float64)
    inner, eta0 = P.INNERS[name], ETA0[name]
    tx = mo.marthe(inner, eta0, mu=mu, first_order=True, step_size=0.0)
    _, _, trace = _run(tx, problem, value=False)
    np.testing.assert_array_equal(trace["learning_rate"], eta0)
    for t in range(1, STEPS):
      expected = P.unrolled_directional_derivative(
        inner, problem, eta0, mu, t, fixed_gradients=True
      )
      assert abs(expected) > 1e-8
      np.testing.assert_allclose(trace["hypergradient/learning_rate"][t], expected, rtol=1e-10)


def _live(inner, first_order, eta=0.01):
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  update = lambda g, s, w, theta: inner(theta[0]).update(g, s, w)
  return _tangent.live_state_leaves(
    update, jnp.array([eta]), params, inner(eta).init(params), params, first_order
  )


ADAM_FULL = (False, True, True, True, True)  # count (int), mu, nu (2 leaves each)


@pytest.mark.parametrize(
  "name,first_order,full",
  [
    ("sgd", (), ()),
    # The moments depend on the gradient alone: with H = 0 nothing feeds them.
    ("momentum", (False, False), (True, True)),
    ("adam", (False,) * 5, ADAM_FULL),
    ("adamw", (False,) * 5, ADAM_FULL),
    # add_decayed_weights before the momentum: the trace sees the params.
    ("chain", (True, True), (True, True)),
  ],
)
def test_live_state_leaves_of_the_tangent(name, first_order, full):
  assert _live(P.INNERS[name], first_order=True) == first_order
  # The full tangent moves the gradient too: every float leaf is live.
  assert _live(P.INNERS[name], first_order=False) == full


@pytest.mark.parametrize(
  "name,prone",
  [
    ("sgd", (False,)),  # linear in the gradient and the rate: nothing to repair
    ("momentum", (False, False)),
    # u = -eta X with X = mu_hat / (sqrt(nu_hat) + eps), which may be infinite; but
    # du = -d eta X: where it is NaN, X is not finite and neither is u.
    ("adam", (False, False, False, False)),
    # clip_by_global_norm divides by the norm, but again du = -d eta X, u = -eta X.
    ("chain", (False, False)),
    # d sqrt(eta) is infinite at eta = 0 (where u = 0): the scalar factor is NaN-prone.
    ("sqrt_rate", (True,)),
  ],
)
def test_nan_prone_tangent_leaves(name, prone):
  params = {"w": jnp.ones((3, 2))}
  inner = (lambda lr: optax.sgd(jnp.sqrt(lr))) if name == "sqrt_rate" else P.INNERS[name]
  state = inner(0.1).init(params)
  step = lambda theta: inner(theta[0]).update(params, state, params)
  flags = _tangent.nan_prone(step, (jnp.array([0.1]),), (jnp.array([1.0]),))
  assert tuple(flags) == prone


def test_a_tangent_flagged_not_nan_prone_has_no_nan_at_a_finite_primal():
  """The linear-in-the-rate rule is sound: at eta = 0 with a zero second moment
  (Adam's X = 0 / (0 + eps) = 0) and at an infinite gradient (X, u not finite),
  d u / d eta is NaN only where u is not finite."""
  params = {"w": jnp.zeros((2,))}
  state = optax.adam(0.1).init(params)
  for grads in ({"w": jnp.array([0.0, 1.0])}, {"w": jnp.array([jnp.inf, 1.0])}):
    for eta in (0.0, 0.1):
      step = lambda theta: optax.adam(theta[0]).update(grads, state, params)[0]
      u, du = jax.jvp(step, (jnp.array([eta]),), (jnp.array([1.0]),))
      bad = jnp.isnan(du["w"]) & jnp.isfinite(u["w"])
      assert not bool(jnp.any(bad)), (grads, eta)


def _linear_problem(seed=0, steps=8, dim=6):
  """A loss linear in the params (its Hessian is 0): L_t(w) = <a_t, w>."""
  ka, kv, kw = jax.random.split(jax.random.PRNGKey(seed), 3)
  a = jax.random.normal(ka, (steps, dim), jnp.float64)
  v = jax.random.normal(kv, (dim,), jnp.float64)
  w0 = {"w": jax.random.normal(kw, (dim,), jnp.float64)}
  return a, v, w0


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_first_order_and_full_tangents_agree_on_a_linear_loss(name):
  with jax.enable_x64(True):
    a, v, w0 = _linear_problem()
    outs = {}
    for first_order in (True, False):
      tx = mo.marthe(P.INNERS[name], ETA0[name], mu=0.9, first_order=first_order, step_size=0.05)
      params, state = w0, tx.init(w0)
      trace = []
      for t in range(a.shape[0]):
        loss = lambda p, t=t: jnp.dot(a[t], p["w"])
        updates, state = tx.update(
          jax.grad(loss)(params), state, params, value_fn=loss, val_grads={"w": v}
        )
        params = optax.apply_updates(params, updates)
        trace.append((state.hypergradient, state.learning_rate))
      outs[first_order] = (params, np.array(trace))
    assert np.all(outs[True][1][1:, 0] != 0)
    np.testing.assert_allclose(outs[True][1], outs[False][1], rtol=1e-13)
    chex.assert_trees_all_close(outs[True][0], outs[False][0], rtol=1e-13)


def test_first_order_needs_no_loss_closure_but_the_full_tangent_does():
  problem = P.make_problem()
  params = problem.params
  grads = jax.grad(P.loss)(params, problem.xs[0], problem.ys[0])
  tx = mo.marthe(optax.sgd, 0.1)  # knob-free default: first order
  tx.update(grads, tx.init(params), params)
  full = mo.marthe(optax.sgd, 0.1, first_order=False)
  with pytest.raises(ValueError, match="value_fn=lambda p: loss"):
    full.update(grads, full.init(params), params)


# --------------------------------------------------------------------------
# Plain Adam (eps_root = 0) and weights with zero gradients.


def test_plain_adam_on_a_parabola_with_a_coordinate_at_its_optimum():
  """One coordinate's gradient is always 0: its Adam tangent would be 0 * inf.

  With the first-order tangent (the default) Adam's moments depend on the
  gradient alone, so their tangents are never formed and nothing needs a
  repair; the full tangent repairs them (the next test).
  """
  target = jnp.array([1.0, -2.0, 0.0])
  loss = lambda p: jnp.sum((p - target) ** 2)
  tx = mo.marthe(optax.adam, 1e-2)
  params = jnp.array([0.0, 0.0, 0.0])
  state = tx.init(params)
  step = jax.jit(
    lambda p, s: tx.update(jax.grad(loss)(p), s, p, value=loss(p), val_grads=jax.grad(loss)(p))
  )
  for _ in range(300):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  assert int(state.nonfinite_count) == 0
  assert int(state.repaired_count) == 0
  assert float(state.learning_rate) > 2e-2  # it moved (up: far from target)
  assert float(loss(params)) < 0.1 * float(loss(jnp.zeros(3)))
  chex.assert_tree_all_finite(state)


@pytest.mark.parametrize(
  "make",
  [
    lambda: mo.marthe(optax.adam, 1e-2, hyper_lr_step=1e-2),
    lambda: mo.marthe(optax.adam, 1e-2, first_order=False),
  ],
)
def test_dead_units_under_plain_adam_are_repaired_not_guarded(make):
  params, loss = P.dead_relu_problem()
  tx = make()
  state = tx.init(params)
  for _ in range(10):
    updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
    params = optax.apply_updates(params, updates)
  chex.assert_tree_all_finite((params, state))
  assert int(state.nonfinite_count) == 0
  assert int(state.repaired_count) >= 9
  assert float(state.learning_rate) != pytest.approx(1e-2)


# --------------------------------------------------------------------------
# The divergence safeguard.


def _feed(tx, params, values, grads_scale=1.0):
  """Updates with fixed gradients and the given sequence of ``value``s."""
  g = jax.tree.map(lambda p: grads_scale * jnp.ones_like(p), params)
  state = tx.init(params)
  states = []
  for v in values:
    _, state = tx.update(g, state, params, value=jnp.asarray(v), val_grads=g)
    states.append(state)
  return states


def test_safeguard_cuts_the_rate_on_a_loss_blow_up_and_resets_the_moments():
  params = jnp.ones(3)
  tx = mo.marthe(optax.sgd, 0.1, mu=0.0)
  values = [1.0, 0.9, 0.8, 0.8, 0.8, 50.0, 0.8]
  states = _feed(tx, params, values)
  counts = [int(s.safeguard_count) for s in states]
  assert counts == [0, 0, 0, 0, 0, 1, 1]
  before, cut = states[4], states[5]
  assert float(cut.learning_rate) == pytest.approx(0.5 * float(before.learning_rate))
  assert float(cut.hyper_m) == float(cut.hyper_v) == float(cut.hyper_steps) == 0.0
  # The minimum restarts from the smoothed loss at the cut.
  ema = 0.9 * float(before.loss_ema) + 0.1 * 50.0
  assert float(cut.loss_min) == pytest.approx(ema)
  assert float(states[6].loss_min) < ema


def test_safeguard_on_a_nonfinite_loss_keeps_the_monitor():
  params = jnp.ones(3)
  tx = mo.marthe(optax.sgd, 0.1, mu=0.0)
  states = _feed(tx, params, [1.0, float("nan"), 1.0])
  assert [int(s.safeguard_count) for s in states] == [0, 1, 1]
  assert float(states[1].loss_min) == float(states[0].loss_min) == 1.0
  chex.assert_tree_all_finite(states[-1])


def test_safeguard_ignores_ordinary_fluctuations_and_the_paper_rule_ignores_value():
  params = jnp.ones(3)
  rng = np.random.default_rng(0)
  values = np.exp(-np.arange(200) / 50) * (1 + 0.5 * rng.random(200))
  states = _feed(mo.marthe(optax.sgd, 0.1, mu=0.0), params, values)
  assert int(states[-1].safeguard_count) == 0
  paper = _feed(mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3, mu=0.0), params, [1.0, 100.0])
  assert int(paper[-1].safeguard_count) == 0


def test_safeguard_recovers_a_run_started_far_too_high():
  """eta_0 = 30 on the MLP: the loss blows up, the rate is cut, training recovers."""
  problem = P.make_problem(seed=0, steps=60, batch=16)
  tx = mo.marthe(optax.sgd, 30.0)
  params, state, trace = _run(tx, problem)
  assert int(state.safeguard_count) >= 2
  assert trace["learning_rate"][-1] < 5.0
  chex.assert_tree_all_finite((params, state))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_knob_free_tangent_does_not_wait_for_the_hypergradient(name):
  """With the defaults, Z_{t+1} is the same whatever grad E is, NaN included.

  So the tangent's update does not depend on the hypergradient, and XLA can
  overlap it with the validation gradient. A non-finite hypergradient marks
  the tangent stale instead: the next step reads it as 0 and restarts it from
  B, and a cut that the training loss decides restarts it at once.
  """
  problem = P.make_problem(seed=6, steps=6)
  tx = mo.marthe(P.INNERS[name], ETA0[name])
  params, state = problem.params, tx.init(problem.params)

  @jax.jit
  def step(params, state, t, val_scale, value_scale):
    x, y = problem.xs[t], problem.ys[t]
    loss, grads = jax.value_and_grad(P.loss)(params, x, y)
    val_grads = jax.grad(lambda p: P.loss(p, problem.x_val, problem.y_val))(params)
    val_grads = optax.tree.scale(val_scale, val_grads)
    updates, state = tx.update(grads, state, params, val_grads=val_grads, value=loss * value_scale)
    return optax.apply_updates(params, updates), state

  for t in range(4):
    params, state = step(params, state, t, 1.0, 1.0)
  tangent = lambda s: s.tangent.unseal().params
  _, ok = step(params, state, 4, 1.0, 1.0)
  _, other = step(params, state, 4, -3.0, 1.0)
  _, nan = step(params, state, 4, jnp.nan, 1.0)
  chex.assert_trees_all_equal(tangent(ok), tangent(other), tangent(nan))
  assert float(ok.learning_rate) != float(other.learning_rate)
  assert not bool(ok.stale_tangent) and bool(nan.stale_tangent)
  assert int(nan.nonfinite_count) == int(nan.safeguard_count) == 1
  # The next step reads the stale tangent as 0: a zero hypergradient (and
  # no move of the halved rate), and Z restarts from B.
  _, after = step(params, nan, 5, 1.0, 1.0)
  assert float(after.hypergradient) == 0.0
  assert float(after.learning_rate) == float(nan.learning_rate)
  assert not bool(after.stale_tangent)
  zeroed = lambda s: s._replace(
    tangent=mo.Sealed(optax.tree.zeros_like(s.tangent.unseal())), stale_tangent=jnp.array(False)
  )
  _, fresh = step(params, zeroed(nan), 5, 1.0, 1.0)
  chex.assert_trees_all_equal(tangent(after), tangent(fresh))
  # A blow-up of the training loss restarts the tangent at once: Z = B.
  _, cut = step(params, state, 4, 1.0, 1e6)
  assert int(cut.safeguard_count) == 1 and not bool(cut.stale_tangent)
  _, from_zero = step(params, zeroed(state), 4, 1.0, 1e6)
  chex.assert_trees_all_equal(tangent(cut), tangent(from_zero))
  assert not np.array_equal(tangent(cut)["w0"], tangent(ok)["w0"])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_knob_free_tangent_update_reads_no_validation_gradient(name):
  """In the traced program of the default step, Z_{t+1} depends on no leaf
  of ``val_grads``: the tangent's update can run beside the validation
  gradient (as HD's b_t does), not after the hypergradient. The learning
  rate, and with appendix A's horizon the tangent too, do depend on it."""
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  value_fn = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)

  def dependence(tx):
    def update(val_grads, state):
      return tx.update(params, state, params, val_grads=val_grads, value=1.0, value_fn=value_fn)[1]

    state = tx.init(params)
    closed = jax.make_jaxpr(update)(params, state)
    n_val = len(jax.tree.leaves(params))
    labels = [
      frozenset({"val"}) if i < n_val else frozenset() for i in range(len(closed.jaxpr.invars))
    ]
    out = jax.tree.unflatten(jax.tree.structure(state), _tangent._dependence(closed.jaxpr, labels))
    reads = lambda tree: any(
      "val" in d for d in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, frozenset))
    )
    return reads(out.tangent.unseal()), reads(out.learning_rate)

  assert dependence(mo.marthe(P.INNERS[name], 0.1)) == (False, True)
  assert dependence(mo.marthe(P.INNERS[name], 0.1, mu="smoothed")) == (True, True)
  assert dependence(mo.marthe(P.INNERS[name], 0.1, hyper_lr_step=1e-3)) == (True, True)


# --------------------------------------------------------------------------
# Schedules: MARTHE adapts the scale.


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_schedule_hypergradient_is_with_respect_to_the_scale(name):
  with jax.enable_x64(True):
    problem = P.make_problem(seed=3, steps=STEPS, dtype=jnp.float64)
    # Warm-up then decay, in float64 (Optax's own schedules compute in
    # float32 at an int32 count, and round differently under jit).
    schedule = lambda c: jnp.where(c < 3, 0.1 + 0.3 * c, 1.0 - 0.1 * (c - 3))
    inner, eta0 = P.INNERS[name], ETA0[name]
    tx = mo.marthe(inner, eta0, hyper_lr_step=0.0, mu=0.5, schedule=schedule)
    _, _, trace = _run(tx, problem, value=False)
    for t in range(1, STEPS):
      expected = P.unrolled_directional_derivative(inner, problem, eta0, 0.5, t, schedule=schedule)
      np.testing.assert_allclose(trace["hypergradient/learning_rate"][t], expected, rtol=1e-10)


def test_schedule_shapes_the_steps():
  problem = P.make_problem(steps=6)
  schedule = optax.linear_schedule(0.0, 1.0, 5)
  frozen = mo.marthe(optax.sgd, 0.2, step_size=0.0, schedule=schedule)
  params, state = problem.params, frozen.init(problem.params)
  grads = jax.grad(P.loss)(params, problem.xs[0], problem.ys[0])
  for t in range(4):
    updates, state = frozen.update(grads, state, params)
    expected = jax.tree.map(lambda g: -0.2 * schedule(t) * g, grads)
    chex.assert_trees_all_close(updates, expected, rtol=1e-6)


# --------------------------------------------------------------------------
# The API.


@pytest.mark.parametrize(
  "make,error,match",
  [
    (lambda: mo.marthe(optax.sgd, 0.1, 1e-3), TypeError, "positional"),
    (lambda: mo.hd(optax.sgd, 0.1, 1e-3), TypeError, "positional"),
    (lambda: mo.rtho(optax.sgd, 0.1, 1e-3), TypeError, "positional"),
    (lambda: mo.marthe_multi(optax.sgd, {"learning_rate": 0.1}, 1e-3), TypeError, "positional"),
    (lambda: mo.marthe(optax.sgd, 0.0), ValueError, "multiplicatively"),
    (lambda: mo.marthe(optax.sgd, 0.1, step_size=-0.1), ValueError, "step_size"),
    (
      lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3, step_size=0.1),
      ValueError,
      "cannot be combined",
    ),
    (lambda: mo.marthe(optax.sgd, 0.1, mu="sometimes"), ValueError, "smoothed"),
    (
      lambda: mo.marthe(optax.sgd, optax.cosine_decay_schedule(0.1, 100)),
      ValueError,
      "schedule=...",
    ),
    (lambda: mo.marthe(optax.sgd, 0.1, schedule=0.5), ValueError, "Optax schedule"),
    (
      lambda: mo.marthe_multi(optax.adamw, {"learning_rate": 0.1, "weight_decay": 0.0}),
      ValueError,
      "weight_decay must start above",
    ),
  ],
)
def test_bad_arguments_raise(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_defaults_and_state_fields():
  tx = mo.marthe(optax.sgd, learning_rate=0.01)
  params = {"w": jnp.ones(4)}
  state = tx.init(params)
  for name in (
    "learning_rate",
    "hypergradient",
    "mu",
    "nonfinite_count",
    "safeguard_count",
    "repaired_count",
  ):
    assert optax.tree.get(state, name).shape == (), name
  assert mo.marthe.__kwdefaults__["hyper_lr_step"] is None


def test_multi_knob_free_per_layer_learning_rates_move():
  problem = P.make_problem(seed=1, steps=20)
  labels = lambda p: {k: "hidden" if k.endswith("0") else "out" for k in p}
  tx = mo.marthe_multi(
    mo.per_group(optax.sgd, labels), {"learning_rate": {"hidden": 0.05, "out": 0.05}}
  )
  _, state, trace = _run(tx, problem)
  assert trace["learning_rate/hidden"][-1] != trace["learning_rate/out"][-1]
  assert int(state.nonfinite_count) == 0


# --------------------------------------------------------------------------
# The rules.


def test_unconstrained_coordinates_invert():
  theta = jnp.array([1e-4, 0.3, 2.0, 0.5, 0.99])
  low = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0])
  high = jnp.array([jnp.inf, jnp.inf, jnp.inf, 1.0, 1.0])
  phi = _rules.unconstrained(theta, low, high)
  np.testing.assert_allclose(_rules.constrained(phi, low, high), theta, rtol=1e-6)
  scale = jax.vmap(jax.grad(lambda p, lo, hi: _rules.constrained(p, lo, hi)))(phi, low, high)
  np.testing.assert_allclose(_rules.unconstrained_scale(theta, low, high), scale, rtol=1e-5)


def test_normalized_step_is_scale_free_and_bounded():
  g = jnp.array([0.3, -2.0, 5.0, 0.0])
  m, v, n, d = _rules.normalized_step(jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), g, 0.9, 0.999)
  np.testing.assert_allclose(d, jnp.sign(g), rtol=1e-4)  # first step +-1, 0 at 0
  _, _, _, d2 = _rules.normalized_step(m, v, n, 1e-3 * g, 0.9, 0.999)
  _, _, _, d3 = _rules.normalized_step(1e3 * m, 1e6 * v, n, g, 0.9, 0.999)
  np.testing.assert_allclose(d2, d3, rtol=1e-5)
  assert np.all(np.abs(d2) <= 1)


def test_smoothed_agreement_is_a_moving_average_of_q():
  q = _rules.smoothed_agreement(jnp.float32(1.0), jnp.float32(-1.0), jnp.float32(1.0), 0.9)
  assert float(q) == pytest.approx(0.9)  # q~ = 0 lowers it by 10 %, not to 0
