"""MARTHE on several hyperparameters: exactness per kind, groups, guards."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from tests import _problems as P

STEPS = 6


def sgd_wd_momentum(learning_rate, weight_decay, momentum):
  return optax.chain(
    optax.add_decayed_weights(weight_decay),
    optax.sgd(learning_rate, momentum=momentum),
  )


CASES = {
  "sgd_wd_momentum": (
    sgd_wd_momentum,
    {"learning_rate": 0.2, "weight_decay": 0.01, "momentum": 0.5},
  ),
  "adam_b1": (optax.adam, {"learning_rate": 0.05, "b1": 0.8}),
}


def _run(tx, problem, steps):
  params, state = problem.params, tx.init(problem.params)
  step = jax.jit(functools.partial(P.train_step, tx, problem))
  trace = []
  for t in range(steps):
    params, state = step(params, state, t)
    trace.append(state)
  return params, state, trace


def _directional_derivative(inner, hyperparams, name, mu, problem, t):
  """d/d eps E(w_t), step i run with theta_name + eps * mu**(t-1-i)."""

  def objective(eps):
    params = problem.params
    state = inner(**hyperparams).init(params)
    for i in range(t):
      hp = dict(hyperparams, **{name: hyperparams[name] + eps * mu ** (t - 1 - i)})
      grads = jax.grad(P.loss)(params, problem.xs[i], problem.ys[i])
      updates, state = inner(**hp).update(grads, state, params)
      params = optax.apply_updates(params, updates)
    return P.loss(params, problem.x_val, problem.y_val)

  return jax.jvp(objective, (jnp.float64(0.0),), (jnp.float64(1.0),))[1]


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_hypergradient_matches_unrolled_autodiff(case, mu):
  inner, hyperparams = CASES[case]
  with jax.enable_x64(True):
    problem = P.make_problem(seed=11, steps=STEPS, dtype=jnp.float64)
    tx = mo.marthe_multi(inner, hyperparams, hyper_lr_step=0.0, hyper_lr=0.0, mu=mu)
    _, _, trace = _run(tx, problem, STEPS)
    names = list(jax.tree.leaves(jax.tree.map(lambda _: 0, hyperparams)))
    errors = []
    for k, name in enumerate(sorted(hyperparams)):  # leaf order = sorted keys
      for t in range(1, STEPS):
        expected = _directional_derivative(inner, hyperparams, name, mu, problem, t)
        got = trace[t].hypergradient[k]
        if abs(expected) < 1e-12:  # e.g. Adam's b1 at t = 1 (bias correction)
          assert abs(got) < 1e-14
          continue
        errors.append(float(abs(got - expected) / abs(expected)))
    assert len(errors) >= len(names) * (STEPS - 2)
    print(f"{case} mu={mu}: max relative error {max(errors):.2e}")
    assert max(errors) < 1e-10
    # Frozen beta: the hyperparameters do not move.
    for name, value in hyperparams.items():
      assert float(trace[-1].hyperparams[name]) == pytest.approx(value, rel=1e-15)


def _labels(params):
  return {k: ("hidden" if k.endswith("0") else "out") for k in params}


def test_one_group_equals_single_learning_rate_marthe():
  problem = P.make_problem(seed=2, steps=8)
  single = mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e2)
  grouped = mo.marthe_multi(
    mo.per_group(optax.sgd, lambda p: jax.tree.map(lambda _: "all", p)),
    {"learning_rate": {"all": 0.1}},
    hyper_lr_step=1e2,
  )
  p1, s1, t1 = _run(single, problem, 8)
  p2, s2, t2 = _run(grouped, problem, 8)
  chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-7)
  lrs1 = [float(s.learning_rate) for s in t1]
  lrs2 = [float(s.hyperparams["learning_rate"]["all"]) for s in t2]
  np.testing.assert_allclose(lrs1, lrs2, rtol=1e-5)
  assert lrs1[-1] != pytest.approx(0.1)  # the schedule moved


def test_group_hypergradients_sum_to_the_single_one():
  """d E / d eta = sum over groups of d E / d eta_g when the groups are tied."""
  with jax.enable_x64(True):
    problem = P.make_problem(seed=3, steps=STEPS, dtype=jnp.float64)
    single = mo.marthe(optax.sgd, 0.1, hyper_lr_step=0.0, mu=0.7)
    grouped = mo.marthe_multi(
      mo.per_group(optax.sgd, _labels),
      {"learning_rate": {"hidden": 0.1, "out": 0.1}},
      hyper_lr_step=0.0,
      mu=0.7,
    )
    _, _, t1 = _run(single, problem, STEPS)
    _, _, t2 = _run(grouped, problem, STEPS)
    for a, b in zip(t1[1:], t2[1:]):
      assert float(jnp.sum(b.hypergradient)) == pytest.approx(float(a.hypergradient), rel=1e-12)
      assert float(b.hypergradient[0]) != pytest.approx(float(b.hypergradient[1]))


def test_projections_and_invariants_under_aggressive_steps():
  problem = P.make_problem(seed=4, steps=12)
  tx = mo.marthe_multi(
    sgd_wd_momentum,
    {"learning_rate": 0.2, "weight_decay": 0.01, "momentum": 0.5},
    hyper_lr_step={"learning_rate": 1e4, "weight_decay": 1e6, "momentum": 1e5},
    hyper_lr=1e-2,
  )
  _, state, trace = _run(tx, problem, 12)
  for s in trace:
    log = mo.hyperparam_log(s)
    assert 0.0 <= float(log["momentum"]) <= 1.0 - 1e-6
    assert float(log["weight_decay"]) >= 0.0 and float(log["learning_rate"]) >= 0.0
    assert np.all(np.asarray(s.hyper_lr) >= 0)
    assert np.all((np.asarray(s.mu) >= 0) & (np.asarray(s.mu) <= 1))
  chex.assert_tree_all_finite((state.hyperparams, state.hyper_lr, state.mu, state.hypergradient))
  moved = [
    float(trace[-1].hyperparams[k]) != v
    for k, v in {"learning_rate": 0.2, "weight_decay": 0.01, "momentum": 0.5}.items()
  ]
  assert any(moved)


@pytest.mark.parametrize(
  "make,match",
  [
    (lambda: mo.marthe_multi(optax.sgd, {}, hyper_lr_step=0.0), "non-empty mapping"),
    (
      lambda: mo.marthe_multi(
        optax.sgd, {"learning_rate": 0.1, "momentum": 1.5}, hyper_lr_step=0.0
      ),
      "momentum must be a finite scalar in",
    ),
    (
      lambda: mo.marthe_multi(optax.sgd, {"learning_rate": -0.1}, hyper_lr_step=0.0),
      "learning_rate",
    ),
    (
      lambda: mo.marthe_multi(
        optax.sgd, {"learning_rate": 0.1, "momentum": 0.5}, hyper_lr_step={"learning_rate": 1.0}
      ),
      "no entry for the hyperparameter 'momentum'",
    ),
    (
      lambda: mo.marthe_multi(optax.sgd, {"learning_rate": 0.1}, hyper_lr_step=-1.0),
      "hyper_lr_step",
    ),
    (lambda: mo.marthe_multi(optax.sgd(0.1), {"learning_rate": 0.1}, hyper_lr_step=0.0), "factory"),
  ],
)
def test_bad_arguments_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_bounds_override_and_log_inside_chain():
  tx = optax.chain(
    optax.identity(),
    mo.marthe_multi(
      functools.partial(optax.sgd, nesterov=True),
      {"learning_rate": 0.1, "momentum": 0.5},
      hyper_lr_step=1e3,
      hyper_lr=1.0,
      bounds={"momentum": (0.2, 0.6)},
    ),
  )
  problem = P.make_problem(seed=5, steps=6)
  _, state, _ = _run(tx, problem, 6)
  log = mo.hyperparam_log(state)
  counters = {"count", "nonfinite_count", "safeguard_count", "repaired_count"}
  assert set(log) == counters | {
    f"{field}{name}"
    for name in ("learning_rate", "momentum")
    for field in ("", "hyper_lr/", "mu/", "hypergradient/")
  }
  assert log["count"] == 6 and isinstance(log["momentum"], float)
  assert 0.2 <= float(optax.tree.get(state, "momentum")) <= 0.6
  single = mo.hyperparam_log(P.run(mo.hd(optax.sgd, 0.1, hyper_lr=1e-2), problem)[1])
  assert set(single) == counters | {
    "learning_rate",
    "hyper_lr/learning_rate",
    "mu/learning_rate",
    "hypergradient/learning_rate",
  }
