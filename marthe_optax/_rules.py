# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Pure scalar rules of MARTHE: the horizon, the hyperparameter steps, the guards.

Every function here maps scalars to scalars, has no state and no Python-side
control flow on traced values, so it works under ``jit``, ``vmap`` and ``grad``.
The names follow the paper: ``h`` is the hypergradient estimate Delta eta_t,
``g1`` the one-step hypergradient g'_1, ``c`` the multiplicative counter of
appendix A, ``beta`` the hyper-learning rate and ``kappa`` its step size.
``docs/algorithm.md`` describes the step order these rules implement.

Two hyperparameter steps live here:

* the paper's eq. 5 (:func:`next_hyper_lr`, :func:`next_hyperparam`), whose
  step size ``kappa`` has units of 1 / hypergradient**2;
* the scale-free step of the knob-free mode (:func:`normalized_step`): Adam-
  style normalised descent of an unconstrained coordinate ``phi`` of the
  hyperparameter (``log`` for ``[low, inf)``, ``logit`` for ``[low, high)``),
  so that the step size is measured in log-units per step and multiplying the
  objective by any ``c > 0`` changes nothing.
"""

import jax
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


def adaptive_mu(h: jnp.ndarray, g1: jnp.ndarray, c_prev: jnp.ndarray) -> jnp.ndarray:
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

  The paper prints a minus sign; gradient descent on beta needs the plus:
  ``d f / d beta_{t-1} ~ -h_t * h_{t-1}``, so beta grows while consecutive hypergradients
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


def next_learning_rate(eta_prev: jnp.ndarray, beta: jnp.ndarray, h: jnp.ndarray) -> jnp.ndarray:
  """Projected step ``eta_t = max(eta_{t-1} - beta_t * h_t, 0)`` (eq. 5)."""
  return next_hyperparam(eta_prev, beta, h)


def smoothed_agreement(
  q_prev: jnp.ndarray, h: jnp.ndarray, g1: jnp.ndarray, decay: float
) -> jnp.ndarray:
  """An exponential moving average of appendix A's agreement ``q~``.

  ``q_bar_t = decay * q_bar_{t-1} + (1 - decay) * q~_t``. Appendix A's rule
  sets ``mu_t = 0`` (and forgets the whole history) whenever one noisy
  minibatch makes ``q~ = 0``; the average forgets only gradually.
  """
  return decay * q_prev + (1 - decay) * one_step_agreement(h, g1)


def unconstrained(theta, low, high):
  """``phi``: ``log(theta - low)``, or ``logit`` of ``theta`` in ``[low, high)``.

  An infinite ``high`` selects the log. ``theta`` at ``low`` maps to
  ``-inf``: a multiplicative step cannot leave it, which is why the knob-free
  mode asks for hyperparameters strictly inside their interval.
  """
  finite = jnp.isfinite(high)
  width = jnp.where(finite, high - low, 1)
  u = jnp.where(finite, (theta - low) / width, theta - low)
  return jnp.where(finite, jnp.log(u) - jnp.log1p(-jnp.where(finite, u, 0)), jnp.log(u))


def constrained(phi, low, high):
  """The inverse of :func:`unconstrained`."""
  finite = jnp.isfinite(high)
  width = jnp.where(finite, high - low, 1)
  return jnp.where(finite, low + width * jax.nn.sigmoid(phi), low + jnp.exp(phi))


def shift(theta, delta, low, high):
  """``theta`` moved by ``delta`` along ``phi``: :func:`constrained` of
  ``unconstrained(theta) + delta``.

  For ``[low, inf)`` the move is multiplicative, ``low + (theta - low) *
  exp(delta)``, and ``delta = 0`` returns ``theta`` exactly (also for a
  finite ``high``).
  """
  finite = jnp.isfinite(high)
  moved = jnp.where(
    finite,
    constrained(unconstrained(theta, low, high) + delta, low, high),
    low + (theta - low) * jnp.exp(delta),
  )
  return jnp.where(delta == 0, theta, moved)


def unconstrained_scale(theta, low, high):
  """``d theta / d phi`` at ``theta``: ``theta - low``, or ``width * u * (1 - u)``."""
  finite = jnp.isfinite(high)
  width = jnp.where(finite, high - low, 1)
  u = (theta - low) / width
  return jnp.where(finite, width * u * (1 - u), theta - low)


def normalized_step(
  m_prev: jnp.ndarray,
  v_prev: jnp.ndarray,
  n_prev: jnp.ndarray,
  g: jnp.ndarray,
  b1: float,
  b2: float,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Adam's normalised direction of the hyper-gradient ``g = d E / d phi``.

  ``m_t = b1 m + (1 - b1) g``, ``v_t = b2 v + (1 - b2) g**2``, bias-corrected
  over the ``n_t = n + 1`` steps since the last reset, and the direction
  ``d = m_hat / sqrt(v_hat)``, clipped to [-1, 1]. No epsilon is added: the
  direction is 0 while ``v_hat`` is 0, so it is exactly invariant to the scale
  of ``g`` (multiplying the objective by ``c > 0`` multiplies ``m`` by ``c``
  and ``v`` by ``c**2``).

  Args:
    m_prev: the first moment.
    v_prev: the second moment.
    n_prev: the number of steps since the moments were last reset.
    g: the new hyper-gradient.
    b1: the first moment's decay.
    b2: the second moment's decay.

  Returns:
    ``(m_t, v_t, n_t, d_t)``.
  """
  m = b1 * m_prev + (1 - b1) * g
  v = b2 * v_prev + (1 - b2) * jnp.square(g)
  n = n_prev + 1
  m_hat = m / (1 - b1**n)
  v_hat = v / (1 - b2**n)
  positive = v_hat > 0
  d = jnp.where(positive, m_hat / jnp.sqrt(jnp.where(positive, v_hat, 1)), 0)
  return m, v, n, jnp.clip(d, -1, 1)


def loss_blew_up(value: jnp.ndarray, reference: jnp.ndarray, growth: float) -> jnp.ndarray:
  """Whether the training loss ``value`` blew up against its ``reference``.

  True when ``value`` is not finite or exceeds ``growth * reference``
  (``reference`` is the running minimum of the smoothed training loss since
  the last cut; see :func:`marthe_optax.marthe`).
  """
  return ~jnp.isfinite(value) | (value > growth * reference)
