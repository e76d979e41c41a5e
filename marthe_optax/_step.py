# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""One step of the online method, for ``K`` hyperparameters at once.

:func:`step` is the algorithm of ``docs/algorithm.md`` (One step, in order),
top to bottom: the hypergradient and the one-step hypergradient, the horizon
``mu``, the hyperparameter step (eq. 5 with its adaptive ``beta``, or the
scale-free step), the guards and the safeguard, then the inner step at the
new hyperparameters and the tangent system (:mod:`marthe_optax._tangent`).
It maps arrays to arrays; the static choices of a transformation are a
:class:`Config`, built from the factory's knobs by :func:`make_config`.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import _checks
from marthe_optax import _rules
from marthe_optax import _tangent
from marthe_optax._state import Hyper
from marthe_optax._state import Monitor

# The knob-free mode's defaults (chosen on the learning-rate-free benchmark
# tasks, see docs/knob_free.md; the same for every task).
DEFAULT_STEP_SIZE = 0.03
DEFAULT_HORIZON = 0.99
DEFAULT_FIRST_ORDER = True
# Internal constants of the scale-free rule and the safeguard.
MOMENT_DECAYS = (0.9, 0.999)
AGREEMENT_DECAY = 0.9
LOSS_DECAY = 0.9
LOSS_GROWTH = 2.0
CUT = 0.5
HORIZONS = ("adaptive", "smoothed")


class Config(NamedTuple):
  """The static configuration of one MARTHE step (every method, every K).

  Attributes:
    scale_free: the knob-free mode's normalised log-step (else eq. 5).
    horizon: ``'adaptive'`` (appendix A), ``'smoothed'`` or ``'fixed'``.
    mu: the fixed discount (``horizon == 'fixed'``).
    hessian_free: ``mu`` is identically 0 (HD): no tangent beyond ``b``.
    first_order: drop the Hessian-vector product (``H_t = 0``).
    kappa: eq. 5's step sizes of ``beta``, ``[K]``.
    step_size: the scale-free step in log-units per step, ``[K]``.
    low: lower bounds of the hyperparameters, ``[K]``.
    high: upper bounds, ``[K]``.
    cut: which hyperparameters the safeguard cuts back (learning rates),
      ``[K]`` booleans.
  """

  scale_free: bool
  horizon: str
  mu: Any
  hessian_free: bool
  first_order: bool
  kappa: Any
  step_size: Any
  low: Any
  high: Any
  cut: Any


def _mode(
  hyper_lr_step: Any, mu: Any, first_order: Optional[bool], step_size: Any
) -> tuple[bool, str, Any, bool, Any]:
  """``(scale_free, horizon, fixed mu, first_order, step_size)`` of the knobs."""
  scale_free = hyper_lr_step is None
  if not scale_free and step_size is not None:
    raise ValueError(
      "step_size is the knob-free mode's step; it cannot be combined with "
      "hyper_lr_step (the paper's eq. 5 rule). Pass one of the two."
    )
  if mu is None:
    mu = DEFAULT_HORIZON if scale_free else "adaptive"
  if isinstance(mu, str):
    if mu not in HORIZONS:
      raise ValueError(f"mu must be a number in [0, 1], one of {HORIZONS} or None; got {mu!r}.")
    horizon, fixed = mu, None
  else:
    horizon, fixed = "fixed", mu
  if first_order is None:
    first_order = DEFAULT_FIRST_ORDER if scale_free else False
  if step_size is None:
    step_size = DEFAULT_STEP_SIZE
  if np.ndim(step_size) == 0:
    _checks.check_scalar(
      "step_size",
      step_size,
      0.0,
      np.inf,
      "Pass the knob-free step in log-units of the hyperparameter per step "
      f"(default {DEFAULT_STEP_SIZE}).",
    )
  return scale_free, horizon, fixed, bool(first_order), step_size


