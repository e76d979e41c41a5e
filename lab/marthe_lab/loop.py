# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The one training step and the one training loop of the experiments.

* :func:`make_step` builds a step from a transformation, a loss and the
  extra arguments its ``update`` needs (a :class:`~marthe_lab.methods.Method`'s
  :attr:`~marthe_lab.methods.Method.needs`): the training value and
  gradient, the validation gradient, the ``value_fn`` closure, ``tx.update``
  with exactly those arguments and ``optax.apply_updates``. Plain-JAX params
  and Flax NNX params (a pure ``nnx.State``, the loss merging a graphdef)
  are the same to it; a model state that the loss updates (NNX's non-Param
  variables: dropout streams, batch statistics) is carried with
  ``stateful=True``.
* :func:`scan` runs a step over a horizon with ``jax.lax.scan`` and records
  what the experiment asks for. It is a pure function of its arrays, so
  ``jax.vmap`` runs it over seeds and (traced) grid values in one program.
* :func:`run_in_chunks` calls a vmapped function over a long leading axis in
  equal chunks (one compilation), to bound memory.
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_lab import methods as methods_lib


class StepOut(NamedTuple):
  """What a step reports besides the new params and state.

  Attributes:
    value: ``L_t(w_t)``, the training loss on the step's minibatch.
    objective: ``E(w_t)`` on the step's validation batch when the step
      computed it (``'val_grads'`` or ``'val_value'`` needed), else NaN.
    aux: the loss's auxiliary output (``has_aux=True``), else ``None``.
  """

  value: jax.Array
  objective: jax.Array
  aux: Any = None


Step = Callable[..., tuple]


def make_step(
  tx: optax.GradientTransformation,
  loss: Callable[..., Any],
  needs: Sequence[str] = (),
  *,
  objective: Optional[Callable[..., jax.Array]] = None,
  has_aux: bool = False,
  stateful: bool = False,
) -> Step:
  """The training step of ``tx`` on ``loss``, fed exactly ``needs``.

  Args:
    tx: the transformation (wrapped with ``optax.with_extra_args_support``
      here, so a plain Optax optimizer works too).
    loss: ``loss(params, batch)`` (``loss(params, model_state, batch)`` when
      ``stateful``). It returns the scalar ``L_t``; with ``has_aux`` a pair
      ``(L_t, aux)``; when ``stateful`` a pair ``(L_t, new_model_state)``, or
      ``(L_t, (new_model_state, aux))`` with ``has_aux`` too.
    needs: the extra arguments of ``tx.update`` (see
      :data:`marthe_lab.methods.EXTRA_ARGS`), e.g.
      ``methods.get('rtho').needs``.
    objective: ``E(params, val_batch)`` (``E(params, model_state,
      val_batch)`` when ``stateful``), a scalar; default: ``loss`` without its
      auxiliary output.
    has_aux: whether ``loss`` returns an auxiliary output (recorded in
      :attr:`StepOut.aux`).
    stateful: whether ``loss`` reads and updates a model state.

  Returns:
    ``step(params, opt_state, batch, val_batch=None, model_state=None,
    **extra_args) -> (params, opt_state, model_state, StepOut)``. Without a
    ``val_batch`` the validation arguments are dropped (``E = L``); the
    ``extra_args`` are passed on to ``tx.update`` as they are.

  Raises:
    ValueError: on a name of ``needs`` outside
      :data:`~marthe_lab.methods.EXTRA_ARGS`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> loss = lambda w, batch: jnp.sum((w - batch) ** 2)
    >>> tx = mo.rtho(optax.sgd, 0.25, hyper_lr=1e-3)
    >>> step = make_step(tx, loss, ("value_fn", "val_grads"))
    >>> w = jnp.zeros(2)
    >>> w, s, _, out = step(w, tx.init(w), jnp.ones(2), 2 * jnp.ones(2))
    >>> float(out.value), float(out.objective), w.tolist()
    (2.0, 8.0, [0.5, 0.5])
  """
  unknown = set(needs) - set(methods_lib.EXTRA_ARGS)
  if unknown:
    raise ValueError(
      f"Unknown extra arguments {sorted(unknown)}; expected names of {methods_lib.EXTRA_ARGS}."
    )
  tx = optax.with_extra_args_support(tx)

  def split(out):
    """``(value, model_state, aux)`` of a loss output."""
    if not (has_aux or stateful):
      return out, None, None
    value, rest = out
    if stateful and has_aux:
      return value, rest[0], rest[1]
    return (value, rest, None) if stateful else (value, None, rest)

  def bind(fn, model_state):
    if stateful:
      return lambda p, b: fn(p, model_state, b)
    return fn

  def step(params, opt_state, batch, val_batch=None, model_state=None, **extra_args):
    train_loss = bind(loss, model_state)
    scalar_loss = lambda p, b: split(train_loss(p, b))[0]
    val_loss = scalar_loss if objective is None else bind(objective, model_state)
    if has_aux or stateful:
      (value, rest), grads = jax.value_and_grad(train_loss, has_aux=True)(params, batch)
      _, new_model_state, aux = split((value, rest))
    else:
      value, grads = jax.value_and_grad(train_loss)(params, batch)
      new_model_state = aux = None
    e = jnp.asarray(jnp.nan, jnp.float32)
    extra = dict(extra_args)
    if "value_fn" in needs:
      extra["value_fn"] = lambda p: scalar_loss(p, batch)
    if val_batch is not None and "val_grads" in needs:
      e, extra["val_grads"] = jax.value_and_grad(val_loss)(params, val_batch)
    if "value" in needs:
      extra["value"] = value
    if val_batch is not None and "val_value" in needs:
      e = extra["value"] = val_loss(params, val_batch)
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    params = optax.apply_updates(params, updates)
    return params, opt_state, new_model_state, StepOut(value, e, aux)

  return step


