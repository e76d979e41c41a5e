"""The exact schedule hypergradient (eq. 2-4 of the paper) and LRS-OPT.

In float64 on a 5-8-3 MLP with T = 8 minibatch steps, for SGD, SGD-momentum
and Adam:

* reverse mode through the scan equals the forward tangent system of eq. 3 to
  round-off (also with checkpointed segments);
* both equal central finite differences of E(w_T) in single learning rates;
* the online tangent system of ``marthe_optax`` (RTHO, and MARTHE with a fixed
  mu, beta frozen) reports ``sum_i mu**(T-1-i) dE(w_T)/d eta_i``;
* checkpointing stores one optimizer state and one minibatch per step.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_optax import exact
from tests import _problems as P

T = 8
ETA0 = {"sgd": 0.3, "momentum": 0.1, "adam": 0.05}
NAMES = tuple(ETA0)


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _train_loss(params, batch):
  return P.loss(params, *batch)


@functools.lru_cache(maxsize=None)
def _setup():
  """The 5-8-3 MLP, T minibatches of 6 points and a validation set of 12.

  Drawn with NumPy (no compilation); float64 throughout.
  """
  rng = np.random.default_rng(3)
  sizes = (5, 8, 3)
  params = {}
  for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
    params[f"w{i}"] = rng.normal(size=(m, n)) / np.sqrt(m)
    params[f"b{i}"] = np.zeros(n)
  batches = (rng.normal(size=(T, 6, 5)), rng.integers(0, 3, size=(T, 6)))
  x_val, y_val = rng.normal(size=(12, 5)), rng.integers(0, 3, size=12)
  objective = lambda p: P.loss(p, x_val, y_val)
  return params, batches, objective


def _schedule(name):
  """A non-constant schedule around the inner optimizer's working rate."""
  return ETA0[name] * (1.0 + 0.3 * np.sin(np.arange(T, dtype=np.float64)))


def _rel(x, y):
  return float(np.linalg.norm(x - y) / np.linalg.norm(y))


