"""Misuse raises a ValueError that says what to pass; guards keep the state sane."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import marthe_optax as mo
from tests import _problems as P


@pytest.mark.parametrize(
  "make,match",
  [
    (lambda: mo.marthe(optax.sgd, -0.1, hyper_lr_step=1e-3), "learning_rate"),
    (lambda: mo.marthe(optax.sgd, float("nan"), hyper_lr_step=1e-3), "learning_rate"),
    (lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=-1e-3), "hyper_lr_step"),
    (lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3, hyper_lr=-1.0), "hyper_lr"),
    (lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3, mu=1.5), "mu in"),
    (lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3, mu=-0.1), "mu in"),
    (lambda: mo.hd(optax.sgd, 0.1, hyper_lr=-1.0), "hyper_lr"),
    (lambda: mo.rtho(optax.sgd, -1.0, hyper_lr=1.0), "learning_rate"),
    (lambda: mo.marthe(optax.sgd(0.1), 0.1, hyper_lr_step=1e-3), "not optax.sgd\\(0.1\\)"),
  ],
)
def test_bad_arguments_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def _setup(tx):
  problem = P.make_problem()
  params = problem.params
  grads = jax.grad(P.loss)(params, problem.xs[0], problem.ys[0])
  return problem, params, grads, tx.init(params)


@pytest.mark.parametrize(
  "make",
  [
    lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3),
    lambda: mo.rtho(optax.sgd, 0.1, hyper_lr=1e-3),
    lambda: mo.marthe(optax.sgd, 0.1, hyper_lr_step=0.0, mu=0.5),
  ],
)
def test_missing_loss_closure_raises(make):
  tx = make()
  _, params, grads, state = _setup(tx)
  with pytest.raises(ValueError, match="value_fn=lambda p: loss"):
    tx.update(grads, state, params)


def test_missing_params_raises():
  tx = mo.hd(optax.sgd, 0.1, hyper_lr=1e-3)
  _, _, grads, state = _setup(tx)
  with pytest.raises(ValueError, match="needs the current params"):
    tx.update(grads, state)


def test_state_of_another_horizon_raises():
  """HD keeps no tangent beyond b: its state and a full-tangent update (or the
  reverse) do not fit, and the error says so instead of failing inside."""
  hd = mo.hd(optax.sgd, 0.1, hyper_lr=1e-3)
  full = mo.marthe(optax.sgd, 0.1, hyper_lr_step=0.0, mu=0.5, first_order=True)
  _, params, grads, _ = _setup(hd)
  for tx, other in ((hd, full), (full, hd)):
    with pytest.raises(ValueError, match="tangent beyond b"):
      tx.update(grads, other.init(params), params)


def test_state_with_or_without_b_of_another_horizon_raises():
  """A fixed horizon keeps no b_(t-1) (nothing reads the one-step
  hypergradient); the adaptive ones do. A state of one and an update of the
  other do not fit, and the error says so."""
  fixed = mo.marthe(optax.sgd, 0.1, mu=0.99)
  smoothed = mo.marthe(optax.sgd, 0.1, mu="smoothed")
  _, params, grads, _ = _setup(fixed)
  assert fixed.init(params).b.unseal() == ()
  chex.assert_trees_all_equal_shapes(smoothed.init(params).b.unseal(), params)
  for tx, other in ((fixed, smoothed), (smoothed, fixed)):
    with pytest.raises(ValueError, match="another horizon mu"):
      tx.update(grads, other.init(params), params, val_grads=grads)


def test_mismatched_trees_raise():
  tx = mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3)
  problem, params, grads, state = _setup(tx)
  closure = lambda p: P.loss(p, problem.xs[0], problem.ys[0])
  bad_structure = {k: v for k, v in grads.items() if k != "b0"}
  with pytest.raises(ValueError, match="updates must be a tree"):
    tx.update(bad_structure, state, params, value_fn=closure)
  with pytest.raises(ValueError, match="val_grads must be a tree"):
    tx.update(grads, state, params, value_fn=closure, val_grads=bad_structure)
  bad_shape = dict(grads, w0=jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"val_grads\['w0'\] has shape"):
    tx.update(grads, state, params, value_fn=closure, val_grads=bad_shape)


def test_nonfinite_validation_gradient_is_guarded():
  """A NaN hypergradient changes no hyperparameter, discards Z, and is counted."""
  problem = P.make_problem(seed=4, steps=10)
  tx = mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e2)
  params, state = problem.params, tx.init(problem.params)
  step = jax.jit(functools.partial(P.train_step, tx, problem))

  @jax.jit
  def poisoned_step(params, state, t):
    grads = jax.grad(P.loss)(params, problem.xs[t], problem.ys[t])
    val_grads = jax.tree.map(lambda g: g * jnp.nan, grads)
    updates, state = tx.update(
      grads,
      state,
      params,
      val_grads=val_grads,
      value_fn=lambda p: P.loss(p, problem.xs[t], problem.ys[t]),
    )
    return optax.apply_updates(params, updates), state

  for t in range(4):
    params, state = step(params, state, t)
  before = state
  params, state = poisoned_step(params, state, 4)
  assert int(state.nonfinite_count) == 1
  for name in ("learning_rate", "hyper_lr", "mu", "c"):
    assert float(getattr(state, name)) == float(getattr(before, name)), name
  assert float(state.hypergradient) == 0.0
  # Z_{t+1} is stale: the next step reads it as 0 (a zero hypergradient, so
  # eta stays) and restarts the tangent from B_{t+1}, which is then b_{t+1}.
  assert bool(state.stale_tangent)
  params, state = step(params, state, 5)
  assert not bool(state.stale_tangent)
  assert float(state.hypergradient) == 0.0
  assert float(state.learning_rate) == float(before.learning_rate)
  chex.assert_trees_all_equal(state.tangent.unseal().params, state.b.unseal())
  for t in range(6, 10):
    params, state = step(params, state, t)
  chex.assert_tree_all_finite(state)
  assert int(state.nonfinite_count) == 1


def test_loss_turning_nan_under_apply_if_finite_keeps_state_usable():
  problem = P.make_problem(seed=5, steps=12)
  tx = optax.apply_if_finite(mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e2), max_consecutive_errors=5)
  params, state = problem.params, tx.init(problem.params)

  @jax.jit
  def step(params, state, t):
    scale = jnp.where(t == 6, jnp.nan, 1.0)  # the loss is NaN at step 6 only
    loss = lambda p: scale * P.loss(p, problem.xs[t], problem.ys[t])
    grads = jax.grad(loss)(params)
    updates, state = tx.update(
      grads,
      state,
      params,
      value_fn=loss,
      val_grads=jax.grad(P.loss)(params, problem.x_val, problem.y_val),
    )
    return optax.apply_updates(params, updates), state

  etas = []
  for t in range(12):
    params, state = step(params, state, t)
    etas.append(float(optax.tree.get(state, "learning_rate")))
  assert np.all(np.isfinite(etas)) and min(etas) >= 0
  assert int(state.total_notfinite) == 1
  chex.assert_tree_all_finite((params, state))
  assert int(optax.tree.get(state, "count")) == 11  # the NaN step was skipped


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
  seed=st.integers(0, 2**16),
  eta0=st.floats(0.0, 2.0),
  log_kappa=st.floats(-4.0, 6.0),
  beta0=st.floats(0.0, 1.0),
  mu=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_invariants_on_random_problems(seed, eta0, log_kappa, beta0, mu):
  """eta >= 0, beta >= 0, 0 <= mu <= 1 and a finite state, whatever happens."""
  _invariant_run(seed, eta0, 10.0**log_kappa, beta0, mu is None, mu or 0.0)


@functools.partial(jax.jit, static_argnums=(4,))
def _invariant_trace(problem, eta0, kappa, beta0, adaptive, mu):
  tx = mo.marthe(optax.sgd, eta0, hyper_lr_step=kappa, hyper_lr=beta0, mu=None if adaptive else mu)

  def body(carry, t):
    params, state = carry
    params, state = P.train_step(tx, problem, params, state, t)
    return (params, state), (state.learning_rate, state.hyper_lr, state.mu)

  carry = (problem.params, tx.init(problem.params))
  (_, state), trace = jax.lax.scan(body, carry, jnp.arange(problem.xs.shape[0]))
  return state, trace


def _invariant_run(seed, eta0, kappa, beta0, adaptive, mu):
  problem = P.make_problem(seed=seed, steps=12)
  state, (etas, betas, mus) = _invariant_trace(problem, eta0, kappa, beta0, adaptive, mu)
  assert np.all(np.asarray(etas) >= 0) and np.all(np.isfinite(etas))
  assert np.all(np.asarray(betas) >= 0) and np.all(np.isfinite(betas))
  assert np.all((np.asarray(mus) >= 0) & (np.asarray(mus) <= 1))
  # The hyper-state stays finite; params may blow up for huge kappa, in which
  # case the guard counts it instead of letting NaN into eta.
  chex.assert_tree_all_finite(
    (state.learning_rate, state.hyper_lr, state.mu, state.c, state.hypergradient)
  )


@pytest.mark.parametrize("eps_root", [0.0, 1e-8])
def test_adam_dead_units_with_and_without_eps_root(eps_root):
  """A weight whose gradients have all been exactly 0 (a dead ReLU) has a zero
  second moment, where sqrt's derivative gives 0 * inf = NaN in the tangent.
  Such entries are set to 0 (their limit) and counted; with eps_root > 0 there
  are none. Either way the guard never fires and the learning rate moves.
  """
  params, loss = P.dead_relu_problem()
  tx = mo.marthe(functools.partial(optax.adam, eps_root=eps_root), 1e-2, hyper_lr_step=1e-2)
  state = tx.init(params)
  for _ in range(10):
    updates, state = tx.update(jax.grad(loss)(params), state, params, value_fn=loss)
    params = optax.apply_updates(params, updates)
  chex.assert_tree_all_finite(params)
  assert int(state.nonfinite_count) == 0
  assert (int(state.repaired_count) > 5) == (eps_root == 0.0)
  assert float(state.learning_rate) != pytest.approx(1e-2)