class Run(NamedTuple):
  """The end of a :func:`scan`.

  Attributes:
    params: the final params.
    opt_state: the final optimizer state.
    model_state: the final model state (``None`` unless stateful).
    records: the per-step records, stacked (leading axis: the steps).
  """

  params: Any
  opt_state: Any
  model_state: Any
  records: Any


def default_record(x, params, opt_state, out: StepOut) -> jax.Array:
  """Records ``L_t(w_t)`` only."""
  del x, params, opt_state
  return out.value


def scan(
  step: Step,
  params: Any,
  opt_state: Any,
  xs: Any = None,
  *,
  batches: Callable[[Any], tuple] = lambda x: (x, None),
  record: Callable[[Any, Any, Any, StepOut], Any] = default_record,
  model_state: Any = None,
  length: Optional[int] = None,
) -> Run:
  """``step`` over the steps, as one ``jax.lax.scan``.

  Args:
    step: a :func:`make_step` step.
    params: ``w_0``.
    opt_state: the initial optimizer state (``tx.init(w_0)``).
    xs: what is scanned over (leading axis: the steps), e.g. ``(t, batch
      indices, validation indices)``; ``None`` with ``length``.
    batches: ``batches(x) -> (batch, val_batch)`` for the step's slice ``x``
      of ``xs`` (``val_batch`` ``None`` for ``E = L``). Default: ``x`` is the
      training batch, no validation batch.
    record: ``record(x, params, opt_state, out)`` -> the pytree recorded at
      each step; ``params`` are ``w_t`` (those the step started from, of
      ``out.value``), ``opt_state`` the state after the step.
    model_state: the initial model state of a stateful step.
    length: the number of steps when ``xs`` is ``None``.

  Returns:
    A :class:`Run`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.sgd(0.25)
    >>> step = make_step(tx, lambda w, b: jnp.sum((w - b) ** 2))
    >>> run = scan(step, jnp.zeros(1), tx.init(jnp.zeros(1)), jnp.ones((3, 1)))
    >>> run.params.tolist(), run.records.tolist()
    ([0.875], [1.0, 0.25, 0.0625])
  """

  def body(carry, x):
    params, opt_state, model_state = carry
    batch, val_batch = batches(x)
    new_params, opt_state, model_state, out = step(params, opt_state, batch, val_batch, model_state)
    return (new_params, opt_state, model_state), record(x, params, opt_state, out)

  (params, opt_state, model_state), records = jax.lax.scan(
    body, (params, opt_state, model_state), xs, length=length
  )
  return Run(params, opt_state, model_state, records)


def run_in_chunks(
  fn: Callable[..., Any],
  leading: Sequence,
  chunk: Optional[int] = None,
  callback: Optional[Callable[[int], None]] = None,
) -> Any:
  """``fn(*leading)`` over the leading axis, ``chunk`` rows per call.

  The rows are split into ``ceil(n / chunk)`` calls of equal size (at most
  ``chunk``); the last call is padded by repeating the last row (so one
  compilation serves every call) and the padding is dropped from the result.

  Args:
    fn: a vmapped function of arrays with a common leading axis.
    leading: its arguments (pytrees of arrays with that leading axis).
    chunk: rows per call; ``None`` for all at once.
    callback: called with the number of rows finished after each call.

  Returns:
    The concatenated results, as NumPy arrays.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> run_in_chunks(jax.vmap(lambda a: 2 * a), (jnp.arange(5),), chunk=2).tolist()
    [0, 2, 4, 6, 8]
  """
  n = len(jax.tree.leaves(leading)[0])
  calls = 1 if chunk is None else -(-n // chunk)
  chunk = -(-n // calls)
  outs = []
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    take = np.minimum(np.arange(start, start + chunk), n - 1)
    part = jax.tree.map(lambda a: jnp.asarray(a)[take], leading)
    out = jax.tree.map(np.asarray, fn(*part))
    outs.append(jax.tree.map(lambda a: a[: stop - start], out))
    if callback is not None:
      callback(stop - start)
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)
