"""The reported hypergradient is exactly what the paper defines (docs/algorithm.md).

With beta frozen (kappa = 0, beta = 0) eta stays eta_0 and, for a fixed mu,
``Delta eta_t = sum_i mu**(t-1-i) dE(w_t)/d eta_i``: the directional derivative
of E(w_t) when step i of an unrolled Optax training loop uses the learning rate
``eta_0 + eps * mu**(t-1-i)``. Checked in float64 with ``jax.jvp`` through the
unrolled loop.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from tests import _problems as P

STEPS = 7
ETA0 = {"sgd": 0.3, "momentum": 0.1, "adam": 0.05, "nesterov": 0.1, "adamw": 0.05}


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "nesterov", "adamw"])
def test_hypergradient_matches_unrolled_autodiff(name, mu):
  with jax.enable_x64(True):
    problem = P.make_problem(seed=3, steps=STEPS, dtype=jnp.float64)
    inner, eta0 = P.INNERS[name], ETA0[name]
    tx = mo.marthe(inner, eta0, hyper_lr_step=0.0, hyper_lr=0.0, mu=mu)
    _, state, trace = P.run(tx, problem)
    assert state.learning_rate.dtype == jnp.float64
    np.testing.assert_array_equal(trace["learning_rate"], eta0)
    errors = []
    for t in range(1, STEPS):
      expected = P.unrolled_directional_derivative(inner, problem, eta0, mu, t)
      got = trace["hypergradient"][t]
      errors.append(abs(got - expected) / abs(expected))
      assert abs(expected) > 1e-8
    print(f"{name} mu={mu}: max relative error {max(errors):.2e}")
    assert max(errors) < 1e-10, errors


def test_hd_needs_no_loss_closure_and_matches_marthe_mu0():
  """hd == marthe(mu=0); hd runs without value_fn (no Hessian is formed)."""
  with jax.enable_x64(True):
    problem = P.make_problem(seed=1, dtype=jnp.float64)
    a = mo.hd(optax.sgd, 0.1, hyper_lr=1e-2)
    b = mo.marthe(optax.sgd, 0.1, hyper_lr_step=0.0, hyper_lr=1e-2, mu=0.0)
    sa, sb = a.init(problem.params), b.init(problem.params)
    params = problem.params
    for t in range(5):
      grads = jax.grad(P.loss)(params, problem.xs[t], problem.ys[t])
      ua, sa = a.update(grads, sa, params)  # no value_fn
      ub, sb = b.update(
        grads, sb, params, value_fn=lambda p: P.loss(p, problem.xs[t], problem.ys[t])
      )
      chex.assert_trees_all_equal(ua, ub)
      params = optax.apply_updates(params, ua)
    assert float(sa.learning_rate) == float(sb.learning_rate) != 0.1
