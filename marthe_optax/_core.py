# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The one transformation behind every public factory: ``K`` hyperparameters.

:func:`transformation` builds the ``init`` and ``update`` of an Optax
transformation around :func:`marthe_optax._step.step`. The public factories
only choose its arguments: :func:`marthe_optax.marthe`, :func:`hd` and
:func:`rtho` the case ``K = 1`` (the learning rate, viewed as a
:class:`MartheState`), :func:`marthe_optax.marthe_multi` any ``K`` (a
:class:`MultiMartheState`). The state layout is in
:mod:`marthe_optax._state` and ``docs/algorithm.md`` (The state).

The factory's initial hyperparameters and hyper-learning rates are kept in
the state (``start``). When the factory is called again with other values,
as ``optax.inject_hyperparams`` does inside ``update``, the hyperparameters
whose argument changed restart from it; all inside ``jit``, with
``jnp.where``.
"""

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from marthe_optax import _checks
from marthe_optax import _step
from marthe_optax import _tangent
from marthe_optax._state import Core
from marthe_optax._state import Counters
from marthe_optax._state import Hyper
from marthe_optax._state import Monitor
from marthe_optax._state import Start
from marthe_optax._state import View

# theta ([K]), count -> the inner transformation at theta.
InnerAt = Callable[[jax.Array, jax.Array], optax.GradientTransformation]


def _array_leaves(tree: Any) -> Any:
  """``tree`` with array-like pytree nodes replaced by their arrays.

  Some frameworks hand ``init`` boxed params (``flax.nnx.Param`` nodes, which
  define ``__jax_array__``) and ``update`` the plain arrays (``nnx.Optimizer``
  does). The state is built from the plain arrays, so that its trees match
  the gradients at every update.
  """
  return jax.tree.map(
    jnp.asarray,
    tree,
    is_leaf=lambda x: hasattr(x, "__jax_array__") and not isinstance(x, jax.Array),
  )


def _hyper_dtype(params: optax.Params) -> jnp.dtype:
  """The params' float dtype promoted to at least float32."""
  return jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)


def _start(values: Sequence[Any], hyper_lrs: Sequence[Any], dtype: jnp.dtype) -> Start:
  """The factory's arguments as vectors ``[K]``."""
  vector = lambda xs: jnp.stack([jnp.asarray(x, dtype) for x in xs])
  return Start(vector(values), vector(hyper_lrs))


def _zeros(k: int, tree: Any) -> Any:
  """Zeros shaped like ``tree`` with a leading axis ``k``, in its dtypes."""
  return jax.tree.map(lambda x: jnp.zeros((k,) + jnp.shape(x), jnp.result_type(x)), tree)


def _init_hyper(start: Start, config: _step.Config) -> Hyper:
  """The scalars before the first step (one array per field)."""
  zeros = lambda: jnp.zeros_like(start.value)
  mu = (
    zeros()
    if config.mu is None
    else jnp.broadcast_to(jnp.asarray(config.mu, start.value.dtype), start.value.shape)
  )
  return Hyper(
    value=jnp.array(start.value),
    hyper_lr=jnp.array(start.hyper_lr),
    mu=mu,
    c=zeros(),
    hypergradient=zeros(),
    agreement=jnp.ones_like(start.value),
    hyper_m=zeros(),
    hyper_v=zeros(),
    hyper_steps=zeros(),
    stale_tangent=jnp.zeros(start.value.shape, bool),
  )


def _init_monitor(dtype: jnp.dtype) -> Monitor:
  # The largest finite number stands for "no loss seen yet": the state stays
  # finite, and growth * max overflows to inf, so nothing triggers a cut.
  return Monitor(jnp.zeros([], dtype), jnp.full([], jnp.finfo(dtype).max, dtype))


def _zero_counters() -> Counters:
  # One array per field: a state whose leaves share a buffer cannot be donated.
  return Counters(*(jnp.zeros([], jnp.int32) for _ in Counters._fields))


def _next_counters(
  counters: Counters,
  finite: jax.Array,
  cut: jax.Array,
  inner: _tangent.StepAndTangent,
) -> Counters:
  """The event counters after a step (``finite``: ``[K]``).

  A step whose hypergradient was not finite propagated a tangent that the
  next step discards, so its repairs are not counted.
  """
  as_int = lambda x: jnp.asarray(x).astype(jnp.int32)
  repaired = (inner.repaired > 0) & jnp.all(finite)
  return Counters(
    nonfinite_count=counters.nonfinite_count + as_int(jnp.any(~finite)),
    safeguard_count=counters.safeguard_count + as_int(cut),
    repaired_count=counters.repaired_count + as_int(repaired),
  )


def _restart(hyper: Hyper, start: Start, given: Start) -> Hyper:
  """Each hyperparameter whose factory argument changed restarts from it."""
  return hyper._replace(
    value=jnp.where(given.value != start.value, given.value, hyper.value),
    hyper_lr=jnp.where(given.hyper_lr != start.hyper_lr, given.hyper_lr, hyper.hyper_lr),
  )


