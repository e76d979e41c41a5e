# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE, HD and RTHO: online learning-rate schedules from hypergradients.

MARTHE (Moving Average Real-Time Hyperparameter Estimation) adapts the
learning rate ``eta`` of any inner Optax optimizer during a single training
run, by descending an online estimate of the hypergradient of an objective
``E`` (typically the validation loss) with respect to ``eta``. The estimate is
``Delta eta_t = <Z_t, grad E(w_t)>``, where the tangent ``Z`` of the full
optimizer state follows the discounted tangent system
``Z_{t+1} = mu_t A_t Z_t + B_t`` (eq. 9 of the paper). ``mu = 0`` gives HD
(Baydin et al., 2018), ``mu = 1`` gives RTHO (Franceschi et al., 2017), and
MARTHE adapts ``mu`` online (appendix A) together with the hyper-learning rate
``beta``. One implementation serves all three; they differ only in ``mu``.

Extra cost over the inner optimizer:

* memory: two parameter-sized buffers (``Z_t.w`` and ``b_t``) and a tangent of
  the inner state (one more copy of, e.g., the momentum or the Adam moments);
  HD keeps ``b_t`` alone;
* time: a Hessian-vector product of the training loss per step (one
  forward-over-reverse ``jax.jvp`` of the gradient, about two gradients) and
  the gradient of ``E`` when it is not the training loss. HD (``mu = 0``)
  forms no Hessian-vector product at all: with ``E = L`` it costs about one
  inner step plus O(d).

References:
  Donini et al., `Scheduling the Learning Rate via Hypergradients: New
  Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  Baydin et al., `Online Learning Rate Adaptation with Hypergradient Descent
  <https://arxiv.org/abs/1703.04782>`_, 2018.
  Franceschi et al., `Forward and Reverse Gradient-Based Hyperparameter
  Optimization <https://arxiv.org/abs/1703.01785>`_, 2017.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import _rules
from marthe_optax import _tangent

InnerFactory = Callable[[jax.Array], optax.GradientTransformation]
ScalarLike = Union[float, jax.Array]


@jax.tree_util.register_pytree_node_class
class Sealed:
  """A pytree node that holds a pytree without exposing its key names.

  The inner optimizer's state (Adam's ``mu``, ``count``), and trees shaped like
  the params, may use the same names as MARTHE's own fields. Sealing them keeps
  ``optax.tree.get(state, 'mu')`` unambiguous. The leaves stay ordinary
  arrays (``jit``, ``vmap``, sharding and checkpointing see them as usual);
  :meth:`unseal` returns the original tree.
  """

  __slots__ = ("leaves", "treedef")

  def __init__(self, leaves, treedef):
    self.leaves = tuple(leaves)
    self.treedef = treedef

  @classmethod
  def seal(cls, tree: Any) -> "Sealed":
    leaves, treedef = jax.tree.flatten(tree)
    return cls(leaves, treedef)

  def unseal(self) -> Any:
    return jax.tree.unflatten(self.treedef, self.leaves)

  def tree_flatten(self):
    return self.leaves, self.treedef

  @classmethod
  def tree_unflatten(cls, treedef, leaves):
    return cls(leaves, treedef)

  def __repr__(self) -> str:
    return f"Sealed({self.unseal()!r})"


