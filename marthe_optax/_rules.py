# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Pure scalar rules of MARTHE (DESIGN.md section 2, steps 3-5, and the guards).

Every function here maps scalars to scalars, has no state and no Python-side
control flow on traced values, so it works under ``jit``, ``vmap`` and ``grad``.
The names follow the paper: ``h`` is the hypergradient estimate Delta eta_t,
``g1`` the one-step hypergradient g'_1, ``c`` the multiplicative counter of
appendix A, ``beta`` the hyper-learning rate and ``kappa`` its step size.
"""

import jax.numpy as jnp


def one_step_agreement(h: jnp.ndarray, g1: jnp.ndarray) -> jnp.ndarray:
  """Normalised, thresholded agreement ``q~ = clip(h * g1 / g1**2, 0, 1)``.

  Appendix A of the paper. ``h * g1 / g1**2`` is computed as ``h / g1`` (the
  same number, without the underflow of ``g1**2``), and ``q~ = 0`` where
  ``g1 == 0``, with no NaN.

  Args:
    h: the hypergradient estimate Delta eta_t.
    g1: the one-step hypergradient g'_1(w_{t-1}, eta_{t-1}).

  Returns:
    q~ in [0, 1].
  """
  nonzero = g1 != 0
  ratio = jnp.where(nonzero, h / jnp.where(nonzero, g1, 1), 0)
  return jnp.clip(ratio, 0, 1)


def adaptive_mu(
    h: jnp.ndarray, g1: jnp.ndarray, c_prev: jnp.ndarray
) -> jnp.ndarray:
  """Appendix A's heuristic ``mu_t = q~ ** (1 / (c_{t-1} + 1))``.

  ``mu_t`` is 0 when ``q~ = 0`` (the history is forgotten) and tends to 1 as
  the counter ``c`` grows, for any ``q~`` in (0, 1].
  """
  return one_step_agreement(h, g1) ** (1 / (c_prev + 1))


def next_counter(mu_prev: jnp.ndarray, c_prev: jnp.ndarray) -> jnp.ndarray:
  """The multiplicative counter ``c_t = mu_{t-1} * (1 + c_{t-1})``."""
  return mu_prev * (1 + c_prev)


def next_hyper_lr(
    beta_prev: jnp.ndarray,
    kappa: jnp.ndarray,
    h: jnp.ndarray,
    h_prev: jnp.ndarray,
) -> jnp.ndarray:
  """``beta_t = max(beta_{t-1} + kappa * h_t * h_{t-1}, 0)``.

  The paper prints a minus sign; gradient descent on beta needs the plus
  (DESIGN.md section 2, step 4): beta grows while consecutive hypergradients
  agree in sign. With ``kappa = 0`` beta is fixed.
  """
  return jnp.maximum(beta_prev + kappa * h * h_prev, 0)


def next_hyperparam(
    theta_prev: jnp.ndarray,
    beta: jnp.ndarray,
    h: jnp.ndarray,
    low: jnp.ndarray = 0.0,
    high: jnp.ndarray = jnp.inf,
) -> jnp.ndarray:
  """Projected step ``theta_t = clip(theta_{t-1} - beta_t * h_t, low, high)``.

  Eq. 5 of the paper for the learning rate (``low = 0``, ``high = inf``); the
  same projected descent for any hyperparameter with its own interval
  (weight decay in [0, inf), momentum in [0, 1)).
  """
  return jnp.clip(theta_prev - beta * h, low, high)


def next_learning_rate(
    eta_prev: jnp.ndarray, beta: jnp.ndarray, h: jnp.ndarray
) -> jnp.ndarray:
  """Projected step ``eta_t = max(eta_{t-1} - beta_t * h_t, 0)`` (eq. 5)."""
  return next_hyperparam(eta_prev, beta, h)
