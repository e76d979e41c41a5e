# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The small helpers Flax users need to drive MARTHE, HD and RTHO.

MARTHE's update takes two extra keyword arguments besides the gradient: the
training-loss closure ``value_fn`` (``L_t`` as a function of the params, for
the Hessian-vector product of the tangent system) and ``val_grads``
(``grad E(w_t)``). This module builds both for Flax models and passes them on.

Flax NNX. ``nnx.Optimizer(model, mo.marthe(...), wrt=nnx.Param)`` works as is:
``optimizer.update(model, grads, value_fn=..., val_grads=...)`` forwards its
keyword arguments to ``tx.update`` (after stripping ``nnx.Variable`` wrappers)
and passes the params as a pure ``nnx.State`` of arrays. :func:`nnx_value_and_grad`
returns the loss, the gradient (a state of ``nnx.Param``, as ``nnx.grad``
gives) and a ``value_fn`` that rebuilds the model from such a pure state with
``nnx.merge``; :func:`nnx_train_step` is a whole MARTHE step.

Flax Linen. ``TrainState.apply_gradients`` forwards no extra argument to
``tx.update``: use :func:`apply_gradients` (any ``TrainState``, including
subclasses with ``batch_stats``) or :class:`MartheTrainState`, and
:func:`value_and_grad` for the closure.

Semantics of the closure (both APIs). The paper's ``L_t`` is a function of the
weights only; everything else that a forward pass reads or writes is fixed for
the whole step:

* BatchNorm: the closure runs the model in training mode on the current batch,
  so the batch statistics are recomputed from (and differentiated through) the
  weights it is given: ``value_fn`` is a pure function of the weights. The
  running averages that it would write are discarded. They are updated exactly
  once per step, from the primal forward pass that produced the gradient.
* Dropout and any other randomness: the closure reuses the random state of the
  step (for NNX, the ``nnx.Rngs`` counters as they were before the primal
  pass; for Linen, the same ``rngs`` key), so it draws the same masks as the
  gradient did. The model's random streams advance once per step.
* So ``value_fn(w_t)`` is exactly the loss whose gradient is passed as
  ``grads``, and ``jax.grad(value_fn)(w_t) == grads``.