class MartheState(NamedTuple):
  """State of the transformations returned by :func:`marthe`, :func:`hd` and :func:`rtho`.

  After the update at step ``t`` (``count == t + 1``) the scalar fields hold
  the values used at step ``t``. Read them with ``optax.tree.get(state, name)``
  or, for logging, with :func:`marthe_optax.hyperparam_log`.

  Attributes:
    count: number of updates applied so far (int32).
    learning_rate: ``eta_t``, the learning rate of the last step (with a
      ``schedule``, its scale: the step used ``eta_t * schedule(t)``).
    hyper_lr: ``beta_t``, the hyper-learning rate (the eq. 5 rule; constant
      in the knob-free mode, which has none).
    mu: ``mu_t``, the discount of the tangent system, in [0, 1].
    c: ``c_t``, appendix A's multiplicative counter (effective horizon).
    hypergradient: ``Delta eta_t = <Z_t, grad E(w_t)>``.
    nonfinite_count: number of steps whose hypergradient, or whose update of
      ``beta`` or ``eta``, was not finite (the hyperparameters were then left
      unchanged and the tangent reset).
    tangent: ``Z_{t+1}``, a sealed :class:`Tangent` (params and inner-state
      parts). Empty for HD (``mu`` fixed at 0), where ``Z_{t+1}.w = b_t``.
    b: ``b_t = d w_{t+1} / d eta_t``, sealed, shaped like the params.
    inner_state: the inner optimizer's state, sealed.
    agreement: the smoothed agreement ``q_bar_t`` (smoothed horizon).
    hyper_m: the knob-free step's first moment of ``d E / d log(eta)``.
    hyper_v: its second moment.
    hyper_steps: steps since these moments were last reset.
    loss_ema: the safeguard's smoothed training loss (from ``value``).
    loss_min: its running minimum since the last cut (the largest finite
      number before the first ``value``).
    safeguard_count: number of steps at which the knob-free safeguard cut
      the learning rate back (a blow-up of the training loss, or a non-finite
      hypergradient).
    repaired_count: number of steps at which some tangent entries were NaN
      at a finite primal (``0 * inf``, e.g. Adam at a zero second moment)
      and were set to 0.
  """

  count: jax.Array
  learning_rate: jax.Array
  hyper_lr: jax.Array
  mu: jax.Array
  c: jax.Array
  hypergradient: jax.Array
  nonfinite_count: jax.Array
  tangent: Sealed
  b: Sealed
  inner_state: Sealed
  agreement: jax.Array
  hyper_m: jax.Array
  hyper_v: jax.Array
  hyper_steps: jax.Array
  loss_ema: jax.Array
  loss_min: jax.Array
  safeguard_count: jax.Array
  repaired_count: jax.Array


def _concrete(x: Any) -> Optional[np.ndarray]:
  """``x`` as a NumPy array when known at trace time, else ``None``."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_scalar(name: str, value: Any, low: float, high: float, hint: str) -> None:
  v = _concrete(value)
  if v is None:
    return
  if v.ndim != 0 or not np.isfinite(v) or not low <= v <= high:
    raise ValueError(
        f"{name} must be a finite scalar in [{low}, {high}], got {value!r}. {hint}"
    )


def _array_leaves(tree: Any) -> Any:
  """``tree`` with array-like pytree nodes replaced by their arrays.

  Some frameworks hand ``init`` boxed params (``flax.nnx.Param`` nodes, which
  define ``__jax_array__``) and ``update`` the plain arrays (``nnx.Optimizer``
  does). The state is built from the plain arrays, so that its trees, sealed
  with their structure, match the gradients at every update.
  """
  return jax.tree.map(
      jnp.asarray, tree,
      is_leaf=lambda x: hasattr(x, "__jax_array__") and not isinstance(x, jax.Array),
  )


def _hyper_dtype(params: optax.Params) -> jnp.dtype:
  """The params' float dtype promoted to at least float32."""
  return jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)


def _check_like(name: str, tree: Any, params: optax.Params) -> None:
  """Raises a ValueError unless ``tree`` has the structure and shapes of params."""
  if jax.tree.structure(tree) != jax.tree.structure(params):
    raise ValueError(
        f"{name} must be a tree with the structure of params. Got\n"
        f"  {name}: {jax.tree.structure(tree)}\n  params: "
        f"{jax.tree.structure(params)}\nPass the gradient with respect to the "
        "same params tree that you pass as `params`."
    )
  for path, (x, p) in zip(
      jax.tree_util.tree_leaves_with_path(params),
      zip(jax.tree.leaves(tree), jax.tree.leaves(params)),
  ):
    if jnp.shape(x) != jnp.shape(p):
      raise ValueError(
          f"{name}{jax.tree_util.keystr(path[0])} has shape {jnp.shape(x)} but "
          f"the params leaf has shape {jnp.shape(p)}."
      )


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


def _check_factory(inner: Any) -> None:
  if not callable(inner) or isinstance(inner, optax.GradientTransformation):
    raise ValueError(
        "inner must be a factory learning_rate -> GradientTransformation, such "
        f"as optax.sgd or functools.partial(optax.sgd, momentum=0.9); got "
        f"{inner!r}. Pass optax.sgd, not optax.sgd(0.1)."
    )