def _is_hessian_free(mu: Any) -> bool:
  """Whether ``mu`` is identically 0 (HD): then no Hessian is ever needed."""
  value = None if mu is None or isinstance(mu, str) else _checks.concrete(mu)
  return value is not None and float(value) == 0.0


def make_config(
  hyper_lr_step: Any,
  mu: Any,
  first_order: Optional[bool],
  step_size: Any,
  k: int,
  low: Any = 0.0,
  high: Any = np.inf,
  cut: Any = True,
) -> Callable[[jnp.dtype], Config]:
  """Validates the knobs; returns ``dtype -> Config`` for ``K = k``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from marthe_optax import _step
    >>> config = _step.make_config(None, None, None, None, 2)(jnp.float32)
    >>> config.scale_free, config.horizon, config.first_order
    (True, 'fixed', True)
    >>> config.step_size
    Array([0.03, 0.03], dtype=float32)
    >>> _step.make_config(0.0, 0.0, None, None, 1)(jnp.float32).hessian_free
    True
  """
  scale_free, horizon, fixed, first_order, step_size = _mode(
    hyper_lr_step, mu, first_order, step_size
  )
  hessian_free = _is_hessian_free(fixed)

  def config(dtype):
    vector = lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), (k,))
    return Config(
      scale_free=scale_free,
      horizon=horizon,
      mu=fixed,
      hessian_free=hessian_free,
      first_order=first_order,
      kappa=vector(0.0 if hyper_lr_step is None else hyper_lr_step),
      step_size=vector(step_size),
      low=vector(low),
      high=vector(high),
      cut=jnp.broadcast_to(jnp.asarray(cut, bool), (k,)),
    )

  return config


def keeps_b(config: Config) -> bool:
  """Whether the state keeps ``b_{t-1}``, for the one-step hypergradient.

  ``g'_1 = <b_{t-1}, grad E(w_t)>`` is read by appendix A's horizon, by its
  moving average, and by HD (whose hypergradient it is). With a fixed horizon
  nothing reads it, so the state holds no ``b`` and the step neither reads
  nor writes a second params-sized tree.
  """
  return config.hessian_free or config.horizon != "fixed"


def needs_hessian(config: Config) -> bool:
  """Whether the step forms a Hessian-vector product (needs ``value_fn``)."""
  return not (config.hessian_free or config.first_order)


def _vdots(x: Any, y: Any, dtype: jnp.dtype) -> jax.Array:
  """``<x[k], y>`` for each ``k``, over two trees, accumulated in ``dtype``.

  ``x``'s leaves have a leading (hyperparameter) axis ``K``; the result is a
  vector ``[K]``. A sum of elementwise products rather than
  ``optax.tree.vdot`` (which, with some JAX versions, ravels each leaf through
  ``jnp.vdot``): no leaf is reshaped, so a leaf sharded along any axis reduces
  locally and XLA adds the partial sums with one all-reduce, and meshes with
  explicit sharding need no ``out_sharding``.
  """
  products = jax.tree.map(
    lambda a, b: jnp.sum(
      jnp.asarray(a, dtype) * jnp.asarray(b, dtype),
      axis=tuple(range(1, jnp.ndim(a))),
    ),
    x,
    y,
  )
  k = jax.tree.leaves(x)[0].shape[0]
  return sum(jax.tree.leaves(products), jnp.zeros([k], dtype))


def inner_update_fn(factory: Callable[[jax.Array], Any], extra_args: dict):
  """``(g, s, w, theta) -> factory(theta).update(g, s, w, **extra_args)``."""

  def update(grads, inner_state, params, theta):
    tx = optax.with_extra_args_support(factory(theta))
    return tx.update(grads, inner_state, params, **extra_args)

  return update


