# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE for several hyperparameters at once.

The paper's conclusion: "MARTHE is a general technique for finding online
hyperparameter schedules ... it scales linearly with the number of
hyperparameters". :func:`marthe_multi` tunes any float keywords of the inner
factory together (``learning_rate``, ``weight_decay``, ``momentum``, ``b1``,
...) and per-group learning rates (:func:`per_group`). Each hyperparameter
``theta_k`` has its own tangent system ``Z^k_{t+1} = mu_k A_t Z^k_t + B^k_t``,
its own ``mu_k`` (appendix A), ``beta_k`` and projection interval; the ``K``
tangents are one batched computation (``jax.vmap`` over tangents, the same
implementation as :func:`marthe_optax.marthe`, which is the case ``K = 1``).

Extra cost over the inner optimizer, for ``K`` hyperparameters: ``K`` times
the memory of :func:`marthe_optax.marthe` (``Z^k.w``, ``b^k`` and the
inner-state tangent per hyperparameter) and ``K`` Hessian-vector products per
step, batched (the training gradient and forward pass are shared).
"""

import sys
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import _marthe
from marthe_optax import _tangent
from marthe_optax._marthe import Sealed

# Default projection intervals, by the hyperparameter's (top-level) name.
# Anything else, like the learning rate and the weight decay, lives in [0, inf).
UNIT_INTERVAL = (0.0, 1.0 - 1e-6)
DEFAULT_BOUNDS = {
    "momentum": UNIT_INTERVAL,
    "b1": UNIT_INTERVAL,
    "b2": UNIT_INTERVAL,
    "decay": UNIT_INTERVAL,
}
PerHyperparam = Union[float, jax.Array, Mapping[str, Any]]


class MultiMartheState(NamedTuple):
  """State of :func:`marthe_multi`.

  The per-hyperparameter vectors (``hyper_lr``, ``mu``, ``c``,
  ``hypergradient``) are indexed like ``jax.tree.leaves(hyperparams)``;
  :func:`hyperparam_log` names them.

  Attributes:
    count: number of updates applied so far (int32).
    hyperparams: the current hyperparameters, a pytree like the one given to
      :func:`marthe_multi` (``optax.tree.get(state, 'weight_decay')`` reads
      one).
    hyper_lr: ``beta_k``, ``[K]``.
    mu: ``mu_k``, ``[K]``.
    c: appendix A's counters ``c_k``, ``[K]``.
    hypergradient: ``Delta theta_k``, ``[K]``.
    nonfinite_count: number of steps where some hyperparameter's update was
      not finite (that hyperparameter was then left unchanged and its tangent
      reset).
    tangent: ``Z^k_{t+1}``, sealed, every leaf with a leading axis ``K``.
    b: ``b^k_t``, sealed, every leaf with a leading axis ``K``.
    inner_state: the inner optimizer's state, sealed.
    agreement: the smoothed agreements ``q_bar_k``, ``[K]``.
    hyper_m: the knob-free step's first moments, ``[K]``.
    hyper_v: its second moments, ``[K]``.
    hyper_steps: steps since the moments were last reset, ``[K]``.
    loss_ema: the safeguard's smoothed training loss.
    loss_min: its running minimum since the last cut.
    safeguard_count: number of steps at which the safeguard cut the learning
      rates back.
    repaired_count: number of steps at which some NaN tangent entries at a
      finite primal were set to 0.
  """

  count: jax.Array
  hyperparams: Any
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


def _names(hyperparams: Any) -> list[str]:
  """'learning_rate', 'learning_rate/hidden', ... in leaf order."""
  paths = jax.tree_util.tree_flatten_with_path(hyperparams)[0]
  return [
      "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
      for path, _ in paths
  ]


def _per_leaf(value: PerHyperparam, names: list[str], what: str) -> list[Any]:
  """A scalar for every hyperparameter: one for all, or looked up by name.

  A mapping is looked up by the full name (``'learning_rate/hidden'``) first,
  then by the top-level name (``'learning_rate'``).
  """
  if not isinstance(value, Mapping):
    return [value] * len(names)
  out = []
  for name in names:
    top = name.split("/")[0]
    if name in value:
      out.append(value[name])
    elif top in value:
      out.append(value[top])
    else:
      raise ValueError(
          f"{what} has no entry for the hyperparameter {name!r}: give one for "
          f"{name!r} or {top!r}, or a single number for all."
      )
  return out


def marthe_multi(
    inner: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any],
    *,
    hyper_lr_step: Optional[PerHyperparam] = None,
    hyper_lr: PerHyperparam = 0.0,
    mu: Optional[Union[float, str]] = None,
    first_order: Optional[bool] = None,
    step_size: Optional[PerHyperparam] = None,
    bounds: Optional[Mapping[str, tuple[float, float]]] = None,
) -> optax.GradientTransformationExtraArgs:
  """MARTHE on several hyperparameters of ``inner`` at once.

  Every leaf of ``hyperparams`` is a scalar hyperparameter ``theta_k`` with
  its own hypergradient ``Delta theta_k = <Z^k_t, grad E(w_t)>``, its own
  ``mu_k`` and its own step, exactly as :func:`marthe_optax.marthe` does for
  the learning rate, with the same two rules:

  * knob-free (default): normalised descent of ``phi_k = log(theta_k - low)``
    (``logit`` for hyperparameters with a finite upper bound, such as
    momentum), ``step_size`` log-units per step, nothing to choose per
    hyperparameter; the safeguard cuts the learning rates (the
    hyperparameters named ``learning_rate``) back on a blow-up of ``value``;
  * eq. 5 (``hyper_lr_step`` given): ``theta_k <- clip(theta_k - beta_k
    Delta theta_k, low_k, high_k)`` with ``beta_k`` adapted with step size
    ``kappa_k``.

  The update takes the same ``val_grads``, ``value`` and ``value_fn`` extra
  arguments.

  Args:
    inner: a factory called as ``inner(**hyperparams)``, e.g.
      ``functools.partial(optax.sgd, nesterov=True)`` with
      ``{'learning_rate': 0.1, 'momentum': 0.9}``, ``optax.adamw`` with
      ``{'learning_rate': 1e-3, 'weight_decay': 1e-4}``, or
      :func:`per_group` for one learning rate per parameter group.
    hyperparams: the initial values, a mapping from keyword names to scalars
      or to pytrees of scalars (``{'learning_rate': {'hidden': 0.1, 'out':
      0.1}}`` for per-group learning rates). In the knob-free mode they must
      lie strictly inside their intervals.
    hyper_lr_step: ``None`` for the knob-free rule; else ``kappa_k >= 0``,
      one number for all or a mapping by name (hypergradients of different
      hyperparameters have different scales).
    hyper_lr: ``beta_k(0) >= 0`` (eq. 5), one number for all or a mapping.
    mu: the horizon, as in :func:`marthe_optax.marthe`, shared by all.
    first_order: drop the Hessian-vector product, as in
      :func:`marthe_optax.marthe` (``None``: ``True`` for knob-free).
    step_size: the knob-free step in log-units per step, one number for all
      or a mapping by name (``None``: the package default).
    bounds: projection intervals ``(low, high)`` by name, overriding the
      defaults: ``[0, 1 - 1e-6]`` for ``momentum``, ``b1``, ``b2`` and
      ``decay``, ``[0, inf)`` for anything else.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`MultiMartheState`.

  Raises:
    ValueError: on a non-callable ``inner``, a hyperparameter outside its
      interval (or on its lower bound, in the knob-free mode), a negative
      ``hyper_lr``, ``hyper_lr_step`` or ``step_size``, ``mu`` outside
      [0, 1], a mapping with no entry for some hyperparameter; at update time
      as :func:`marthe_optax.marthe`.

  Examples:
    >>> import functools, jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> tx = mo.marthe_multi(
    ...     optax.adamw, {'learning_rate': 1e-2, 'weight_decay': 1e-3})
    >>> params = jnp.ones(3)
    >>> state = tx.init(params)
    >>> loss = lambda p: jnp.sum((p - 2.0) ** 2)
    >>> value, grads = jax.value_and_grad(loss)(params)
    >>> updates, state = tx.update(grads, state, params, value=value)
    >>> [k for k in mo.hyperparam_log(state) if 'weight_decay' in k]
    ['weight_decay', 'hyper_lr/weight_decay', 'mu/weight_decay', 'hypergradient/weight_decay']
  """
  _marthe._check_factory(inner)
  if not isinstance(hyperparams, Mapping) or not hyperparams:
    raise ValueError(
        "hyperparams must be a non-empty mapping from inner keyword names to "
        f"initial values, e.g. {{'learning_rate': 0.1}}; got {hyperparams!r}."
    )
  names = _names(hyperparams)
  values, treedef = jax.tree.flatten(hyperparams)
  all_bounds = {**DEFAULT_BOUNDS, **(bounds or {})}
  intervals = [
      all_bounds.get(name, all_bounds.get(name.split("/")[0], (0.0, np.inf)))
      for name in names
  ]
  knob_free = hyper_lr_step is None
  kappas = (
      [None] * len(names) if knob_free
      else _per_leaf(hyper_lr_step, names, "hyper_lr_step")
  )
  steps = (
      [None] * len(names) if step_size is None
      else _per_leaf(step_size, names, "step_size")
  )
  betas = _per_leaf(hyper_lr, names, "hyper_lr")
  for name, value, (low, high), kappa, beta, step in zip(
      names, values, intervals, kappas, betas, steps
  ):
    _marthe._check_scalar(
        name, value, low, high,
        f"Pass an initial value of {name!r} inside its interval, or widen it "
        "with bounds=...",
    )
    _marthe._check_knobs(beta, kappa, mu, where=f"[{name!r}]")
    if knob_free:
      _marthe._check_positive_start(name, value, low)
    if step is not None:
      _marthe._check_scalar(
          f"step_size[{name!r}]", step, 0.0, np.inf,
          "Pass the knob-free step in log-units per step.",
      )
  k = len(values)
  make_config = _marthe._make_config(
      None if knob_free else kappas, mu, first_order,
      None if step_size is None else steps, k,
      low=[low for low, _ in intervals], high=[high for _, high in intervals],
      cut=[name.split("/")[0] == "learning_rate" for name in names],
  )

  def call_inner(theta):
    return inner(**jax.tree.unflatten(treedef, list(theta)))

  def init_fn(params: optax.Params) -> MultiMartheState:
    params = _marthe._array_leaves(params)
    dtype = _marthe._hyper_dtype(params)
    config = make_config(dtype)
    theta = jnp.stack([jnp.asarray(v, dtype) for v in values])
    inner_state = call_inner(theta).init(params)
    batched_zeros = lambda tree: jax.tree.map(
        lambda x: jnp.zeros((k,) + jnp.shape(x), jnp.result_type(x)), tree
    )
    hyper = _marthe._init_hyper(theta, jnp.asarray(betas, dtype), config)
    monitor = _marthe._init_monitor(dtype)
    return MultiMartheState(
        count=jnp.zeros([], jnp.int32),
        hyperparams=jax.tree.unflatten(treedef, list(theta)),
        tangent=Sealed.seal(
            _tangent.EMPTY_TANGENT
            if config.hessian_free
            else batched_zeros(_tangent.Tangent(params, inner_state))
        ),
        b=Sealed.seal(batched_zeros(params)),
        inner_state=Sealed.seal(inner_state),
        **_marthe._scalar_fields(hyper, monitor),
        **_marthe._zero_counters(),
    )

  def update_fn(
      updates: optax.Updates,
      state: MultiMartheState,
      params: Optional[optax.Params] = None,
      *,
      value_fn: Optional[Callable[[optax.Params], jax.Array]] = None,
      val_grads: Optional[optax.Updates] = None,
      value: Optional[jax.Array] = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, MultiMartheState]:
    config = make_config(state.hyper_lr.dtype)
    val_grads = _marthe._objective_grads(
        updates, params, value_fn, val_grads, _marthe._needs_hessian(config)
    )
    hyper, monitor = _marthe._read_scalars(
        state, jnp.stack(jax.tree.leaves(state.hyperparams)))
    new, monitor, finite, cut, step = _marthe._step(
        config,
        _marthe._inner_update(call_inner, extra_args),
        hyper,
        monitor,
        state.tangent.unseal(),
        state.b.unseal(),
        state.inner_state.unseal(),
        updates,
        params,
        value_fn,
        val_grads,
        value,
    )
    new_state = MultiMartheState(
        count=optax.safe_increment(state.count),
        hyperparams=jax.tree.unflatten(treedef, list(new.value)),
        tangent=Sealed.seal(step.tangent),
        b=Sealed.seal(step.b),
        inner_state=Sealed.seal(step.inner_state),
        **_marthe._scalar_fields(new, monitor),
        **_marthe._next_counters(state, finite, cut, step),
    )
    return step.updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def per_group(
    inner: Callable[..., optax.GradientTransformation],
    labels: Union[Any, Callable[[optax.Params], Any]],
) -> Callable[..., optax.GradientTransformation]:
  """An inner factory with one learning rate per parameter group.

  ``per_group(inner, labels)(learning_rate={'a': 0.1, 'b': 0.01}, **kw)`` is
  ``optax.multi_transform({g: inner(lr_g, **kw)}, labels)``: group ``g`` of
  the params (chosen by ``labels``, a tree of group names like the params or
  a function of the params, as in ``optax.multi_transform``) is updated by
  ``inner`` at its own learning rate. Use it with :func:`marthe_multi` and
  ``hyperparams={'learning_rate': {'a': 0.1, 'b': 0.01}}``.

  Args:
    inner: an Optax factory ``learning_rate -> GradientTransformation``.
    labels: the group of every parameter, as ``optax.multi_transform`` takes.

  Returns:
    A factory ``(learning_rate: Mapping[str, scalar], **kwargs) ->
    GradientTransformation``.
  """

  def factory(learning_rate: Mapping[str, Any], **kwargs: Any):
    return optax.multi_transform(
        {group: inner(lr, **kwargs) for group, lr in learning_rate.items()},
        labels,
    )

  return factory


COUNTERS = ("count", "nonfinite_count", "safeguard_count", "repaired_count")


def _pure(state: Any) -> Any:
  """``state`` with Flax NNX variables replaced by their values."""
  state = getattr(state, "opt_state", state)  # nnx.Optimizer, TrainState
  if "flax.nnx" in sys.modules:
    from flax import nnx  # pylint: disable=g-import-not-at-top
    state = nnx.as_pure(state) if isinstance(state, nnx.State) else state
    state = jax.tree.map(
        lambda v: v.get_value() if isinstance(v, nnx.Variable) else v, state,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
  return state


def _as_float(x: jax.Array) -> Union[float, int, jax.Array]:
  try:
    value = np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return x
  return int(value) if np.issubdtype(value.dtype, np.integer) else float(value)


def hyperparam_log(state: Any) -> dict[str, Any]:
  """The hyperparameters and their MARTHE statistics, by name, for logging.

  Finds the :class:`marthe_optax.MartheState` or :class:`MultiMartheState`
  inside ``state`` (also inside ``optax.chain`` or ``apply_if_finite``
  states, an ``nnx.Optimizer`` or a Flax ``TrainState``) and returns a flat
  dict with one naming scheme for every state:

  * the hyperparameters by name: ``'learning_rate'``, ``'weight_decay'``,
    ``'learning_rate/hidden'``, ...;
  * per hyperparameter ``NAME``: ``'hyper_lr/NAME'``, ``'mu/NAME'``,
    ``'hypergradient/NAME'``;
  * the counters ``'count'``, ``'nonfinite_count'``, ``'safeguard_count'``
    and ``'repaired_count'``.

  Outside ``jit`` the values are Python floats (ints for the counters); under
  ``jit`` they are the traced arrays, to return from the step.

  Args:
    state: an optimizer state holding one MARTHE state, or an object with an
      ``opt_state`` attribute (``nnx.Optimizer``, ``TrainState``).

  Returns:
    A dict ``name -> float | int`` (arrays under tracing).

  Raises:
    ValueError: if ``state`` holds no MARTHE state, or more than one.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> tx = mo.marthe(optax.sgd, learning_rate=0.1)
    >>> params = jnp.ones(2)
    >>> loss = lambda p: jnp.sum(p ** 2)
    >>> state = tx.init(params)
    >>> history = []
    >>> for _ in range(3):
    ...   value, grads = jax.value_and_grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params, value=value)
    ...   params = optax.apply_updates(params, updates)
    ...   history.append(mo.hyperparam_log(state))
    >>> history[-1]['count'], sorted(history[-1])[:3]
    (3, ['count', 'hyper_lr/learning_rate', 'hypergradient/learning_rate'])
  """
  state = _pure(state)
  kinds = (_marthe.MartheState, MultiMartheState)
  found = [
      x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kinds))
      if isinstance(x, kinds)
  ]
  if len(found) != 1:
    raise ValueError(
        f"hyperparam_log needs a state holding exactly one MARTHE state; found "
        f"{len(found)}."
    )
  (s,) = found
  if isinstance(s, _marthe.MartheState):
    names = ["learning_rate"]
    values = [s.learning_rate]
    vectors = {k: getattr(s, k)[None] for k in ("hyper_lr", "mu", "hypergradient")}
  else:
    names = _names(s.hyperparams)
    values = jax.tree.leaves(s.hyperparams)
    vectors = {k: getattr(s, k) for k in ("hyper_lr", "mu", "hypergradient")}
  log = dict(zip(names, values))
  for field, vector in vectors.items():
    log.update({f"{field}/{name}": vector[i] for i, name in enumerate(names)})
  log.update({name: getattr(s, name) for name in COUNTERS})
  return {name: _as_float(value) for name, value in log.items()}