def _check_knobs(hyper_lr: Any, hyper_lr_step: Any, mu: Any, where: str = "") -> None:
  _check_scalar(
      f"hyper_lr{where}", hyper_lr, 0.0, np.inf,
      "Pass the initial hyper-learning rate beta_0 >= 0 (the paper uses 0).",
  )
  if hyper_lr_step is None:
    return
  _check_scalar(
      f"hyper_lr_step{where}", hyper_lr_step, 0.0, np.inf,
      "Pass kappa >= 0; choose it with marthe_optax.select_hyper_lr_step, or "
      "pass 0 for a fixed hyper-learning rate.",
  )
  if mu is not None and not isinstance(mu, str):
    _check_scalar(
        "mu", mu, 0.0, 1.0,
        "Pass mu in [0, 1] (0 is HD, 1 is RTHO), or mu=None to adapt it.",
    )


def _is_hessian_free(mu: Any) -> bool:
  """Whether ``mu`` is identically 0 (HD): then no Hessian is ever needed."""
  value = None if mu is None or isinstance(mu, str) else _concrete(mu)
  return value is not None and float(value) == 0.0


def _objective_grads(
    updates: optax.Updates,
    params: Optional[optax.Params],
    value_fn: Any,
    val_grads: Optional[optax.Updates],
    needs_hessian: bool,
) -> optax.Updates:
  """Checks the update's arguments; returns ``grad E(w_t)``."""
  if params is None:
    raise ValueError(
        "marthe needs the current params: call "
        "tx.update(grads, state, params, value_fn=..., val_grads=...)."
    )
  if needs_hessian and value_fn is None:
    raise ValueError(
        "This transformation (mu != 0, full tangent) needs the training-loss "
        "closure for its Hessian-vector product: call tx.update(grads, state, "
        "params, value_fn=lambda p: loss(p, batch)). HD (mu = 0) and the "
        "first-order tangent (first_order=True) work without it."
    )
  _check_like("updates", updates, params)
  if val_grads is None:
    return updates
  _check_like("val_grads", val_grads, params)
  return val_grads


class _Hyper(NamedTuple):
  """The per-hyperparameter scalars of one step, each a vector ``[K]``."""

  value: jax.Array  # theta (the learning rate, ...)
  hyper_lr: jax.Array  # beta (eq. 5 rule)
  mu: jax.Array
  c: jax.Array
  hypergradient: jax.Array  # Delta theta
  agreement: jax.Array  # the smoothed q~ (smoothed horizon)
  hyper_m: jax.Array  # first moment of d E / d phi (scale-free rule)
  hyper_v: jax.Array  # second moment
  hyper_steps: jax.Array  # steps since the moments were last reset


class _Monitor(NamedTuple):
  """The divergence safeguard's view of the training loss (scalars)."""

  loss_ema: jax.Array  # smoothed training loss
  loss_min: jax.Array  # its running minimum since the last cut


# The knob-free mode's defaults (chosen on the learning-rate-free benchmark
# tasks, see docs/knob_free.md; the same for every task).
DEFAULT_STEP_SIZE = 0.03
DEFAULT_HORIZON = "smoothed"
DEFAULT_FIRST_ORDER = True
# Internal constants of the scale-free rule and the safeguard.
MOMENT_DECAYS = (0.9, 0.999)
AGREEMENT_DECAY = 0.9
LOSS_DECAY = 0.9
LOSS_GROWTH = 2.0
CUT = 0.5
HORIZONS = ("adaptive", "smoothed")


class _Config(NamedTuple):
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
      raise ValueError(
          f"mu must be a number in [0, 1], one of {HORIZONS} or None; got "
          f"{mu!r}."
      )
    horizon, fixed = mu, None
  else:
    horizon, fixed = "fixed", mu
  if first_order is None:
    first_order = DEFAULT_FIRST_ORDER if scale_free else False
  if step_size is None:
    step_size = DEFAULT_STEP_SIZE
  if np.ndim(step_size) == 0:
    _check_scalar(
        "step_size", step_size, 0.0, np.inf,
        "Pass the knob-free step in log-units of the hyperparameter per step "
        f"(default {DEFAULT_STEP_SIZE}).",
    )
  return scale_free, horizon, fixed, bool(first_order), step_size


