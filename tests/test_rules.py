"""The adaptive rules of docs/algorithm.md on constructed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_optax import _rules
from tests import _problems as P


@pytest.mark.parametrize("h,h_prev", [(2.0, 3.0), (-2.0, -0.5)])
def test_beta_grows_when_consecutive_hypergradients_agree(h, h_prev):
  beta = _rules.next_hyper_lr(jnp.float32(0.1), 0.01, h, h_prev)
  assert float(beta) == pytest.approx(0.1 + 0.01 * h * h_prev)
  assert float(beta) > 0.1


def test_beta_shrinks_but_not_below_zero_when_they_disagree():
  beta = _rules.next_hyper_lr(jnp.float32(0.1), 0.01, 2.0, -1.0)
  assert float(beta) == pytest.approx(0.08)
  assert float(_rules.next_hyper_lr(jnp.float32(0.1), 0.01, 20.0, -1.0)) == 0.0


def test_mu_is_zero_when_agreement_is_zero():
  for h, g1 in [(-1.0, 2.0), (0.0, 2.0), (3.0, -1.0), (5.0, 0.0)]:
    assert float(_rules.adaptive_mu(h, g1, 7.0)) == 0.0


def test_mu_tends_to_one_as_counter_grows():
  mus = [float(_rules.adaptive_mu(0.3, 1.0, c)) for c in [0.0, 1.0, 10.0, 1e3, 1e6]]
  assert mus[0] == pytest.approx(0.3)
  assert all(a < b for a, b in zip(mus, mus[1:]))
  assert mus[-1] == pytest.approx(1.0, abs=1e-5)
  # q~ is clipped to [0, 1]: a hypergradient beyond g1 gives mu = 1.
  assert float(_rules.adaptive_mu(4.0, 1.0, 0.0)) == 1.0


def test_agreement_has_no_nan_at_zero_g1_and_its_gradient_is_finite():
  q = _rules.one_step_agreement(jnp.float32(1.0), jnp.float32(0.0))
  assert float(q) == 0.0
  assert np.isfinite(float(jax.grad(_rules.one_step_agreement, argnums=1)(1.0, 0.0)))


def test_counter_and_projection():
  assert float(_rules.next_counter(0.5, 2.0)) == 1.5
  assert float(_rules.next_learning_rate(0.1, 1.0, 0.5)) == 0.0
  assert float(_rules.next_learning_rate(0.1, 0.1, -0.5)) == pytest.approx(0.15)


def test_worked_start_of_design_md():
  """The worked start of docs/algorithm.md, through the transformation."""
  problem = P.make_problem(seed=2)
  kappa = 1e4
  tx = mo.marthe(optax.sgd, 0.1, hyper_lr_step=kappa)
  params, state = problem.params, tx.init(problem.params)
  history = []
  for t in range(4):
    params, state = P.train_step(tx, problem, params, state, t)
    history.append(state)
  s0, s1, s2 = history[:3]
  # t = 0: Z_0 = 0, dEta_0 = 0, mu_0 = 0, c_0 = 0, eta unchanged.
  assert float(s0.hypergradient) == 0.0 and float(s0.mu) == 0.0
  assert float(s0.c) == 0.0 and float(s0.learning_rate) == pytest.approx(0.1)
  # t = 1: dEta_1 = g1 so q~ = 1, mu_1 = 1, c_1 = 0, beta_1 = 0 (dEta_0 = 0).
  assert float(s1.hypergradient) != 0.0
  assert float(s1.mu) == 1.0 and float(s1.c) == 0.0
  assert float(s1.hyper_lr) == 0.0 and float(s1.learning_rate) == pytest.approx(0.1)
  # t = 2: c_2 = 1, beta_2 = max(kappa dEta_2 dEta_1, 0).
  assert float(s2.c) == 1.0
  expected_beta = max(kappa * float(s2.hypergradient) * float(s1.hypergradient), 0.0)
  assert float(s2.hyper_lr) == pytest.approx(expected_beta, rel=1e-6)
  expected_eta = max(0.1 - expected_beta * float(s2.hypergradient), 0.0)
  assert float(s2.learning_rate) == pytest.approx(expected_eta, rel=1e-5)
