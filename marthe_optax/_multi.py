# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE for several hyperparameters at once.

The paper's conclusion: "MARTHE is a general technique for finding online
hyperparameter schedules ... it scales linearly with the number of
hyperparameters". :func:`marthe_multi` tunes any float keywords of the inner
factory together (``learning_rate``, ``weight_decay``, ``momentum``, ``b1``,
...) and per-group learning rates (:func:`per_group`). Each hyperparameter
``theta_k`` has its own tangent system ``Z^k_{t+1} = mu_k A_t Z^k_t + B^k_t``,
its own ``mu_k`` (appendix A), ``beta_k`` and projection interval; the ``K``
tangents are one batched computation (``jax.vmap`` over tangents). It is the
same core (:mod:`marthe_optax._core`) as :func:`marthe_optax.marthe`, which is
the case ``K = 1``; ``docs/algorithm.md`` describes the step and the state.

Extra cost over the inner optimizer, for ``K`` hyperparameters: ``K`` times
the memory of :func:`marthe_optax.marthe` (``Z^k.w``, ``b^k`` and the
inner-state tangent per hyperparameter) and ``K`` Hessian-vector products per
step, batched (the training gradient and forward pass are shared).
"""

from typing import Any, Callable, Mapping, Optional, Union

import jax
import numpy as np
import optax

from marthe_optax import _checks
from marthe_optax import _core
from marthe_optax import _state
from marthe_optax import _step

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
  arguments. As in :func:`marthe_optax.marthe`, the state remembers the
  initial values and ``hyper_lr`` it started from: a transformation rebuilt
  with other values restarts each changed hyperparameter from its new value
  (``optax.inject_hyperparams`` with ``static_args=('inner',)`` injects
  ``hyper_lr``, ``hyper_lr_step`` and ``step_size`` when they are single
  numbers; the ``hyperparams`` mapping stays static). For ``K`` hyperparameters
  the state's per-hyperparameter trees (``b``, the tangent) are params trees
  with a leading axis ``K``: ``optax.tree.map_params`` hands those leaves to
  its function with that axis (``docs/algorithm.md``, The state).

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
  _checks.check_factory(inner)
  if not isinstance(hyperparams, Mapping) or not hyperparams:
    raise ValueError(
      "hyperparams must be a non-empty mapping from inner keyword names to "
      f"initial values, e.g. {{'learning_rate': 0.1}}; got {hyperparams!r}."
    )
  names = _state.names(hyperparams)
  values, treedef = jax.tree.flatten(hyperparams)
  all_bounds = {**DEFAULT_BOUNDS, **(bounds or {})}
  intervals = [
    all_bounds.get(name, all_bounds.get(name.split("/")[0], (0.0, np.inf))) for name in names
  ]
  knob_free = hyper_lr_step is None
  kappas = [None] * len(names) if knob_free else _per_leaf(hyper_lr_step, names, "hyper_lr_step")
  steps = [None] * len(names) if step_size is None else _per_leaf(step_size, names, "step_size")
  betas = _per_leaf(hyper_lr, names, "hyper_lr")
  for name, value, (low, high), kappa, beta, step in zip(
    names, values, intervals, kappas, betas, steps
  ):
    _checks.check_scalar(
      name,
      value,
      low,
      high,
      f"Pass an initial value of {name!r} inside its interval, or widen it with bounds=...",
    )
    _checks.check_knobs(beta, kappa, mu, where=f"[{name!r}]")
    if knob_free:
      _checks.check_positive_start(name, value, low)
    if step is not None:
      _checks.check_step_size(f"step_size[{name!r}]", step)
  make_config = _step.make_config(
    None if knob_free else kappas,
    mu,
    first_order,
    None if step_size is None else steps,
    len(values),
    low=[low for low, _ in intervals],
    high=[high for _, high in intervals],
    cut=[name.split("/")[0] == "learning_rate" for name in names],
  )

  def inner_at(theta: jax.Array, count: jax.Array) -> optax.GradientTransformation:
    del count  # no schedule
    return inner(**jax.tree.unflatten(treedef, list(theta)))

  return _core.transformation(inner_at, values, betas, make_config, _state.multi_view(treedef))


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