def _step(
    config: _Config,
    inner_update: Callable[..., Any],
    hyper: _Hyper,
    monitor: _Monitor,
    tangent: _tangent.Tangent,
    b: optax.Params,
    inner_state: optax.OptState,
    updates: optax.Updates,
    params: optax.Params,
    value_fn: Any,
    val_grads: optax.Updates,
    value: Optional[jax.Array],
) -> tuple[_Hyper, _Monitor, jax.Array, jax.Array, _tangent.StepAndTangent]:
  """One step of the online method, for ``K`` hyperparameters at once.

  The order of ``docs/algorithm.md``: the hypergradient and the one-step
  hypergradient, the horizon ``mu``, the hyperparameter step (eq. 5 with its
  adaptive ``beta``, or the scale-free step), the guards, then the inner step
  at the new hyperparameters and the tangent system.

  Args:
    config: the static configuration.
    inner_update: ``(grads, inner_state, params, theta) -> (updates, state)``.
    hyper: the previous step's scalars, vectors ``[K]``.
    monitor: the safeguard's smoothed training loss and its minimum.
    tangent: ``Z_t``, leaves with a leading axis ``K`` (empty for HD).
    b: ``b_{t-1}``, leaves with a leading axis ``K``.
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
  # The hypergradient and the one-step hypergradient.
  g1 = _vdots(b, val_grads, dtype)
  # With mu identically 0, Z_t.w = b_{t-1}: the hypergradient is g1.
  h = g1 if config.hessian_free else _vdots(tangent.params, val_grads, dtype)
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
        low, high,
    )
    beta_t = hyper.hyper_lr
  else:
    # Eq. 5 and the adaptive hyper-learning rate.
    beta_t = _rules.next_hyper_lr(
        hyper.hyper_lr, config.kappa, h, hyper.hypergradient
    )
    theta_t = _rules.next_hyperparam(hyper.value, beta_t, h, low, high)
  # Guard: a non-finite hypergradient, or an update of beta or theta that
  # overflows, changes no hyperparameter and resets its tangent.
  finite = (
      jnp.isfinite(h) & jnp.isfinite(g1)
      & jnp.isfinite(beta_t) & jnp.isfinite(theta_t)
  )
  new = _Hyper(theta_t, beta_t, mu_t, c_t, h, agreement, m, v, n)
  kept = hyper._replace(hypergradient=jnp.zeros_like(h))
  cut = jnp.zeros([], bool)
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
      # After a cut the minimum restarts from the current level, so that the
      # next cut needs another blow-up; a non-finite loss changes nothing.
      monitor = jax.tree.map(
          lambda n_, o: jnp.where(jnp.isfinite(value), n_, o),
          _Monitor(ema, jnp.where(cut, ema, jnp.minimum(monitor.loss_min, ema))),
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
        hyper_m=zeros, hyper_v=zeros, hyper_steps=zeros,
    )
    keep = ~finite | cut
  else:
    keep = ~finite
  new = jax.tree.map(lambda n_, o: jnp.where(keep, o, n_), new, kept)
  if not config.hessian_free:
    tangent = jax.tree.map(
        lambda z: jnp.where(
            keep.reshape(keep.shape + (1,) * (z.ndim - 1)), jnp.zeros_like(z),
            z,
        ),
        tangent,
    )
  # The inner step at theta_t and the tangent system.
  step = _tangent.step_and_tangent(
      inner_update,
      new.value,
      updates,
      inner_state,
      params,
      tangent,
      None if config.hessian_free else new.mu,
      value_fn,
      first_order=config.first_order,
  )
  return new, monitor, finite, cut, step


def _inner_update(factory: Callable[[jax.Array], Any], extra_args: dict):
  """``(g, s, w, theta) -> factory(theta).update(g, s, w, **extra_args)``."""

  def inner_update(grads, inner_state, params, theta):
    tx = optax.with_extra_args_support(factory(theta))
    return tx.update(grads, inner_state, params, **extra_args)

  return inner_update


def _expand(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[None], tree)


def _squeeze(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[0], tree)


def _make_config(
    hyper_lr_step: Any,
    mu: Any,
    first_order: Optional[bool],
    step_size: Any,
    k: int,
    low: Any = 0.0,
    high: Any = np.inf,
    cut: Any = True,
) -> Callable[[jnp.dtype], _Config]:
  """Validates the knobs; returns ``dtype -> _Config`` for ``K = k``."""
  scale_free, horizon, fixed, first_order, step_size = _mode(
      hyper_lr_step, mu, first_order, step_size
  )
  hessian_free = _is_hessian_free(fixed)

  def config(dtype):
    vector = lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), (k,))
    return _Config(
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


def _init_hyper(values: jax.Array, hyper_lr: jax.Array, config: _Config) -> _Hyper:
  """The scalars before the first step (``values``, ``hyper_lr``: ``[K]``)."""
  zeros = jnp.zeros_like(values)
  mu0 = zeros if config.mu is None else jnp.broadcast_to(
      jnp.asarray(config.mu, values.dtype), values.shape)
  return _Hyper(
      value=values, hyper_lr=hyper_lr, mu=mu0, c=zeros, hypergradient=zeros,
      agreement=jnp.ones_like(values), hyper_m=zeros, hyper_v=zeros,
      hyper_steps=zeros,
  )


def _init_monitor(dtype: jnp.dtype) -> _Monitor:
  # The largest finite number stands for "no loss seen yet": the state stays
  # finite, and growth * max overflows to inf, so nothing triggers a cut.
  return _Monitor(jnp.zeros([], dtype), jnp.full([], jnp.finfo(dtype).max, dtype))


def _scalar_fields(hyper: _Hyper, monitor: _Monitor) -> dict:
  """The state fields that mirror ``hyper`` (all but ``value``) and ``monitor``.

  :class:`MartheState` and ``MultiMartheState`` name these fields alike; the
  hyperparameter values themselves are stored differently by each.
  """
  fields = hyper._asdict()
  del fields["value"]
  return {**fields, **monitor._asdict()}


def _read_scalars(state: Any, value: jax.Array) -> tuple[_Hyper, _Monitor]:
  """The inverse of :func:`_scalar_fields`, with the hyperparameter ``value``."""
  hyper = _Hyper(value, *(getattr(state, f) for f in _Hyper._fields[1:]))
  return hyper, _Monitor(*(getattr(state, f) for f in _Monitor._fields))


def _zero_counters() -> dict:
  # One array per field: a state whose leaves share a buffer cannot be donated.
  return {name: jnp.zeros([], jnp.int32)
          for name in ("nonfinite_count", "safeguard_count", "repaired_count")}


def _next_counters(
    state: Any, finite: jax.Array, cut: jax.Array,
    step: _tangent.StepAndTangent,
) -> dict:
  """The event counters after a step (``finite``: ``[K]``)."""
  as_int = lambda x: jnp.asarray(x).astype(jnp.int32)
  return dict(
      nonfinite_count=state.nonfinite_count + as_int(jnp.any(~finite)),
      safeguard_count=state.safeguard_count + as_int(cut),
      repaired_count=state.repaired_count + as_int(step.repaired > 0),
  )


def _check_learning_rate(learning_rate: Any) -> None:
  if callable(learning_rate):
    raise ValueError(
        "learning_rate must be a number (the initial learning rate, or the "
        "scale of a schedule), not a schedule: MARTHE adapts it. To keep a "
        "schedule's shape, pass it as schedule=..., e.g. marthe(optax.sgd, "
        "learning_rate=0.1, schedule=optax.warmup_cosine_decay_schedule(0.0, "
        "1.0, 100, 1000))."
    )
  _check_scalar(
      "learning_rate", learning_rate, 0.0, np.inf,
      "Pass the initial learning rate eta_0 >= 0.",
  )


def _checked_schedule(schedule: Any) -> Optional[Callable[[jax.Array], Any]]:
  if schedule is not None and not callable(schedule):
    raise ValueError(
        "schedule must be an Optax schedule (a function of the step count), "
        f"e.g. optax.cosine_decay_schedule(1.0, 1000); got {schedule!r}."
    )
  return schedule


def marthe(
    inner: InnerFactory,
    learning_rate: ScalarLike,
    *,
    hyper_lr_step: Optional[ScalarLike] = None,
    hyper_lr: ScalarLike = 0.0,
    mu: Optional[Union[ScalarLike, str]] = None,
    first_order: Optional[bool] = None,
    step_size: Optional[ScalarLike] = None,
    schedule: Optional[optax.Schedule] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MARTHE: the learning rate of ``inner`` scheduled online by hypergradients.

  At each step ``t``: the hypergradient ``h_t = <Z_t, grad E(w_t)>`` and the
  one-step hypergradient ``g1 = <b_{t-1}, grad E(w_t)>``; the discount
  ``mu_t``; a step of the learning rate along ``-h_t``; then the inner step
  at the new ``eta_t`` and the tangent ``Z_{t+1} = mu_t A_t Z_t + B_t`` from
  one linearisation of the inner update (``docs/algorithm.md``).

  Two rules move the learning rate:

  * **knob-free** (the default, ``hyper_lr_step=None``): normalised descent
    of ``log(eta)`` along ``d E / d log(eta) = eta_t h_t`` with Adam-style
    moments, ``step_size`` log-units per step at most. Multiplying ``E`` by
    any ``c > 0`` leaves the whole trajectory unchanged, so one default
    serves every task. By default the tangent is first order (the
    Hessian-vector product dropped, ``value_fn`` not needed) and the horizon
    is a smoothed version of appendix A's (``mu='smoothed'``). A safeguard
    watches the training loss passed as ``value=``: when its moving average
    exceeds twice its running minimum, or the hypergradient is not finite,
    the learning rate is halved and the moments and tangent reset, inside
    ``jit`` (``safeguard_count`` counts the events). See
    ``docs/knob_free.md`` for how the defaults were chosen.
  * **the paper's eq. 5** (``hyper_lr_step=kappa``): the hyper-learning rate
    ``beta_t = max(beta_{t-1} + kappa h_t h_{t-1}, 0)`` and
    ``eta_t = max(eta_{t-1} - beta_t h_t, 0)``, with appendix A's adaptive
    ``mu`` and the full tangent: an exact reproduction of the paper.

  The update takes these extra keyword arguments:

  * ``val_grads``: ``grad E(w_t)``, the gradient of the objective at the
    current params (e.g. on a validation minibatch). Without it ``E`` is the
    training loss and its gradient is the ``updates`` argument.
  * ``value``: the training loss ``L_t(w_t)`` of the minibatch (Optax's
    name for it, as from ``jax.value_and_grad``), read by the knob-free
    safeguard; ignored by the eq. 5 rule.
  * ``value_fn``: the training loss of the current minibatch as a function of
    the params, ``L_t(params) -> scalar``; its Hessian-vector product drives
    the full tangent. Not needed for HD (``mu == 0``) or ``first_order``.

  ``updates`` must be the training gradient ``grad L_t(w_t)`` (put gradient
  clipping, weight decay and the like inside ``inner`` so the tangent sees
  them). Other extra keyword arguments are forwarded to the inner update and
  otherwise ignored.

  Guards: ``eta >= 0`` and ``beta >= 0`` always; a non-finite hypergradient
  (or an update of ``beta`` or ``eta`` that overflows) leaves ``eta``,
  ``beta`` and ``mu`` unchanged, resets the tangent to zero and increments
  ``nonfinite_count``. A tangent entry that is NaN at a finite primal (Adam's
  ``sqrt`` at a zero second moment, for a weight whose gradients have all
  been exactly 0) is set to 0, which is its limit, and ``repaired_count``
  counts the steps where it happened: plain ``optax.adam`` works as it is.

  Args:
    inner: a factory ``learning_rate -> optax.GradientTransformation``, such
      as ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``,
      ``optax.adam`` or ``lambda lr: optax.chain(..., optax.sgd(lr))``. It is
      called again inside ``update`` with the current (traced) learning rate,
      as ``optax.inject_hyperparams`` does, and differentiated there.
    learning_rate: the initial learning rate ``eta_0 >= 0`` (``> 0`` in the
      knob-free mode, which moves it multiplicatively); with ``schedule``,
      the initial scale of the schedule.
    hyper_lr_step: ``None`` (default) for the knob-free rule; else
      ``kappa >= 0``, eq. 5's step size of the hyper-learning rate (the
      paper's last ``beta``). It has units of 1 / hypergradient**2 and no
      task-independent good value: pick it with
      :func:`marthe_optax.select_hyper_lr_step`. ``0`` fixes ``beta`` at
      ``hyper_lr``.
    hyper_lr: ``beta_0 >= 0``, eq. 5's initial hyper-learning rate (the
      paper's default is 0: ``eta`` then stays ``eta_0`` until two
      consecutive hypergradients agree in sign).
    mu: the horizon. A number in [0, 1] fixes it (0 is HD, 1 is RTHO);
      ``'adaptive'`` is appendix A's heuristic
      ``mu_t = q~_t ** (1 / (c_{t-1} + 1))``; ``'smoothed'`` is the same
      with ``q~`` replaced by its moving average (decay 0.9), so one noisy
      minibatch does not reset the horizon. ``None``: ``'adaptive'`` for
      eq. 5, ``'smoothed'`` for the knob-free rule.
    first_order: drop the Hessian-vector product from the tangent
      (``H_t = 0``; the inner-state tangent is still propagated), so that
      ``value_fn`` is not needed and a step costs about an HD step with a
      validation objective. ``None``: ``True`` for the knob-free rule,
      ``False`` for eq. 5.
    step_size: the knob-free step, in log-units of ``eta`` per step (None:
      0.03, chosen once on the benchmark tasks; the same for every task).
    schedule: an optional Optax schedule: step ``t`` uses the learning rate
      ``eta_t * schedule(t)``, and MARTHE adapts the scale ``eta_t`` (its
      hypergradient is taken with respect to the scale), so a warm-up or a
      decay keeps its shape.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`MartheState`.

  Raises:
    ValueError: on a non-callable ``inner``, a schedule passed as
      ``learning_rate``, a negative or non-finite ``learning_rate``,
      ``hyper_lr``, ``hyper_lr_step`` or ``step_size``, ``mu`` outside
      [0, 1], ``step_size`` together with ``hyper_lr_step``; at update time,
      on missing ``params``, missing ``value_fn`` when the Hessian is needed,
      or gradients whose tree does not match ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> loss = lambda w, x: jnp.mean((x @ w - 1.0) ** 2)
    >>> x_train, x_val = jnp.ones((8, 3)), jnp.full((4, 3), 0.5)
    >>> tx = mo.marthe(optax.sgd, learning_rate=0.01)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(20):
    ...   value, grads = jax.value_and_grad(loss)(params, x_train)
    ...   updates, state = tx.update(
    ...       grads, state, params, value=value,
    ...       val_grads=jax.grad(loss)(params, x_val))
    ...   params = optax.apply_updates(params, updates)
    >>> float(optax.tree.get(state, 'learning_rate')) > 0.01
    True

    The paper's rule, with its hyper-learning-rate step size:

    >>> tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(
    ...     jax.grad(loss)(params, x_train), state, params,
    ...     value_fn=lambda p: loss(p, x_train))

  References:
    Donini et al., `Scheduling the Learning Rate via Hypergradients: New
    Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  """
  _check_factory(inner)
  _check_learning_rate(learning_rate)
  _check_knobs(hyper_lr, hyper_lr_step, mu)
  schedule = _checked_schedule(schedule)
  make_config = _make_config(hyper_lr_step, mu, first_order, step_size, 1)
  if hyper_lr_step is None:
    _check_positive_start("learning_rate", learning_rate, 0.0)

  def call_inner(theta, count):
    scale = theta[0]
    if schedule is None:
      return inner(scale)
    return inner(scale * jnp.asarray(schedule(count), scale.dtype))

  def init_fn(params: optax.Params) -> MartheState:
    params = _array_leaves(params)
    dtype = _hyper_dtype(params)
    config = make_config(dtype)
    eta0 = jnp.asarray(learning_rate, dtype)
    inner_state = call_inner(eta0[None], jnp.zeros([], jnp.int32)).init(params)
    hyper = _squeeze(_init_hyper(eta0[None], jnp.asarray(hyper_lr, dtype)[None],
                                 config))
    monitor = _init_monitor(dtype)
    return MartheState(
        count=jnp.zeros([], jnp.int32),
        learning_rate=hyper.value,
        tangent=Sealed.seal(
            _tangent.EMPTY_TANGENT
            if config.hessian_free
            else _tangent.zeros_tangent(params, inner_state)
        ),
        b=Sealed.seal(optax.tree.zeros_like(params)),
        inner_state=Sealed.seal(inner_state),
        **_scalar_fields(hyper, monitor),
        **_zero_counters(),
    )

  def update_fn(
      updates: optax.Updates,
      state: MartheState,
      params: Optional[optax.Params] = None,
      *,
      value_fn: Optional[Callable[[optax.Params], jax.Array]] = None,
      val_grads: Optional[optax.Updates] = None,
      value: Optional[jax.Array] = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, MartheState]:
    config = make_config(state.learning_rate.dtype)
    val_grads = _objective_grads(
        updates, params, value_fn, val_grads, _needs_hessian(config)
    )
    hyper, monitor = _read_scalars(state, state.learning_rate)
    # One hyperparameter: the shared K-hyperparameter step with K = 1.
    new, monitor, finite, cut, step = _step(
        config,
        _inner_update(lambda theta: call_inner(theta, state.count), extra_args),
        _expand(hyper),
        monitor,
        _expand(state.tangent.unseal()),
        _expand(state.b.unseal()),
        state.inner_state.unseal(),
        updates,
        params,
        value_fn,
        val_grads,
        value,
    )
    new = _squeeze(new)
    new_state = MartheState(
        count=optax.safe_increment(state.count),
        learning_rate=new.value,
        tangent=Sealed.seal(_squeeze(step.tangent)),
        b=Sealed.seal(_squeeze(step.b)),
        inner_state=Sealed.seal(step.inner_state),
        **_scalar_fields(new, monitor),
        **_next_counters(state, finite, cut, step),
    )
    return step.updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _needs_hessian(config: _Config) -> bool:
  return not (config.hessian_free or config.first_order)