The objective ``E`` (e.g. the unregularised validation loss) is the user's
choice; the examples evaluate it in inference mode (BatchNorm with its running
averages, held fixed; no dropout) and never change the model's state.
"""

from typing import Any, Callable, Iterable, NamedTuple, Optional

from flax import nnx
from flax.training import train_state as train_state_lib
import jax
import optax

import marthe_optax as _marthe_optax


class ValueAndGrad(NamedTuple):
  """A loss, its gradient and the closure that recomputes the loss.

  Attributes:
    value: the loss at the current params.
    grads: its gradient with respect to the params.
    value_fn: ``params -> loss``, the same loss as a function of the params
      only (for MARTHE's ``value_fn``), with everything else fixed as it was
      for ``value``.
    aux: the auxiliary output of the loss function (``None`` without
      ``has_aux``).
  """

  value: jax.Array
  grads: Any
  value_fn: Callable[[Any], jax.Array]
  aux: Any


class StepOutput(NamedTuple):
  """What :func:`nnx_train_step` returns.

  Attributes:
    loss: the training loss ``L_t(w_t)`` of the step.
    objective: ``E(w_t)``, or ``None`` when ``E`` is the training loss.
    aux: the training loss function's auxiliary output, or ``None``.
  """

  loss: jax.Array
  objective: Optional[jax.Array]
  aux: Any


def _split_loss(loss_fn, has_aux):
  """``loss_fn`` normalised to return ``(loss, aux)``."""
  if has_aux:
    return loss_fn
  return lambda *a, **k: (loss_fn(*a, **k), None)


def nnx_value_fn(
  loss_fn: Callable[..., Any],
  model: nnx.Module,
  *args: Any,
  wrt: Any = nnx.Param,
  has_aux: bool = False,
  **kwargs: Any,
) -> Callable[[nnx.State], jax.Array]:
  """The loss of ``model`` as a function of its ``wrt`` variables only.

  Takes a snapshot of everything else in the model now (BatchNorm running
  averages, ``nnx.Rngs`` counters, ...). The closure merges a copy of the model
  from the snapshot and the params it is given (a pure ``nnx.State`` of arrays,
  as ``nnx.Optimizer.update`` passes them, or a state of ``nnx.Param``) and
  evaluates ``loss_fn(model_copy, *args, **kwargs)``. It never changes
  ``model``. Call it *before* the forward pass that computes the gradient, so
  that it sees the same random state; :func:`nnx_value_and_grad` does both in
  the right order.

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs) -> loss`` (or ``(loss, aux)``
      with ``has_aux``).
    model: the NNX model.
    *args: the positional arguments of ``loss_fn`` after the model (the
      batch).
    wrt: the filter of the variables that are the params, as given to
      ``nnx.Optimizer``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; ``aux`` is dropped.
    **kwargs: keyword arguments of ``loss_fn``.

  Returns:
    ``params -> loss``, a pure function of the params.
  """
  graphdef, _, rest = nnx.split(model, wrt, ...)
  rest = nnx.as_pure(rest)  # split shares the model's Variables: snapshot them.
  fn = _split_loss(loss_fn, has_aux)

  def value_fn(params: nnx.State) -> jax.Array:
    copy = nnx.merge(graphdef, params, rest, copy=True)
    return fn(copy, *args, **kwargs)[0]

  return value_fn


def nnx_value_and_grad(
  loss_fn: Callable[..., Any],
  model: nnx.Module,
  *args: Any,
  wrt: Any = nnx.Param,
  has_aux: bool = False,
  update_state: bool = True,
  **kwargs: Any,
) -> ValueAndGrad:
  """The loss of an NNX model, its gradient and its ``value_fn`` closure.

  Differentiates ``loss_fn(model, *args, **kwargs)`` with respect to the
  ``wrt`` variables, as ``nnx.value_and_grad`` does, and also returns the
  closure :func:`nnx_value_fn` for the same loss, built from the model's state
  before the forward pass. With ``update_state`` the model's other variables
  (BatchNorm running averages, ``nnx.Rngs`` counters) are then updated once,
  from the primal forward pass; without it the model is left unchanged (use
  this for the objective ``E``).

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs) -> loss`` (or ``(loss, aux)``
      with ``has_aux``).
    model: the NNX model.
    *args: the positional arguments of ``loss_fn`` after the model.
    wrt: the filter of the params, as given to ``nnx.Optimizer``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    update_state: whether to write the forward pass's changes to non-param
      variables back into ``model``.
    **kwargs: keyword arguments of ``loss_fn``.

  Returns:
    A :class:`ValueAndGrad`; ``grads`` is a state of ``nnx.Param`` (the
    structure that ``nnx.Optimizer.update`` expects, like ``nnx.grad``'s) and
    ``value_fn(nnx.state(model, wrt))`` equals ``value``.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import marthe_optax as mo
    >>> import marthe_optax.flax as mof
    >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(
    ...     model, mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3), wrt=nnx.Param)
    >>> loss = lambda m, x: jnp.mean((m(x) - 1.0) ** 2)
    >>> x_train, x_val = jnp.ones((8, 3)), jnp.full((4, 3), 0.5)
    >>> train = mof.nnx_value_and_grad(loss, model, x_train)
    >>> val = mof.nnx_value_and_grad(loss, model, x_val, update_state=False)
    >>> _ = optimizer.update(
    ...     model, train.grads, value_fn=train.value_fn, val_grads=val.grads)
  """
  graphdef, params, rest = nnx.split(model, wrt, ...)
  rest = nnx.as_pure(rest)
  fn = _split_loss(loss_fn, has_aux)

  def forward(p):
    copy = nnx.merge(graphdef, p, rest, copy=True)
    loss, aux = fn(copy, *args, **kwargs)
    _, _, new_rest = nnx.split(copy, wrt, ...)
    return loss, (aux, nnx.as_pure(new_rest))

  def value_fn(p: nnx.State) -> jax.Array:
    return forward(p)[0]

  # Differentiate with respect to the state of nnx.Param (not a pure state):
  # nnx.Optimizer.update filters the gradient by `wrt`, which needs the types.
  (loss, (aux, new_rest)), grads = jax.value_and_grad(forward, has_aux=True)(params)
  if update_state:
    nnx.update(model, new_rest)
  return ValueAndGrad(value=loss, grads=grads, value_fn=value_fn, aux=aux)


def nnx_train_step(
  optimizer: nnx.Optimizer,
  model: nnx.Module,
  loss_fn: Callable[..., Any],
  args: Iterable[Any],
  *,
  objective_fn: Optional[Callable[..., jax.Array]] = None,
  objective_args: Iterable[Any] = (),
  has_aux: bool = False,
) -> StepOutput:
  """One MARTHE (or HD, RTHO, or any Optax) step of an NNX model, in place.

  Computes the gradient of the objective ``E`` when ``objective_fn`` is given
  (first, from the model's state at the start of the step, without changing
  it), then ``L_t``, its gradient and closure with :func:`nnx_value_and_grad`
  (updating BatchNorm statistics and random counters once), and calls ``optimizer.update(model, grads, value_fn=...,
  val_grads=...)``. Any Optax transformation accepts (and ignores) the two
  extra arguments, so the same step drives the fixed-schedule baselines.
  Wrap it in ``nnx.jit``.

  Args:
    optimizer: an ``nnx.Optimizer`` of ``model``.
    model: the NNX model.
    loss_fn: the training loss ``loss_fn(model, *args) -> loss`` (or
      ``(loss, aux)`` with ``has_aux``).
    args: the arguments of ``loss_fn`` after the model (the batch).
    objective_fn: ``objective_fn(model, *objective_args) -> E``, e.g. the
      unregularised loss on a validation batch in inference mode; ``None``
      makes ``E`` the training loss.
    objective_args: the arguments of ``objective_fn`` after the model.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    A :class:`StepOutput` with ``L_t(w_t)``, ``E(w_t)`` and ``aux``.

  Examples:
    >>> import functools, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> import marthe_optax as mo
    >>> import marthe_optax.flax as mof
    >>> model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(
    ...     model, mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3), wrt=nnx.Param)
    >>> loss = lambda m, x: jnp.mean((m(x) - 1.0) ** 2)
    >>> @nnx.jit
    ... def step(model, optimizer, x, x_val):
    ...   return mof.nnx_train_step(
    ...       optimizer, model, loss, (x,),
    ...       objective_fn=loss, objective_args=(x_val,))
    >>> out = step(model, optimizer, jnp.ones((8, 3)), jnp.full((4, 3), 0.5))
    >>> mof.hyperparams(optimizer)['count']
    1
  """
  wrt = optimizer.wrt
  extra = {}
  objective = None
  if objective_fn is not None:
    # E(w_t) first, with the model's state as it is at the start of the step.
    val = nnx_value_and_grad(objective_fn, model, *objective_args, wrt=wrt, update_state=False)
    extra["val_grads"] = val.grads
    objective = val.value
  train = nnx_value_and_grad(loss_fn, model, *args, wrt=wrt, has_aux=has_aux)
  optimizer.update(model, train.grads, value_fn=train.value_fn, value=train.value, **extra)
  return StepOutput(loss=train.value, objective=objective, aux=train.aux)


def value_and_grad(
  loss_fn: Callable[..., Any],
  params: Any,
  *args: Any,
  has_aux: bool = False,
  **kwargs: Any,
) -> ValueAndGrad:
  """The loss, its gradient and its ``value_fn`` closure, for Linen or plain JAX.

  ``loss_fn(params, *args, **kwargs)`` must take everything but the params
  (the batch, the BatchNorm ``batch_stats``, the dropout key) as arguments, so
  the closure ``value_fn(p) = loss_fn(p, *args, **kwargs)`` holds them fixed,
  as the step did. Linen convention: apply the model with
  ``mutable=['batch_stats']`` in training mode and return the new statistics
  as ``aux`` (``has_aux=True``); ``value_fn`` drops them.

  Args:
    loss_fn: ``loss_fn(params, *args, **kwargs) -> loss`` (or ``(loss, aux)``
      with ``has_aux``).
    params: the params.
    *args: the other positional arguments of ``loss_fn``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    **kwargs: keyword arguments of ``loss_fn``.

  Returns:
    A :class:`ValueAndGrad`.
  """
  fn = _split_loss(loss_fn, has_aux)

  def value_fn(p: Any) -> jax.Array:
    return fn(p, *args, **kwargs)[0]

  (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(params, *args, **kwargs)
  return ValueAndGrad(value=loss, grads=grads, value_fn=value_fn, aux=aux)


def apply_gradients(
  state: train_state_lib.TrainState,
  *,
  grads: Any,
  tx_args: Optional[dict[str, Any]] = None,
  **changes: Any,
) -> train_state_lib.TrainState:
  """``TrainState.apply_gradients`` that forwards extra arguments to ``tx.update``.

  Works with any Linen ``TrainState`` (or subclass, e.g. one with a
  ``batch_stats`` field); Flax's own method calls ``tx.update(grads,
  opt_state, params)`` with no extra argument, which MARTHE needs.

  Args:
    state: the train state.
    grads: the training gradient, shaped like ``state.params``.
    tx_args: keyword arguments for ``state.tx.update``, e.g.
      ``{'value_fn': ..., 'val_grads': ...}``.
    **changes: other fields to ``replace`` (e.g. ``batch_stats=...``), as in
      ``TrainState.apply_gradients``.

  Returns:
    The new state, with ``step`` incremented.

  Raises:
    ValueError: for ``OVERWRITE_WITH_GRADIENT`` params (FP8 training), which
      this helper does not support.
  """
  if isinstance(grads, dict) and train_state_lib.OVERWRITE_WITH_GRADIENT in grads:
    raise ValueError("apply_gradients does not support OVERWRITE_WITH_GRADIENT params.")
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **(tx_args or {}))
  return state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    **changes,
  )


class MartheTrainState(train_state_lib.TrainState):
  """A Linen ``TrainState`` whose ``apply_gradients`` forwards MARTHE's arguments.

  Subclass it to add fields (``batch_stats``), as with ``TrainState``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import flax.linen as nn
    >>> import marthe_optax as mo
    >>> import marthe_optax.flax as mof
    >>> model = nn.Dense(1)
    >>> x = jnp.ones((8, 3))
    >>> state = mof.MartheTrainState.create(
    ...     apply_fn=model.apply,
    ...     params=model.init(jax.random.key(0), x)['params'],
    ...     tx=mo.marthe(optax.sgd, 0.1, hyper_lr_step=1e-3))
    >>> loss = lambda p, x: jnp.mean((state.apply_fn({'params': p}, x) - 1) ** 2)
    >>> out = mof.value_and_grad(loss, state.params, x)
    >>> state = state.apply_gradients(grads=out.grads, value_fn=out.value_fn)
    >>> int(state.step)
    1
  """

  def apply_gradients(
    self,
    *,
    grads: Any,
    value_fn: Optional[Callable[[Any], jax.Array]] = None,
    val_grads: Optional[Any] = None,
    **changes: Any,
  ) -> "MartheTrainState":
    """Applies ``grads``, passing ``value_fn`` and ``val_grads`` to ``tx.update``.

    Args:
      grads: the training gradient.
      value_fn: the training-loss closure (see :func:`value_and_grad`).
      val_grads: the gradient of the objective ``E``.
      **changes: other fields to ``replace``.

    Returns:
      The new state.
    """
    tx_args = {}
    if value_fn is not None:
      tx_args["value_fn"] = value_fn
    if val_grads is not None:
      tx_args["val_grads"] = val_grads
    return apply_gradients(self, grads=grads, tx_args=tx_args, **changes)


def hyperparams(optimizer_or_state: Any) -> dict[str, Any]:
  """MARTHE's scalars as Python floats, for logging: :func:`marthe_optax.hyperparam_log`.

  Kept as an alias under its old name; ``mo.hyperparam_log`` takes an
  ``nnx.Optimizer``, a Linen ``TrainState`` or any optimizer state, and names
  the values the same way for every state (``'learning_rate'``,
  ``'hypergradient/learning_rate'``, ``'safeguard_count'``, ...).

  Args:
    optimizer_or_state: an ``nnx.Optimizer``, a ``TrainState`` or a state.

  Returns:
    A dict ``name -> float | int``.
  """
  return _marthe_optax.hyperparam_log(optimizer_or_state)
