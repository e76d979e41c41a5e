"""HD with E = L is exactly Baydin et al.'s SGD-HD and Adam-HD.

The reference rules are written out here independently, in NumPy, from the
paper's algorithms (Baydin et al., 2018, algorithms "SGD-HD" and "Adam-HD").
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo

STEPS = 60


def _problem():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(40, 6))
  y = rng.normal(size=40)
  loss = lambda w, i: jnp.mean((a[i] @ w - y[i]) ** 2) + 0.1 * jnp.sum(jnp.sin(w))
  batches = [rng.choice(40, size=10, replace=False) for _ in range(STEPS)]
  return loss, batches, np.linspace(-1.0, 1.0, 6)


def _run_hd(tx, loss, batches, w0):
  w = jnp.asarray(w0)
  state = tx.init(w)
  etas = []
  for i in batches:
    g = jax.grad(loss)(w, i)
    u, state = tx.update(g, state, w)
    w = optax.apply_updates(w, u)
    etas.append(float(state.learning_rate))
  return np.asarray(w), np.asarray(etas)


def test_sgd_hd():
  loss, batches, w0 = _problem()
  alpha, beta = 0.05, 1e-3
  with jax.enable_x64(True):
    got_w, got_eta = _run_hd(mo.hd(optax.sgd, alpha, hyper_lr=beta), loss, batches, w0)
    # SGD-HD: h_t = grad f(w_{t-1}) . (-grad f(w_{t-2})); alpha_t = alpha_{t-1} - beta h_t.
    w, prev, etas = np.array(w0), np.zeros_like(w0), []
    for i in batches:
      g = np.asarray(jax.grad(loss)(jnp.asarray(w), i))
      h = g @ (-prev)
      alpha = alpha - beta * h
      w = w - alpha * g
      prev = g
      etas.append(alpha)
  np.testing.assert_allclose(got_eta, etas, rtol=1e-12)
  np.testing.assert_allclose(got_w, w, rtol=1e-12)
  assert abs(got_eta[-1] - 0.05) > 1e-4  # the rule did move alpha


def test_adam_hd():
  loss, batches, w0 = _problem()
  alpha, beta, b1, b2, eps = 0.01, 1e-4, 0.9, 0.999, 1e-8
  with jax.enable_x64(True):
    got_w, got_eta = _run_hd(mo.hd(optax.adam, alpha, hyper_lr=beta), loss, batches, w0)
    # Adam-HD: h_t = grad f(w_{t-1}) . (-m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)).
    w = np.array(w0)
    m, v, prev_dir, etas = np.zeros(6), np.zeros(6), np.zeros(6), []
    for t, i in enumerate(batches, start=1):
      g = np.asarray(jax.grad(loss)(jnp.asarray(w), i))
      h = g @ (-prev_dir)
      alpha = alpha - beta * h
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      direction = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
      w = w - alpha * direction
      prev_dir = direction
      etas.append(alpha)
  np.testing.assert_allclose(got_eta, etas, rtol=1e-10)
  np.testing.assert_allclose(got_w, w, rtol=1e-10)
  assert abs(got_eta[-1] - 0.01) > 1e-5