def _check_positive_start(name: str, value: Any, low: float) -> None:
  v = _concrete(value)
  if v is not None and float(v) <= low:
    raise ValueError(
        f"{name} must start above {low} in the knob-free mode, which moves it "
        f"multiplicatively (in log-units); got {value!r}. Start it at a small "
        "positive value, or pass hyper_lr_step=... for the paper's additive "
        "eq. 5 rule."
    )


def hd(
    inner: InnerFactory,
    learning_rate: ScalarLike,
    *,
    hyper_lr: ScalarLike,
) -> optax.GradientTransformationExtraArgs:
  """HD: hypergradient descent on the learning rate (Baydin et al., 2018).

  MARTHE with ``mu = 0`` and a fixed hyper-learning rate: the hypergradient is
  the one-step ``<b_{t-1}, grad E(w_t)>``, no Hessian-vector product is
  formed and no loss closure is needed. Without ``val_grads`` (``E = L``) this
  is exactly SGD-HD / Adam-HD:
  ``eta_t = eta_{t-1} + beta <grad L_t(w_t), d_{t-1}>`` with ``d_{t-1}`` the
  inner direction of the previous step.

  Args:
    inner: the inner optimizer factory, as in :func:`marthe`.
    learning_rate: the initial learning rate ``eta_0 >= 0``.
    hyper_lr: ``beta >= 0``, the fixed hyper-learning rate.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`MartheState`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> tx = mo.hd(optax.adam, learning_rate=1e-3, hyper_lr=1e-7)
    >>> params = {'w': jnp.ones(3)}
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.full(3, 0.5)}
    >>> updates, state = tx.update(grads, state, params)

  References:
    Baydin et al., `Online Learning Rate Adaptation with Hypergradient Descent
    <https://arxiv.org/abs/1703.04782>`_, 2018.
  """
  return marthe(inner, learning_rate, hyper_lr_step=0.0, hyper_lr=hyper_lr,
                mu=0.0)


def rtho(
    inner: InnerFactory,
    learning_rate: ScalarLike,
    *,
    hyper_lr: ScalarLike,
) -> optax.GradientTransformationExtraArgs:
  """RTHO: real-time hyperparameter optimization (Franceschi et al., 2017).

  MARTHE with ``mu = 1`` and a fixed hyper-learning rate: the hypergradient
  accumulates the whole past trajectory through the undiscounted tangent
  system ``Z_{t+1} = A_t Z_t + B_t`` (the learning rate is updated every step,
  ``K = 1``). Needs ``value_fn`` at update time.

  Args:
    inner: the inner optimizer factory, as in :func:`marthe`.
    learning_rate: the initial learning rate ``eta_0 >= 0``.
    hyper_lr: ``beta >= 0``, the fixed hyper-learning rate.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`MartheState`.

  References:
    Franceschi et al., `Forward and Reverse Gradient-Based Hyperparameter
    Optimization <https://arxiv.org/abs/1703.01785>`_, 2017.
  """
  return marthe(inner, learning_rate, hyper_lr_step=0.0, hyper_lr=hyper_lr,
                mu=1.0)