FD_STEPS = np.array([0, T // 2, T - 1])
FD_EPS = 1e-5
MUS = (1.0, 0.5)


@functools.lru_cache(maxsize=None)
def _results(name):
  """Everything the exactness tests compare, for one inner optimizer.

  Three compiled programs (compilation dominates the cost): reverse mode (also
  run at the finite-difference points and at the constant schedule), forward
  mode, and the online ``marthe`` runs (vmapped over mu). Runs in float64 (the
  autouse fixture is active when a test first asks).
  """
  params, batches, objective = _setup()
  inner, eta0 = P.INNERS[name], ETA0[name]
  hypergradient = functools.partial(
    exact.schedule_hypergradient,
    params=params,
    inner=inner,
    train_loss=_train_loss,
    batches=batches,
    objective=objective,
  )

  def marthe_hypergradient(mu):
    """marthe with beta frozen: <Z_T, grad E(w_T)> at its (T+1)-th update."""
    tx = mo.marthe(inner, eta0, hyper_lr_step=0.0, hyper_lr=0.0, mu=mu)

    def step(carry, batch):
      params, state = carry
      updates, state = tx.update(
        jax.grad(_train_loss)(params, batch),
        state,
        params,
        value_fn=lambda p: _train_loss(p, batch),
        val_grads=jax.grad(objective)(params),
      )
      return (optax.apply_updates(params, updates), state), None

    # The (T+1)-th update computes <Z_T, grad E(w_T)> before its own step, so
    # the batch it trains on (batch 0 again) does not matter.
    more = jax.tree.map(lambda x: jnp.concatenate([x, x[:1]]), batches)
    (_, state), _ = jax.lax.scan(step, (params, tx.init(params)), more)
    return state

  schedule = _schedule(name)
  reverse = jax.jit(hypergradient)
  shifts = FD_EPS * np.eye(T)[FD_STEPS]
  return jax.device_get(
    dict(
      reverse=reverse(schedule),
      forward=jax.jit(functools.partial(hypergradient, mode="forward"))(schedule),
      fd_plus=np.array([reverse(schedule + e).value for e in shifts]),
      fd_minus=np.array([reverse(schedule - e).value for e in shifts]),
      constant=reverse(np.full(T, eta0)),
      marthe=jax.jit(jax.vmap(marthe_hypergradient))(np.array(MUS)),
    )
  )


@pytest.mark.parametrize("name", NAMES)
def test_reverse_mode_matches_forward_tangent_system(name):
  out = _results(name)
  reverse, forward = out["reverse"], out["forward"]
  assert forward.grad.shape == (T,) and forward.grad.dtype == np.float64
  assert np.all(np.abs(forward.grad) > 1e-6)  # every eta_t matters here
  err = _rel(reverse.grad, forward.grad)
  print(f"{name} reverse vs forward: rel err {err:.2e}")
  assert err < 1e-10, err
  np.testing.assert_allclose(reverse.value, forward.value, rtol=1e-13)


def test_segments_give_the_same_hypergradient():
  params, batches, objective = _setup()
  segmented = jax.jit(
    functools.partial(
      exact.schedule_hypergradient,
      params=params,
      inner=P.INNERS["momentum"],
      train_loss=_train_loss,
      batches=batches,
      objective=objective,
      segment_length=4,
    )
  )(_schedule("momentum"))
  reference = _results("momentum")["reverse"]
  np.testing.assert_allclose(segmented.value, reference.value, rtol=1e-13)
  assert _rel(segmented.grad, reference.grad) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_matches_central_finite_differences(name):
  out = _results(name)
  fd = (out["fd_plus"] - out["fd_minus"]) / (2 * FD_EPS)
  for mode in ("reverse", "forward"):
    err = np.max(np.abs(fd - out[mode].grad[FD_STEPS]) / np.abs(fd))
    print(f"{name} {mode} vs central differences: max rel err {err:.2e}")
    assert err < 1e-6, (mode, err)


@pytest.mark.parametrize("name", NAMES)
def test_online_tangent_system_reports_the_exact_sum(name):
  """marthe(mu, beta frozen) after T+1 updates: sum_i mu**(T-1-i) dE/d eta_i."""
  out = _results(name)
  states = out["marthe"]
  np.testing.assert_array_equal(states.count, T + 1)
  np.testing.assert_array_equal(states.learning_rate, ETA0[name])
  for mu, got in zip(MUS, states.hypergradient):
    expected = np.sum(mu ** (T - 1 - np.arange(T)) * out["constant"].grad)
    err = float(abs(got - expected) / abs(expected))
    print(
      f"{name} mu={mu}: marthe {float(got):.6e} vs exact {float(expected):.6e}, rel err {err:.2e}"
    )
    assert abs(expected) > 1e-4
    assert err < 1e-10, (mu, err)


def _residual_size(name, steps, **kwargs):
  """Numbers stored between the forward and backward pass of reverse mode.

  The residuals are the leaves of the function ``jax.vjp`` returns; shapes
  alone are computed (``jax.eval_shape``), nothing is run.
  """
  params, batches, objective = _setup()
  batches = jax.tree.map(lambda x: jax.ShapeDtypeStruct((steps,) + x.shape[1:], x.dtype), batches)

  def residuals(schedule, batches):
    f = lambda s: exact.schedule_objective(
      s,
      params,
      P.INNERS[name],
      _train_loss,
      batches,
      objective,
      **kwargs,
    )
    return jax.vjp(f, schedule)[1]

  shapes = jax.eval_shape(residuals, jax.ShapeDtypeStruct((steps,), jnp.float64), batches)
  return sum(np.prod(r.shape, dtype=int) for r in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name", NAMES)
def test_checkpointing_stores_one_state_and_batch_per_step(name):
  params, batches, _ = _setup()
  params_size = optax.tree.size(params)
  state_size = optax.tree.size(P.INNERS[name](0.1).init(params))
  batch_size = sum(np.size(x) for x in jax.tree.leaves(batches)) // T
  # The carried (w_t, s_t), the minibatch and eta_t; nothing of the step.
  stored = params_size + state_size + batch_size + 1
  per_step = lambda **kw: (_residual_size(name, 2 * T, **kw) - _residual_size(name, T, **kw)) / T
  assert per_step(checkpoint=True) == stored
  assert per_step(checkpoint=False) > stored + params_size
  # sqrt(T)-segments: 64 steps in segments of 8 store far less than 64 states.
  assert _residual_size(name, 64, segment_length=8) < 0.5 * _residual_size(name, 64)


def test_errors():
  params, batches, objective = _setup()
  args = (params, optax.sgd, _train_loss, batches, objective)
  schedule = jnp.full(T, 0.1)
  with pytest.raises(ValueError, match="mode"):
    exact.schedule_hypergradient(schedule, *args, mode="sideways")
  with pytest.raises(ValueError, match="leading axis of length T = 7"):
    exact.schedule_hypergradient(schedule[:7], *args)
  with pytest.raises(ValueError, match="1-D"):
    exact.schedule_hypergradient(schedule[None], *args)
  with pytest.raises(ValueError, match="segment_length"):
    exact.schedule_hypergradient(schedule, *args, segment_length=3)
  with pytest.raises(ValueError, match="factory"):
    exact.schedule_hypergradient(
      schedule,
      params,
      optax.sgd(0.1),
      _train_loss,
      batches,
      objective,
    )
  with pytest.raises(ValueError, match="non-negative"):
    exact.lrs_opt(
      schedule.at[2].set(-0.1),
      params,
      optax.sgd,
      _train_loss,
      lambda key: batches,
      objective,
      num_steps=1,
      outer=0.1,
      key=jax.random.PRNGKey(0),
    )


# LRS-OPT.


def test_lrs_opt_descends_projects_and_compiles_once():
  params, batches, objective = _setup()
  traces = []

  def fixed_batches(key):  # the same minibatches at every outer step
    traces.append(key)
    return batches

  schedule0, lr = jnp.full(T, ETA0["sgd"]), 4.0
  result = exact.lrs_opt(
    schedule0,
    params,
    optax.sgd,
    _train_loss,
    fixed_batches,
    objective,
    num_steps=6,
    outer=lr,
    key=jax.random.PRNGKey(0),
  )
  chex.assert_shape((result.objectives, result.schedules), ((6,), (6, T)))
  np.testing.assert_array_equal(result.schedule_steps, np.arange(6))
  np.testing.assert_array_equal(result.schedules[0], schedule0)
  assert len(traces) == 1, "the outer step was traced more than once"
  print("LRS-OPT (SGD, fixed batches): objectives", result.objectives)
  assert np.all(np.diff(result.objectives) < 0), result.objectives
  assert np.all(result.schedules >= 0) and np.all(result.schedule >= 0)
  # The first step is exactly max(eta - lr * grad, 0); some rates hit 0.
  constant = _results("sgd")["constant"]
  np.testing.assert_allclose(result.objectives[0], constant.value, rtol=1e-13)
  expected = np.maximum(schedule0 - lr * constant.grad, 0.0)
  assert np.any(expected == 0) and np.any(expected > 0)
  np.testing.assert_allclose(result.schedules[1], expected, rtol=1e-12)


def test_lrs_opt_with_fresh_random_minibatches():
  params, batches, objective = _setup()
  data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batches)
  sample = exact.random_minibatches(data, batch_size=6, num_steps=T)
  inner = P.INNERS["momentum"]
  seen = []
  result = exact.lrs_opt(
    jnp.full(T, 0.02),
    params,
    inner,
    _train_loss,
    sample,
    objective,
    num_steps=8,
    outer=optax.adam(0.02),
    key=jax.random.PRNGKey(1),
    record_every=3,
    callback=lambda i, value, schedule: seen.append((i, float(value))),
  )
  np.testing.assert_array_equal(result.schedule_steps, [0, 3, 6])
  chex.assert_shape(result.schedules, (3, T))
  assert [i for i, _ in seen] == list(range(8))
  np.testing.assert_allclose([v for _, v in seen], result.objectives)
  assert np.all(result.schedule >= 0)
  # On minibatch orders it has not seen, the final schedule is better.
  rng = np.random.default_rng(0)
  orders = np.stack([rng.permutation(T * 6).reshape(T, 6) for _ in range(8)])
  draws = jax.tree.map(lambda x: x[orders], data)  # [8, T, 6, ...]
  f = jax.jit(
    jax.vmap(
      lambda s, b: exact.schedule_objective(s, params, inner, _train_loss, b, objective),
      in_axes=(None, 0),
    )
  )
  before, after = f(np.full(T, 0.02), draws), f(result.schedule, draws)
  print(
    f"LRS-OPT (momentum, outer Adam): mean E {float(before.mean()):.4f} "
    f"-> {float(after.mean()):.4f} on 8 fresh minibatch orders"
  )
  assert after.mean() < before.mean() - 0.01


def test_random_minibatches_are_epochs_of_permutations():
  x, y = np.arange(10.0)[:, None] * np.ones(3), np.arange(10)
  sample = jax.jit(exact.random_minibatches((x, y), batch_size=4, num_steps=5))
  bx, by = sample(jax.random.PRNGKey(0))
  chex.assert_shape((bx, by), ((5, 4, 3), (5, 4)))
  np.testing.assert_array_equal(bx[..., 0], by)  # rows stay paired
  flat = np.asarray(by).reshape(-1)
  np.testing.assert_array_equal(np.sort(flat[:10]), np.arange(10))  # epoch 1
  np.testing.assert_array_equal(np.sort(flat[10:]), np.arange(10))  # epoch 2
  other = sample(jax.random.PRNGKey(1))[1]
  assert not np.array_equal(by, other)
  with pytest.raises(ValueError, match="batch_size"):
    exact.random_minibatches((x, y), batch_size=11, num_steps=2)
  with pytest.raises(ValueError, match="leading"):
    exact.random_minibatches((x, y[:5]), batch_size=2, num_steps=2)


def _sampler():
  params, batches, objective = _setup()
  data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batches)
  return params, exact.random_minibatches(data, batch_size=6, num_steps=T), objective


def _seed_params(params, n):
  """``n`` initial weights: the shared ones, scaled per seed."""
  scales = np.linspace(0.6, 1.4, n)
  return jax.tree.map(lambda p: np.stack([s * p for s in scales]), params)


def test_lrs_opt_vmapped_over_seeds_equals_per_seed_runs():
  params, sample, objective = _sampler()
  n = 3
  batched = _seed_params(params, n)
  keys = jax.random.split(jax.random.PRNGKey(4), n)
  starts = np.stack([np.full(T, eta) for eta in (0.05, 0.1, 0.2)])
  seen = []

  def run(schedule, p, key):
    return exact.lrs_opt(
      schedule,
      p,
      optax.sgd,
      _train_loss,
      sample,
      objective,
      num_steps=40,
      key=key,
      tol=2e-3,
      window=4,
      record_every=5,
      callback=lambda i, value, s: seen.append(int(i)),
    )

  together = jax.vmap(run)(starts, batched, keys)
  calls = len(seen)
  # The seeds stop on their own criterion, at different steps.
  taken = np.asarray(together.steps_taken)
  assert len(set(taken.tolist())) > 1, taken
  assert np.all(np.asarray(together.converged)) and np.all(taken < 40)
  # The callback ran once per seed and step taken, not for stopped seeds.
  assert calls == taken.sum()
  for j in range(n):
    alone = run(starts[j], jax.tree.map(lambda a: a[j], batched), keys[j])
    assert int(alone.steps_taken) == taken[j]
    for field in ("schedule", "objectives", "schedules", "relative_improvement"):
      np.testing.assert_allclose(
        getattr(together, field)[j], getattr(alone, field), rtol=1e-12, atol=1e-15, err_msg=field
      )
    assert bool(alone.converged)


def test_lrs_opt_from_a_constant_lowers_e_below_the_constants():
  params, sample, objective = _sampler()
  eta0 = 0.05
  result = exact.lrs_opt(
    jnp.full(T, eta0),
    params,
    optax.sgd,
    _train_loss,
    sample,
    objective,
    num_steps=60,
    key=jax.random.PRNGKey(1),
    draws=2,
  )
  assert np.all(result.schedule > 0)
  # E over 16 minibatch orders that LRS-OPT never drew, the same for both.
  keys = jax.random.split(jax.random.PRNGKey(99), 16)
  f = jax.jit(
    jax.vmap(
      lambda s, k: exact.schedule_objective(
        s, params, optax.sgd, _train_loss, sample(k), objective
      ),
      in_axes=(None, 0),
    )
  )
  before = f(jnp.full(T, eta0), keys).mean()
  after = f(result.schedule, keys).mean()
  print(
    f"LRS-OPT (log Adam) from constant {eta0}: mean E {float(before):.4f} -> {float(after):.4f}"
  )
  assert after < before - 0.05, (before, after)


def test_lrs_opt_log_space_step_is_adam_on_log_eta():
  params, batches, objective = _setup()
  schedule0, lr = jnp.asarray(_schedule("sgd")), 0.1
  result = exact.lrs_opt(
    schedule0,
    params,
    optax.sgd,
    _train_loss,
    lambda key: batches,
    objective,
    num_steps=1,
    outer=optax.adam(lr),
    space="log",
    key=jax.random.PRNGKey(0),
  )
  value, grad = exact.schedule_hypergradient(
    schedule0, params, optax.sgd, _train_loss, batches, objective
  )
  tx = optax.adam(lr)
  log_eta = jnp.log(schedule0)
  updates, _ = tx.update(grad * schedule0, tx.init(log_eta), log_eta)
  np.testing.assert_allclose(result.schedule, jnp.exp(log_eta + updates), rtol=1e-12)
  np.testing.assert_allclose(result.objectives[0], value, rtol=1e-13)
  # The default outer optimizer is Adam(DEFAULT_LOG_ADAM_LR) on log(eta).
  default = exact.lrs_opt(
    schedule0,
    params,
    optax.sgd,
    _train_loss,
    lambda key: batches,
    objective,
    num_steps=1,
    key=jax.random.PRNGKey(0),
  )
  tx = optax.adam(exact.DEFAULT_LOG_ADAM_LR)
  updates, _ = tx.update(grad * schedule0, tx.init(log_eta), log_eta)
  np.testing.assert_allclose(default.schedule, jnp.exp(log_eta + updates), rtol=1e-12)


def test_lrs_opt_stopping_rule_and_curve():
  params, sample, objective = _sampler()
  num_steps, window, tol = 50, 5, 2e-4
  result = exact.lrs_opt(
    jnp.full(T, 0.01),
    params,
    optax.sgd,
    _train_loss,
    sample,
    objective,
    num_steps=num_steps,
    key=jax.random.PRNGKey(2),
    tol=tol,
    window=window,
    outer=optax.adam(0.3),
    space="log",
  )
  n = int(result.steps_taken)
  obj, rel = np.asarray(result.objectives), np.asarray(result.relative_improvement)
  print(f"stopped after {n} steps; relative improvement per step:", rel[:n])
  assert bool(result.converged) and 2 * window <= n < num_steps
  assert np.all(np.isfinite(obj[:n])) and np.all(np.isnan(obj[n:]))
  assert np.all(np.isnan(rel[: 2 * window - 1])) and np.all(np.isnan(rel[n:]))
  # rel[i] is the windowed relative improvement per step after step i.
  for i in range(2 * window - 1, n):
    prev = obj[i + 1 - 2 * window : i + 1 - window].mean()
    last = obj[i + 1 - window : i + 1].mean()
    np.testing.assert_allclose(rel[i], (prev - last) / (window * prev), rtol=1e-10)
  # It stopped at the first step below tol.
  assert rel[n - 1] < tol and np.all(rel[2 * window - 1 : n - 1] >= tol)
  # History rows after the stop are NaN, earlier ones are schedules.
  rows = np.asarray(result.schedules)
  assert np.all(np.isfinite(rows[:n])) and np.all(np.isnan(rows[n:]))
  # Without tol it runs every step.
  full = exact.lrs_opt(
    jnp.full(T, 0.01),
    params,
    optax.sgd,
    _train_loss,
    sample,
    objective,
    num_steps=12,
    key=jax.random.PRNGKey(2),
    window=window,
    outer=optax.adam(0.3),
    space="log",
  )
  assert int(full.steps_taken) == 12 and not bool(full.converged)
  m = min(n, 12)
  np.testing.assert_allclose(full.objectives[:m], obj[:m], rtol=1e-12)


def test_lrs_opt_skips_nonfinite_outer_steps():
  params, batches, objective = _setup()
  big = jnp.full(T, 1e300)  # SGD at 1e300 overflows: E is not finite
  result = exact.lrs_opt(
    big,
    params,
    optax.sgd,
    _train_loss,
    lambda key: batches,
    objective,
    num_steps=3,
    key=jax.random.PRNGKey(0),
  )
  assert int(result.nonfinite_count) == 3
  np.testing.assert_allclose(result.schedule, big, rtol=1e-12)  # exp(log(eta))


def test_lrs_opt_errors():
  params, batches, objective = _setup()
  args = (params, optax.sgd, _train_loss, lambda key: batches, objective)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="space"):
    exact.lrs_opt(jnp.full(T, 0.1), *args, num_steps=1, key=key, space="exp")
  with pytest.raises(ValueError, match="positive in log space"):
    exact.lrs_opt(jnp.full(T, 0.1).at[0].set(0.0), *args, num_steps=1, key=key)
  with pytest.raises(ValueError, match="window"):
    exact.lrs_opt(jnp.full(T, 0.1), *args, num_steps=1, key=key, window=0)
  with pytest.raises(ValueError, match="draws"):
    exact.lrs_opt(jnp.full(T, 0.1), *args, num_steps=1, key=key, draws=0)
