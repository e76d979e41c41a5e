"""The hyper-learning-rate step-size selection (paper, end of section 4)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_optax import selection

# Gradient descent on 0.5 * sum(CURVATURES * x**2) diverges iff the step
# size exceeds 2 / max(CURVATURES) = 0.5.
CURVATURES = jnp.array([1.0, 4.0])


def quadratic_gd(step_size, steps=40):
  """Loss curve of gradient descent with the given step size."""

  def step(x, _):
    loss = 0.5 * jnp.sum(CURVATURES * x**2)
    return x - step_size * CURVATURES * x, loss

  return jax.lax.scan(step, jnp.ones(2), None, length=steps)[1]


def test_picks_the_largest_stable_step_size_of_a_quadratic():
  result = selection.select_hyper_lr_step(quadratic_gd, [0.8, 0.52, 0.48, 0.3, 0.1])
  assert result.value == pytest.approx(0.48)
  np.testing.assert_array_equal(result.diverged, [True, True, False, False, False])
  chex.assert_shape(result.losses, (5, 40))
  chex.assert_shape((result.final_ratio, result.max_ratio), ((5,), (5,)))
  assert np.all(result.max_ratio[2:] <= 1.0)  # monotone decrease below 0.5
  assert result.max_ratio[1] > 2.0 and result.final_ratio[2] < 1e-2


def test_default_grid_is_decimated_from_start():
  result = selection.select_hyper_lr_step(quadratic_gd, start=10.0, num=4)
  np.testing.assert_allclose(result.candidates, [10.0, 1.0, 0.1, 0.01])
  np.testing.assert_array_equal(result.diverged, [True, True, False, False])
  assert result.value == pytest.approx(0.1)
  np.testing.assert_allclose(selection.decimated_grid(3.0, 3, factor=2.0), [3.0, 1.5, 0.75])


def test_divergence_criterion():
  curves = jnp.array(
    [
      [1.0, 1.5, 0.5],  # grew by 1.5x: diverged only for growth < 1.5
      [1.0, 0.9, jnp.nan],  # non-finite
      [1.0, 0.5, jnp.inf],
      [2.0, 3.9, 1.0],
    ]
  )
  div = selection.divergence(curves)  # growth 2.0
  np.testing.assert_array_equal(div.diverged, [False, True, True, False])
  np.testing.assert_allclose(np.asarray(div.final_ratio)[[0, 3]], [0.5, 0.5])
  np.testing.assert_allclose(np.asarray(div.max_ratio)[[0, 3]], [1.5, 1.95])
  np.testing.assert_array_equal(
    selection.divergence(curves, growth=1.2).diverged,
    [True, True, True, True],
  )


def test_all_diverge_raises():
  with pytest.raises(ValueError, match="Lower `start`"):
    selection.select_hyper_lr_step(quadratic_gd, start=100.0, num=2)


def test_evaluates_all_candidates_in_one_traced_program():
  traces = []

  def run(step_size):
    traces.append(step_size)
    return quadratic_gd(step_size)

  candidates = [0.8, 0.52, 0.48, 0.3, 0.1]
  result = selection.select_hyper_lr_step(run, candidates)
  assert len(traces) == 1  # traced once for all candidates: vmap, no loop
  assert isinstance(traces[0], jax.core.Tracer) and traces[0].shape == ()
  chunked = selection.select_hyper_lr_step(quadratic_gd, candidates, batch_size=2)
  chex.assert_trees_all_close(chunked, result)


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="non-negative"):
    selection.select_hyper_lr_step(quadratic_gd, [0.1, -0.1])
  with pytest.raises(ValueError, match="non-empty"):
    selection.select_hyper_lr_step(quadratic_gd, [])
  with pytest.raises(ValueError, match="growth"):
    selection.select_hyper_lr_step(quadratic_gd, [0.1], growth=1.0)
  with pytest.raises(ValueError, match="start > 0"):
    selection.select_hyper_lr_step(quadratic_gd, start=0.0)
  with pytest.raises(ValueError, match="1-D"):
    selection.select_hyper_lr_step(lambda k: jnp.ones((3, 2)) * k, [0.1])


# A small regression problem trained online by MARTHE or HD.
STEPS = 60


def _regression():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(STEPS, 128, 4)).astype(np.float32)
  w_true = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
  y = x @ w_true + 0.1 * rng.normal(size=(STEPS, 128)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def _loss(w, batch):
  x, y = batch
  return jnp.mean((x @ w - y) ** 2)


def _run_factory(make_tx):
  """``run(value) -> per-step training losses`` for ``make_tx(value)``."""
  batches = _regression()

  def run(value):
    tx = make_tx(value)

    def step(carry, batch):
      w, state = carry
      loss, grads = jax.value_and_grad(_loss)(w, batch)
      updates, state = tx.update(grads, state, w, value_fn=lambda p: _loss(p, batch))
      return (optax.apply_updates(w, updates), state), loss

    w0 = jnp.zeros(4)
    return jax.lax.scan(step, (w0, tx.init(w0)), batches)[1]

  return run


@pytest.mark.parametrize(
  "method,make_tx",
  [
    # The candidate is MARTHE's step size kappa (hyper_lr_step) ...
    ("marthe", lambda k: mo.marthe(optax.sgd, 0.01, hyper_lr_step=k)),
    # ... or HD's fixed hyper-learning rate beta.
    ("hd", lambda beta: mo.hd(optax.sgd, 0.01, hyper_lr=beta)),
  ],
)
def test_selects_a_non_diverging_value_for_a_real_run(method, make_tx):
  run = _run_factory(make_tx)
  result = selection.select_hyper_lr_step(run, start=10.0, num=10)
  print(
    f"{method}: selected {result.value:.0e}; diverged "
    f"{np.asarray(result.diverged).astype(int)}; final/first loss "
    f"{np.asarray(result.final_ratio)}"
  )
  chex.assert_shape(result.losses, (10, STEPS))
  assert result.diverged[0]  # 10 is far too large
  assert not result.diverged[-1]  # 1e-9 leaves eta at 0.01: plain SGD
  assert not np.all(np.isfinite(result.losses[0]))  # a real blow-up
  (chosen,) = np.flatnonzero(np.asarray(result.candidates) == result.value)
  assert not result.diverged[chosen]
  assert np.all(result.diverged[:chosen])  # the largest that survived
  # The selected value trains: finite and much lower loss than at the start.
  losses = jax.jit(run)(result.value)
  assert np.all(np.isfinite(losses)) and losses[-1] < 0.1 * losses[0]