def _check_tangent(config: _step.Config, core: Core) -> None:
  """The state holds a tangent and ``b`` exactly when this transformation keeps them."""
  stored = jax.tree.structure(core.tangent) != jax.tree.structure(_tangent.EMPTY_TANGENT)
  if stored == config.hessian_free:
    raise ValueError(
      f"This state holds {'a' if stored else 'no'} tangent beyond b, but "
      "this update's transformation "
      f"{'keeps none (mu = 0, HD)' if stored else 'needs one'}. Either the "
      "state comes from a transformation with another mu (initialise it "
      "with this one), or mu was 0 at one of init and update and traced at "
      "the other, as when optax.inject_hyperparams rebuilds the factory "
      "inside jit: keep mu static with optax.inject_hyperparams(mo.marthe, "
      "static_args=('inner', 'mu'))."
    )
  holds_b = jax.tree.structure(core.b) != jax.tree.structure(())
  if holds_b != _step.keeps_b(config):
    raise ValueError(
      f"This state holds {'a' if holds_b else 'no'} b_(t-1), but this "
      f"update's transformation {'keeps none (a fixed mu)' if holds_b else 'needs one'}"
      ": the state comes from a transformation with another horizon mu. "
      "Initialise it with this one, and keep mu static under "
      "optax.inject_hyperparams (static_args=('inner', 'mu'))."
    )


def transformation(
  inner_at: InnerAt,
  values: Sequence[Any],
  hyper_lrs: Sequence[Any],
  make_config: Callable[[jnp.dtype], _step.Config],
  view: View,
) -> optax.GradientTransformationExtraArgs:
  """MARTHE on the ``K = len(values)`` hyperparameters of ``inner_at``.

  Args:
    inner_at: ``(theta, count) -> GradientTransformation``, the inner
      optimizer at the hyperparameter vector ``theta`` (``[K]``) and step.
    values: the initial hyperparameters ``theta_0``, ``K`` scalars.
    hyper_lrs: the initial hyper-learning rates ``beta_0``, ``K`` scalars.
    make_config: ``dtype -> Config``, the step's static configuration.
    view: how the public state type stores the core's state.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose update takes the
    ``value_fn``, ``val_grads`` and ``value`` keyword arguments and forwards
    any other to the inner update.

  Examples:
    The knob-free ``mo.marthe(optax.sgd, 0.1)``, built from the core:

    >>> import jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> from marthe_optax import _core, _state, _step
    >>> tx = _core.transformation(
    ...     lambda theta, count: optax.sgd(theta[0]), [0.1], [0.0],
    ...     _step.make_config(None, None, None, None, 1), _state.SINGLE)
    >>> params, grads = jnp.ones(2), jnp.full(2, 0.5)
    >>> _, state = tx.update(grads, tx.init(params), params, value=1.0)
    >>> reference = mo.marthe(optax.sgd, 0.1)
    >>> _, expected = reference.update(
    ...     grads, reference.init(params), params, value=1.0)
    >>> bool(state.learning_rate == expected.learning_rate), state.count
    (True, Array(1, dtype=int32))
  """
  k = len(values)

  def init_fn(params: optax.Params) -> Any:
    params = _array_leaves(params)
    dtype = _hyper_dtype(params)
    config = make_config(dtype)
    start = _start(values, hyper_lrs, dtype)
    inner_state = inner_at(start.value, jnp.zeros([], jnp.int32)).init(params)
    return view.pack(
      Core(
        count=jnp.zeros([], jnp.int32),
        hyper=_init_hyper(start, config),
        monitor=_init_monitor(dtype),
        start=start,
        tangent=(
          _tangent.EMPTY_TANGENT
          if config.hessian_free
          else _zeros(k, _tangent.Tangent(params, inner_state))
        ),
        b=_zeros(k, params) if _step.keeps_b(config) else (),
        inner_state=inner_state,
        counters=_zero_counters(),
      )
    )

  def update_fn(
    updates: optax.Updates,
    state: Any,
    params: Optional[optax.Params] = None,
    *,
    value_fn: Optional[Callable[[optax.Params], jax.Array]] = None,
    val_grads: Optional[optax.Updates] = None,
    value: Optional[jax.Array] = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, Any]:
    core = view.unpack(state)
    dtype = core.hyper.value.dtype
    config = make_config(dtype)
    val_grads = _checks.objective_grads(
      updates, params, value_fn, val_grads, _step.needs_hessian(config)
    )
    _check_tangent(config, core)
    start = _start(values, hyper_lrs, dtype)
    new, monitor, finite, cut, inner = _step.step(
      config,
      _step.inner_update_fn(lambda theta: inner_at(theta, core.count), extra_args),
      _restart(core.hyper, core.start, start),
      core.monitor,
      core.tangent,
      core.b,
      core.inner_state,
      updates,
      params,
      value_fn,
      val_grads,
      value,
    )
    return inner.updates, view.pack(
      Core(
        count=optax.safe_increment(core.count),
        hyper=new,
        monitor=monitor,
        start=start,
        tangent=inner.tangent,
        b=inner.b if _step.keeps_b(config) else (),
        inner_state=inner.inner_state,
        counters=_next_counters(core.counters, finite, cut, inner),
      )
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