def step(
  config: Config,
  inner_update: Callable[..., Any],
  hyper: Hyper,
  monitor: Monitor,
  tangent: _tangent.Tangent,
  b: optax.Params,
  inner_state: optax.OptState,
  updates: optax.Updates,
  params: optax.Params,
  value_fn: Any,
  val_grads: optax.Updates,
  value: Optional[jax.Array],
) -> tuple[Hyper, Monitor, jax.Array, jax.Array, _tangent.StepAndTangent]:
  """One step of the online method, for ``K`` hyperparameters at once.

  The order of ``docs/algorithm.md``: the hypergradient and the one-step
  hypergradient, the horizon ``mu``, the hyperparameter step (eq. 5 with its
  adaptive ``beta``, or the scale-free step), the guards, then the inner step
  at the new hyperparameters and the tangent system.

  A guard that the hypergradient decides (it, ``g1`` or the new values are
  not finite) cannot restart the tangent it is computed from without making
  the tangent's update wait for it. It marks the tangent stale instead: the
  next step reads a stale ``Z`` as zero and restarts from ``B``. A cut that
  the training loss decides is known before the hypergradient and restarts
  the tangent at once.

  Args:
    config: the static configuration.
    inner_update: ``(grads, inner_state, params, theta) -> (updates, state)``.
    hyper: the previous step's scalars, vectors ``[K]``.
    monitor: the safeguard's smoothed training loss and its minimum.
    tangent: ``Z_t``, leaves with a leading axis ``K`` (empty for HD).
    b: ``b_{t-1}``, leaves with a leading axis ``K`` (empty unless
      :func:`keeps_b`).
    inner_state: ``s_t``.
    updates: ``grad L_t(w_t)``.
    params: ``w_t``.
    value_fn: the training loss closure (unused for HD and first order).
    val_grads: ``grad E(w_t)``.
    value: the training loss ``L_t(w_t)``, or ``None``.

  Returns:
    The new scalars and monitor, the per-hyperparameter finiteness mask
    ``[K]``, whether the safeguard cut the hyperparameters back (a boolean
    scalar) and the differentiated inner step.
  """
  dtype = hyper.value.dtype
  low, high = config.low, config.high
  # The hypergradient and the one-step hypergradient (read only by the
  # adaptive horizons and HD; a fixed horizon keeps no b, see keeps_b).
  g1 = _vdots(b, val_grads, dtype) if keeps_b(config) else None
  # With mu identically 0, Z_t.w = b_{t-1}: the hypergradient is g1. A stale
  # tangent (the last hypergradient was not finite) is read as 0: the scalar
  # <Z, g> is selected, not Z, so that the dot product reads the tangent as it
  # is stored (XLA on CPU materialises a select in front of the reduction as
  # one more parameter-sized array, a few per cent of a step on the MLP of
  # the overhead benchmark). A ``where``, so that a stale tangent may hold
  # infinities.
  stale = hyper.stale_tangent
  h = (
    g1
    if config.hessian_free
    else jnp.where(stale, jnp.zeros([], dtype), _vdots(tangent.params, val_grads, dtype))
  )
  # The horizon mu and appendix A's counter c.
  agreement = hyper.agreement
  if config.horizon == "adaptive":
    mu_t = _rules.adaptive_mu(h, g1, hyper.c)
  elif config.horizon == "smoothed":
    agreement = _rules.smoothed_agreement(agreement, h, g1, AGREEMENT_DECAY)
    mu_t = agreement ** (1 / (hyper.c + 1))
  else:
    mu_t = jnp.broadcast_to(jnp.asarray(config.mu, dtype), h.shape)
  c_t = _rules.next_counter(hyper.mu, hyper.c)
  m, v, n = hyper.hyper_m, hyper.hyper_v, hyper.hyper_steps
  if config.scale_free:
    # Normalised descent of phi = log(theta) (or logit) along d E / d phi.
    g = h * _rules.unconstrained_scale(hyper.value, low, high)
    m, v, n, direction = _rules.normalized_step(m, v, n, g, *MOMENT_DECAYS)
    theta_t = jnp.clip(
      _rules.shift(hyper.value, -config.step_size * direction, low, high),
      low,
      high,
    )
    beta_t = hyper.hyper_lr
  else:
    # Eq. 5 and the adaptive hyper-learning rate.
    beta_t = _rules.next_hyper_lr(hyper.hyper_lr, config.kappa, h, hyper.hypergradient)
    theta_t = _rules.next_hyperparam(hyper.value, beta_t, h, low, high)
  # Guard: a non-finite hypergradient, or an update of beta or theta that
  # overflows, changes no hyperparameter and resets its tangent.
  finite = jnp.isfinite(h) & jnp.isfinite(beta_t) & jnp.isfinite(theta_t)
  if g1 is not None:
    finite = finite & jnp.isfinite(g1)
  new = Hyper(theta_t, beta_t, mu_t, c_t, h, agreement, m, v, n, stale)
  kept = hyper._replace(hypergradient=jnp.zeros_like(h))
  cut = jnp.zeros([], bool)
  # The tangent restarts now where a cut comes from the training loss alone,
  # and at the next step where the hypergradient decided (see above).
  early = jnp.zeros_like(stale)
  if config.scale_free:
    # The safeguard: a blow-up of the training loss, or a non-finite
    # hypergradient, cuts the learning rates back and resets the moments.
    if value is not None:
      value = jnp.asarray(value, dtype)
      ema = jnp.where(
        monitor.loss_min < jnp.finfo(dtype).max,
        LOSS_DECAY * monitor.loss_ema + (1 - LOSS_DECAY) * value,
        value,
      )
      cut = _rules.loss_blew_up(ema, monitor.loss_min, LOSS_GROWTH)
      early = jnp.broadcast_to(cut, stale.shape)
      # After a cut the minimum restarts from the current level, so that the
      # next cut needs another blow-up; a non-finite loss changes nothing.
      monitor = jax.tree.map(
        lambda n_, o: jnp.where(jnp.isfinite(value), n_, o),
        Monitor(ema, jnp.where(cut, ema, jnp.minimum(monitor.loss_min, ema))),
        monitor,
      )
    cut = cut | ~jnp.all(finite)
    reduced = jnp.where(
      config.cut,
      jnp.clip(low + CUT * (hyper.value - low), low, high),
      hyper.value,
    )
    zeros = jnp.zeros_like(h)
    kept = kept._replace(
      value=jnp.where(cut, reduced, hyper.value),
      hyper_m=zeros,
      hyper_v=zeros,
      hyper_steps=zeros,
    )
    keep = ~finite | cut
  else:
    keep = ~finite
  new = jax.tree.map(lambda n_, o: jnp.where(keep, o, n_), new, kept)
  new = new._replace(stale_tangent=keep & ~early & (not config.hessian_free))
  # The inner step at theta_t and the tangent system. The tangent restarts
  # from zero where it is stale or the loss cut the rate back. Its discount
  # is the guarded mu; a fixed horizon's (mu_t, equal to the stored mu) is
  # guarded by the stale flag alone, which waits for nothing: a restarted
  # tangent's discount is never used. (Of the forms with that value, this
  # one also keeps the vmapped numbers of the release before bit for bit.)
  # With a fixed horizon and the first-order tangent (the knob-free
  # defaults), nothing of the tangent then waits for the hypergradient, and
  # XLA overlaps it with the validation gradient, as it does HD's b_t.
  restart = stale | early
  inner_step = _tangent.step_and_tangent(
    inner_update,
    new.value,
    updates,
    inner_state,
    params,
    tangent,
    None
    if config.hessian_free
    else (jnp.where(stale, hyper.mu, mu_t) if config.horizon == "fixed" else new.mu),
    value_fn,
    first_order=config.first_order,
    reset=restart,
  )
  return new, monitor, finite, cut, inner_step
