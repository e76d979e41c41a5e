# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The exact hypergradient of a whole learning-rate schedule, and LRS-OPT.

Section 2 of the paper (Donini et al.) treats the schedule
``eta = (eta_0, ..., eta_{T-1})`` as ``T`` hyperparameters of the objective
``f_T(eta) = E(w_T(eta))``, where ``w_T`` is the result of ``T`` steps of an
inner optimizer, step ``t`` taken with learning rate ``eta_t`` on minibatch
``t`` (problem 1). Its gradient is (eq. 2-4)::

  grad f_T(eta) = dw_T/deta^T grad E(w_T),    dw_0/deta = 0,
  dw_{t+1}/deta = A_t dw_t/deta + B_t,
  d f_T / d eta_t = [(prod_{s>t} A_s) B_t]^T grad E(w_T).

This module computes it exactly, for any differentiable Optax inner optimizer
(the same dynamics ``Phi_t`` as :func:`marthe_optax.marthe`: the full state
``(w_t, s_t)`` evolves by ``inner(eta_t).update``), in two ways:

* ``mode="reverse"``: reverse-mode differentiation of a ``jax.lax.scan`` over
  the ``T`` training steps. Time: about 3-4 training runs (one forward, one
  recomputation, one backward pass with a Hessian-vector product per step).
  Memory: with ``checkpoint=True`` (``jax.checkpoint`` around each step) the
  scan stores only its carry, the full optimizer state ``(w_t, s_t)``, for
  each of the ``T`` steps: ``T * (d + |s|)`` numbers (``2 T d`` for momentum,
  ``3 T d`` for Adam) and none of the step's intermediates (activations,
  gradients), which are recomputed during the backward pass. With
  ``segment_length=k`` the steps are also grouped into ``T / k`` segments, each
  recomputed as a whole in the backward pass: ``(T / k + k) (d + |s|)``
  numbers (``2 sqrt(T) (d + |s|)`` at ``k = sqrt(T)``) for one more forward
  run. This is the efficient way, used by :func:`lrs_opt`.
* ``mode="forward"``: the tangent system of eq. 3, ``T`` one-hot tangents of
  the schedule pushed forward together (``jax.vmap`` of ``jax.jvp`` through
  the scan): the ``d x T`` matrix ``dw_t/deta`` (and the inner state's tangent)
  is carried along the trajectory. Time: ``T`` Jacobian-vector products per
  step; memory: ``T (d + |s|)`` tangent numbers, none of the trajectory. It
  exists to check the reverse mode and to illustrate section 2.

LRS-OPT (section 5) is gradient descent on ``f_T`` over ``R_+^T`` with the
reverse-mode hypergradient and fresh random minibatches at every outer
iteration (footnote 7): :func:`lrs_opt`, projected gradient descent on
``eta`` as in the paper, or (the default) Adam on ``log(eta)``. Its whole
outer loop is one compiled ``jax.lax.while_loop`` that stops on a
relative-improvement tolerance, so that :func:`jax.vmap` runs several seeds
in one program. Each outer iteration costs one reverse-mode hypergradient;
the paper reports more than two hours for 5000 iterations at ``T = 512`` on
an MLP, against under a minute for one online MARTHE run.

References:
  Donini et al., `Scheduling the Learning Rate via Hypergradients: New
  Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  Franceschi et al., `Forward and Reverse Gradient-Based Hyperparameter
  Optimization <https://arxiv.org/abs/1703.01785>`_, 2017.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

InnerFactory = Callable[[jax.Array], optax.GradientTransformation]
Batch = Any
TrainLoss = Callable[[optax.Params, Batch], jax.Array]
Objective = Callable[[optax.Params], jax.Array]


class ScheduleHypergradient(NamedTuple):
  """The value and gradient of ``f_T(eta) = E(w_T(eta))``.

  Attributes:
    value: ``E(w_T)``, the objective after training with the schedule.
    grad: ``d E(w_T) / d eta``, shape ``[T]``: entry ``t`` is the
      hypergradient of the learning rate of step ``t`` (eq. 4).
  """

  value: jax.Array
  grad: jax.Array


class LrsOptResult(NamedTuple):
  """What :func:`lrs_opt` returns.

  Under :func:`jax.vmap` (several seeds in one program) every field gains the
  leading seed axis.

  Attributes:
    schedule: the final schedule, shape ``[T]``, after the last outer step.
    objectives: shape ``[num_steps]``; entry ``i`` is ``E(w_T)`` for the
      schedule before outer step ``i``, on that step's minibatches: the
      convergence curve. NaN after the run stopped (see ``steps_taken``).
    schedules: shape ``[len(schedule_steps), T]``; the schedule before each
      outer step listed in ``schedule_steps`` (NaN rows after the stop).
    schedule_steps: the outer steps ``0, k, 2k, ...`` (``k =
      record_every``) at which ``schedules`` were recorded.
    relative_improvement: shape ``[num_steps]``; entry ``i`` is the relative
      decrease of ``E`` per outer step over the last ``2 * window`` steps
      after step ``i`` (the mean of the previous ``window`` objectives minus
      the mean of the last ``window``, over the former, divided by
      ``window``); NaN before step ``2 * window - 1`` and after the stop.
      Its last finite entry is the convergence curve's final slope.
    steps_taken: the number of outer steps run (``num_steps`` unless ``tol``
      stopped the run earlier).
    converged: whether ``tol`` stopped the run (the relative improvement fell
      below it).
    nonfinite_count: outer steps whose objective or hypergradient was not
      finite; they leave the schedule and the outer state unchanged.
  """

  schedule: jax.Array
  objectives: jax.Array
  schedules: jax.Array
  schedule_steps: np.ndarray
  relative_improvement: Optional[jax.Array] = None
  steps_taken: Optional[jax.Array] = None
  converged: Optional[jax.Array] = None
  nonfinite_count: Optional[jax.Array] = None


def _check_inner(inner: Any) -> None:
  if not callable(inner) or isinstance(inner, optax.GradientTransformation):
    raise ValueError(
      "inner must be a factory learning_rate -> GradientTransformation, such "
      "as optax.sgd or functools.partial(optax.sgd, momentum=0.9); got "
      f"{inner!r}. Pass optax.sgd, not optax.sgd(0.1)."
    )


def _schedule_dtype(params: optax.Params) -> jnp.dtype:
  """The params' float dtype promoted to at least float32 (as marthe does)."""
  return jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)


def _check_schedule(schedule: Any, batches: Batch) -> int:
  """Returns ``T``; raises a ValueError on a malformed schedule or batches."""
  if jnp.ndim(schedule) != 1 or jnp.shape(schedule)[0] < 1:
    raise ValueError(
      "schedule must be a non-empty 1-D array [T] of learning rates "
      f"eta_0..eta_(T-1); got shape {jnp.shape(schedule)}."
    )
  num_steps = jnp.shape(schedule)[0]
  leaves = jax.tree_util.tree_leaves_with_path(batches)
  if not leaves:
    raise ValueError("batches must be a pytree with at least one array leaf.")
  for path, leaf in leaves:
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num_steps:
      raise ValueError(
        f"Every leaf of batches needs a leading axis of length T = "
        f"{num_steps} (step t uses batch t); batches"
        f"{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}."
      )
  return num_steps


def train_with_schedule(
  schedule: jax.Array,
  params: optax.Params,
  inner: InnerFactory,
  train_loss: TrainLoss,
  batches: Batch,
  *,
  checkpoint: bool = True,
  segment_length: Optional[int] = None,
) -> tuple[optax.Params, optax.OptState]:
  """``T`` steps of ``inner`` with learning rate ``schedule[t]`` at step ``t``.

  The differentiable training loop behind :func:`schedule_hypergradient`:
  the inner state is initialised by ``inner(schedule[0]).init(params)``, held
  constant with respect to the schedule (as :func:`marthe_optax.marthe` does:
  ``Z_0 = 0``), and step ``t`` is
  ``(u, s) = inner(schedule[t]).update(grad train_loss(w, batch_t), s, w)``,
  ``w <- optax.apply_updates(w, u)``, the factory re-invoked with the traced
  learning rate as in :func:`marthe_optax.marthe`.

  Args:
    schedule: the learning rates ``eta_0..eta_{T-1}``, shape ``[T]``.
    params: the initial weights ``w_0``.
    inner: a factory ``learning_rate -> optax.GradientTransformation`` such as
      ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)`` or
      ``optax.adam``.
    train_loss: ``train_loss(params, batch) -> scalar``.
    batches: a pytree whose leaves have leading axis ``T``; step ``t`` uses
      ``jax.tree.map(lambda x: x[t], batches)``.
    checkpoint: wrap each step in ``jax.checkpoint``, so that reverse-mode
      differentiation stores only the carried ``(w_t, s_t)`` of each step and
      recomputes the rest. No effect on the value or on forward mode.
    segment_length: if given, a divisor ``k`` of ``T``: the scan runs over
      ``T / k`` checkpointed segments of ``k`` steps, and reverse mode stores
      ``(T / k + k)`` carries instead of ``T`` (for one more forward run).

  Returns:
    ``(w_T, s_T)``: the final params and inner state.

  Raises:
    ValueError: on a malformed schedule, batches without leading axis ``T``,
      a ``segment_length`` that does not divide ``T``, or an ``inner`` that is
      not a factory.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from marthe_optax import exact
    >>> loss = lambda w, x: jnp.mean((x @ w - 1.0) ** 2)
    >>> xs = jnp.ones((4, 8, 3))  # T = 4 minibatches of 8 points
    >>> w, _ = exact.train_with_schedule(
    ...     jnp.full(4, 0.1), jnp.zeros(3), optax.sgd, loss, xs)
    >>> w.shape
    (3,)
  """
  _check_inner(inner)
  num_steps = _check_schedule(schedule, batches)
  if segment_length is not None and (segment_length < 1 or num_steps % segment_length):
    raise ValueError(
      f"segment_length must be a positive divisor of T = {num_steps}; got {segment_length}."
    )
  schedule = jnp.asarray(schedule, _schedule_dtype(params))
  inner_state = inner(jax.lax.stop_gradient(schedule[0])).init(params)

  def step(carry, xs):
    w, s = carry
    eta, batch = xs
    grads = jax.grad(train_loss)(w, batch)
    updates, new_s = inner(eta).update(grads, s, w)
    w = optax.apply_updates(w, updates)
    return (w, optax.tree.cast_like(new_s, s)), None

  if checkpoint:
    # Inside a scan, CSE cannot merge the recomputation into the forward pass.
    step = jax.checkpoint(step, prevent_cse=False)
  carry = (params, inner_state)
  xs = (schedule, batches)
  if segment_length is None or segment_length == num_steps:
    carry, _ = jax.lax.scan(step, carry, xs)
  else:
    segments = jax.tree.map(
      lambda x: x.reshape((num_steps // segment_length, segment_length) + x.shape[1:]),
      xs,
    )
    run_segment = jax.checkpoint(lambda c, seg: jax.lax.scan(step, c, seg), prevent_cse=False)
    carry, _ = jax.lax.scan(run_segment, carry, segments)
  return carry


def schedule_objective(
  schedule: jax.Array,
  params: optax.Params,
  inner: InnerFactory,
  train_loss: TrainLoss,
  batches: Batch,
  objective: Objective,
  *,
  checkpoint: bool = True,
  segment_length: Optional[int] = None,
) -> jax.Array:
  """``f_T(eta) = E(w_T(eta))`` (problem 1 of the paper), differentiable.

  Args:
    schedule: the learning rates ``eta_0..eta_{T-1}``, shape ``[T]``.
    params: the initial weights ``w_0``.
    inner: the inner optimizer factory, as in :func:`train_with_schedule`.
    train_loss: ``train_loss(params, batch) -> scalar``.
    batches: a pytree whose leaves have leading axis ``T``.
    objective: ``E(params) -> scalar``, e.g. the validation loss.
    checkpoint: see :func:`train_with_schedule`.
    segment_length: see :func:`train_with_schedule`.

  Returns:
    The scalar ``E(w_T)``.
  """
  final_params, _ = train_with_schedule(
    schedule,
    params,
    inner,
    train_loss,
    batches,
    checkpoint=checkpoint,
    segment_length=segment_length,
  )
  return objective(final_params)


def schedule_hypergradient(
  schedule: jax.Array,
  params: optax.Params,
  inner: InnerFactory,
  train_loss: TrainLoss,
  batches: Batch,
  objective: Objective,
  *,
  mode: str = "reverse",
  checkpoint: bool = True,
  segment_length: Optional[int] = None,
) -> ScheduleHypergradient:
  r"""The exact hypergradient ``d E(w_T) / d eta`` of a schedule (eq. 2-4).

  Trains ``T`` steps from ``params`` with ``inner(schedule[t])`` on
  minibatch ``t`` (see :func:`train_with_schedule`) and differentiates the
  objective at the final weights with respect to every learning rate.

  With a constant schedule ``eta_0 * ones(T)``, ``sum(grad)`` is what
  ``marthe_optax.rtho`` (``mu = 1``) reports as its hypergradient at step
  ``T`` (with ``val_grads = grad E``), and
  ``sum(mu ** (T - 1 - arange(T)) * grad)`` is MARTHE's with a fixed ``mu``.

  Args:
    schedule: the learning rates ``eta_0..eta_{T-1}``, shape ``[T]``.
    params: the initial weights ``w_0`` (a pytree).
    inner: a factory ``learning_rate -> optax.GradientTransformation``
      (``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``,
      ``optax.adam``, ...).
    train_loss: ``train_loss(params, batch) -> scalar``, the loss ``L_t``.
    batches: a pytree whose leaves have leading axis ``T``; step ``t`` uses
      batch ``t``.
    objective: ``E(params) -> scalar``, e.g. the validation loss.
    mode: ``"reverse"`` (default): reverse mode through the scan, time of a
      few training runs, memory of ``T`` optimizer states (see the module
      docstring); ``"forward"``: the forward tangent system of eq. 3, ``T``
      tangents carried along (time ``T`` times larger), for checking.
    checkpoint: rematerialise each step in the backward pass (reverse mode).
    segment_length: group the steps into checkpointed segments of this length
      (a divisor of ``T``) to store ``T / k + k`` states instead of ``T``.

  Returns:
    A :class:`ScheduleHypergradient` ``(value, grad)``: ``E(w_T)`` and its
    gradient with respect to the schedule, shape ``[T]``. The schedule is
    cast to the params' float dtype promoted to at least float32 (as
    :func:`marthe_optax.marthe` does for its learning rate), and so is
    ``grad``.

  Raises:
    ValueError: on an unknown ``mode`` and the errors of
      :func:`train_with_schedule`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from marthe_optax import exact
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> xs = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 3))
    >>> batches = (xs, xs.sum(-1))  # T = 5 minibatches
    >>> val = lambda w: loss(w, (xs[0], xs[0].sum(-1)))
    >>> value, grad = exact.schedule_hypergradient(
    ...     jnp.full(5, 0.05), jnp.zeros(3), optax.sgd, loss, batches, val)
    >>> grad.shape, bool(grad[0] < 0)  # a larger first step would help
    ((5,), True)
  """
  num_steps = _check_schedule(schedule, batches)
  schedule = jnp.asarray(schedule, _schedule_dtype(params))
  f = functools.partial(
    schedule_objective,
    params=params,
    inner=inner,
    train_loss=train_loss,
    batches=batches,
    objective=objective,
    checkpoint=checkpoint,
    segment_length=segment_length,
  )
  if mode == "reverse":
    value, grad = jax.value_and_grad(f)(schedule)
  elif mode == "forward":
    # One one-hot tangent per learning rate: vmap carries the d x T tangent
    # dw_t/deta of eq. 3 (and the inner state's) along the trajectory. The
    # primal does not depend on the tangent, so it is computed once.
    basis = jnp.eye(num_steps, dtype=schedule.dtype)
    value, grad = jax.vmap(lambda v: jax.jvp(f, (schedule,), (v,)), out_axes=(None, 0))(basis)
  else:
    raise ValueError(f'mode must be "reverse" or "forward"; got {mode!r}.')
  return ScheduleHypergradient(value=value, grad=grad)


def random_minibatches(data: Any, batch_size: int, num_steps: int) -> jax.tree_util.Partial:
  """A ``sample_batches(key)`` for :func:`lrs_opt`: random epochs of ``data``.

  Each call draws a fresh minibatch progression: the examples are visited in a
  random order, epoch after epoch (each epoch a new permutation), and cut into
  ``num_steps`` minibatches of ``batch_size``. The result is a
  ``jax.tree_util.Partial`` that holds ``data`` as pytree leaves, so that
  ``jax.jit`` receives the data as arguments rather than embedding them in the
  compiled program as constants.

  Args:
    data: a pytree of arrays with a common leading axis of ``N`` examples,
      e.g. ``(x_train, y_train)``.
    batch_size: examples per minibatch, at most ``N``.
    num_steps: ``T``, the number of minibatches.

  Returns:
    ``sample_batches(key) -> batches``, whose leaves have shape
    ``[num_steps, batch_size, ...]``.

  Raises:
    ValueError: on an empty ``data``, leaves of different lengths, or a
      ``batch_size`` outside ``[1, N]``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from marthe_optax import exact
    >>> sample = exact.random_minibatches(
    ...     (jnp.zeros((10, 3)), jnp.arange(10)), batch_size=4, num_steps=6)
    >>> x, y = sample(jax.random.PRNGKey(0))
    >>> x.shape, y.shape
    ((6, 4, 3), (6, 4))
  """
  lengths = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(data)}
  if len(lengths) != 1 or None in lengths:
    raise ValueError(
      "data must be a non-empty pytree of arrays sharing their leading "
      f"(example) axis; got leading sizes {lengths}."
    )
  (num_examples,) = lengths
  if not 1 <= batch_size <= num_examples or num_steps < 1:
    raise ValueError(
      f"Need 1 <= batch_size <= {num_examples} examples and num_steps >= 1; "
      f"got batch_size={batch_size}, num_steps={num_steps}."
    )
  sampler = functools.partial(_sample_epochs, batch_size=batch_size, num_steps=num_steps)
  return jax.tree_util.Partial(sampler, data)


def _sample_epochs(data: Any, key: jax.Array, *, batch_size: int, num_steps: int) -> Any:
  num_examples = jax.tree.leaves(data)[0].shape[0]
  num_epochs = -(-num_steps * batch_size // num_examples)
  keys = jax.random.split(key, num_epochs)
  order = jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys)
  index = order.reshape(-1)[: num_steps * batch_size]
  index = index.reshape(num_steps, batch_size)
  return jax.tree.map(lambda x: jnp.asarray(x)[index], data)


def _as_pytree(fn: Callable[..., Any]) -> jax.tree_util.Partial:
  """``fn`` as a pytree: arrays bound in a ``Partial`` become jit arguments."""
  if isinstance(fn, jax.tree_util.Partial):
    return fn
  return jax.tree_util.Partial(fn)


DEFAULT_LOG_ADAM_LR = 0.05
"""Step size of :func:`lrs_opt`'s default outer optimizer, Adam on
``log(eta)``: about 5 % of each learning rate per outer step at most."""


def lrs_opt(
  schedule: jax.Array,
  params: optax.Params,
  inner: InnerFactory,
  train_loss: TrainLoss,
  sample_batches: Callable[[jax.Array], Batch],
  objective: Objective,
  *,
  num_steps: int,
  outer: Union[None, float, optax.GradientTransformation] = None,
  key: jax.Array,
  space: Optional[str] = None,
  tol: Optional[float] = None,
  window: int = 10,
  draws: int = 1,
  record_every: int = 1,
  checkpoint: bool = True,
  segment_length: Optional[int] = None,
  callback: Optional[Callable[[int, jax.Array, jax.Array], None]] = None,
) -> LrsOptResult:
  """LRS-OPT: gradient descent on the whole schedule (section 5).

  Approximately solves problem 1, ``min E(w_T(eta))`` over ``eta in R_+^T``:
  at each outer step ``i`` it draws fresh minibatches
  ``sample_batches(fold_in(key, i))`` (the initial weights stay fixed: footnote
  7), computes the exact hypergradient in reverse mode
  (:func:`schedule_hypergradient`) and takes a step of the outer optimizer,
  in one of two spaces:

  * ``space="linear"``: on ``eta`` itself, followed by the projection onto
    ``eta >= 0``. With a float ``outer`` this is the paper's projected
    gradient descent.
  * ``space="log"``: on ``u = log(eta)``, with gradient
    ``eta * dE/deta``; ``eta = exp(u)`` stays positive without a projection,
    and a step changes every rate by a factor, whatever its scale. With Adam
    (the default) each rate moves by at most about ``lr`` in log units per
    step, which conditions the problem far better than a common step size
    for rates that differ by orders of magnitude.

  The whole outer loop is one compiled program (a ``jax.lax.while_loop``):
  it can be :func:`jax.vmap`-ed over seeds (``params``, ``key`` and the
  initial ``schedule`` batched), so that several seeds share one compilation
  and run together; each seed stops on its own criterion (a stopped seed's
  values stay frozen while the others finish). Outer steps whose objective or
  hypergradient is not finite (training diverged at too large a rate) leave
  the schedule and the outer state unchanged and are counted.

  Stopping: with ``tol``, the run stops after outer step ``i`` (at the
  earliest ``2 * window - 1``) once the relative improvement of ``E`` per
  outer step, averaged over windows to tame the minibatch noise of the
  objective,
  ``(mean E[i-2w+1 .. i-w] - mean E[i-w+1 .. i]) / (w * mean E[i-2w+1 .. i-w])``,
  falls below ``tol``. The curve of ``E`` and of this slope are returned
  (``objectives``, ``relative_improvement``).

  Functions closing over large arrays (data, validation sets) embed them in
  the compiled program as constants; ``sample_batches``, ``train_loss`` and
  ``objective`` may instead be ``jax.tree_util.Partial`` objects holding the
  arrays, which are then passed as arguments (:func:`random_minibatches`
  returns one).

  Args:
    schedule: the initial schedule ``[T]``: a constant (the paper uses
      ``0.01 * ones(T)``) or a warm start, e.g. an online method's schedule;
      non-negative (positive for ``space="log"``).
    params: the initial weights ``w_0``, the same at every outer step.
    inner: the inner optimizer factory, as in :func:`schedule_hypergradient`.
    train_loss: ``train_loss(params, batch) -> scalar``.
    sample_batches: ``sample_batches(key) -> batches``, a pytree whose leaves
      have leading axis ``T``; e.g. :func:`random_minibatches`.
    objective: ``E(params) -> scalar``, e.g. the validation loss.
    num_steps: the maximum number of outer steps (the paper uses 5000).
    outer: the outer optimizer. ``None`` (default):
      ``optax.adam(DEFAULT_LOG_ADAM_LR)`` on ``log(eta)``. A float (or an
      Optax schedule) is the step size of plain gradient descent,
      ``optax.sgd(outer)``, on ``eta`` with the projection (the paper's); any
      ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-3)``) is used
      as given.
    key: a ``jax.random`` key for the minibatches.
    space: ``"linear"`` or ``"log"`` (see above); ``None``: ``"log"`` for the
      default ``outer`` and ``"linear"`` for a given one.
    tol: stop once the windowed relative improvement per outer step is below
      ``tol`` (e.g. ``1e-4``); ``None``: run all ``num_steps``.
    window: the window of the stopping criterion, in outer steps.
    draws: minibatch progressions per outer step (``jax.vmap``-ed): the
      objective and hypergradient of a step are their means over
      ``sample_batches`` of ``draws`` keys split from the step's key, which
      lowers the outer optimizer's noise for ``draws`` times the cost.
    record_every: keep the schedule of every ``record_every``-th outer step in
      the history (the objective is kept at every step).
    checkpoint: see :func:`train_with_schedule`.
    segment_length: see :func:`train_with_schedule`.
    callback: called from the compiled loop (through
      :func:`jax.debug.callback`) after every outer step as
      ``callback(i, objective, schedule)`` with the objective before the step
      and the updated schedule, e.g. to log or to drive a progress bar. Under
      :func:`jax.vmap` it is called once per seed and step, for running seeds
      only.

  Returns:
    An :class:`LrsOptResult` with the final schedule, the convergence curve
    and the schedules along the way.

  Raises:
    ValueError: on ``num_steps``, ``record_every``, ``window`` or ``draws``
      below 1, an unknown ``space``, a negative initial schedule (a non-positive one
      in log space), or the errors of :func:`train_with_schedule`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from marthe_optax import exact
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5])
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> sample = exact.random_minibatches((x, y), batch_size=8, num_steps=10)
    >>> run = lambda w0, key: exact.lrs_opt(
    ...     jnp.full(10, 0.01), w0, optax.sgd, loss, sample,
    ...     lambda w: loss(w, (x, y)), num_steps=200, key=key, tol=1e-3)
    >>> result = run(jnp.zeros(3), jax.random.PRNGKey(1))
    >>> bool(result.objectives[result.steps_taken - 1] < result.objectives[0])
    True

    Three seeds (initial weights and minibatch keys) in one compiled program:

    >>> w0 = jax.random.normal(jax.random.PRNGKey(2), (3, 3))
    >>> batched = jax.vmap(run)(w0, jax.random.split(jax.random.PRNGKey(3), 3))
    >>> batched.schedule.shape, batched.steps_taken.shape
    ((3, 10), (3,))

    The paper's projected gradient descent instead: ``outer=1e-3`` (a
    float). A progress bar (``tqdm`` is optional; this module does not import
    it)::

      bar = tqdm.tqdm(total=num_steps)
      def callback(i, value, schedule):
        bar.update(1)
        bar.set_postfix(objective=float(value))
  """
  if num_steps < 1 or record_every < 1 or window < 1 or draws < 1:
    raise ValueError(
      "num_steps, record_every, window and draws must be positive; got "
      f"num_steps={num_steps}, record_every={record_every}, "
      f"window={window}, draws={draws}."
    )
  _check_inner(inner)
  if space is None:
    space = "log" if outer is None else "linear"
  if space not in ("linear", "log"):
    raise ValueError(f'space must be "linear" or "log"; got {space!r}.')
  if outer is None:
    outer_tx = optax.adam(DEFAULT_LOG_ADAM_LR)
  elif isinstance(outer, optax.GradientTransformation):
    outer_tx = outer
  else:
    outer_tx = optax.sgd(outer)
  schedule = jnp.asarray(schedule, _schedule_dtype(params))
  if jnp.ndim(schedule) != 1:
    raise ValueError(f"schedule must be a 1-D array [T]; got shape {jnp.shape(schedule)}.")
  if not isinstance(schedule, jax.core.Tracer):
    low = float(jnp.min(schedule))
    if low < 0 or (space == "log" and low <= 0):
      raise ValueError(
        "The initial schedule must be non-negative (LRS-OPT works in "
        "R_+^T), and positive in log space; its minimum is "
        f"{low}."
      )
  program = functools.partial(
    _lrs_opt_program,
    inner=inner,
    outer_tx=outer_tx,
    space=space,
    num_steps=num_steps,
    tol=tol,
    window=window,
    record_every=record_every,
    draws=draws,
    checkpoint=checkpoint,
    segment_length=segment_length,
    callback=callback,
  )
  fns = (_as_pytree(sample_batches), _as_pytree(train_loss), _as_pytree(objective))
  out = jax.jit(program)(schedule, params, fns, key)
  return out._replace(schedule_steps=np.arange(0, num_steps, record_every))


def _lrs_opt_program(
  schedule,
  params,
  fns,
  key,
  *,
  inner,
  outer_tx,
  space,
  num_steps,
  tol,
  window,
  record_every,
  draws,
  checkpoint,
  segment_length,
  callback,
) -> LrsOptResult:
  """The outer loop of :func:`lrs_opt` as one ``lax.while_loop``."""
  sample, loss, obj = fns
  log_space = space == "log"
  to_eta = jnp.exp if log_space else (lambda z: z)
  z0 = jnp.log(schedule) if log_space else schedule
  dtype = schedule.dtype
  records = -(-num_steps // record_every)
  nan = jnp.asarray(jnp.nan, dtype)

  def cond(c):
    return (c["i"] < num_steps) & ~c["converged"]

  def body(c):
    i, z, outer_state = c["i"], c["z"], c["outer_state"]
    eta = to_eta(z)
    row = jnp.where(i % record_every == 0, eta, c["history"][i // record_every])
    history = c["history"].at[i // record_every].set(row)
    hypergradient = lambda k: schedule_hypergradient(
      eta,
      params,
      inner,
      loss,
      sample(k),
      obj,
      mode="reverse",
      checkpoint=checkpoint,
      segment_length=segment_length,
    )
    if draws == 1:
      value, grad = hypergradient(jax.random.fold_in(key, i))
    else:
      keys = jax.random.split(jax.random.fold_in(key, i), draws)
      value, grad = jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(hypergradient)(keys))
    if log_space:
      grad = grad * eta  # dE/dlog(eta)
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
    grad = jnp.where(finite, grad, 0.0)
    updates, new_state = outer_tx.update(grad, outer_state, z)
    new_z = optax.apply_updates(z, updates)
    if not log_space:
      new_z = optax.projections.projection_non_negative(new_z)
    keep = lambda new, old: jnp.where(finite, new, old)
    z = keep(new_z, z)
    outer_state = jax.tree.map(keep, new_state, outer_state)
    objectives = c["objectives"].at[i].set(value)
    # Windowed relative improvement per outer step after i + 1 steps.
    n = i + 1
    if 2 * window <= num_steps:
      prev = jnp.mean(jax.lax.dynamic_slice(objectives, (n - 2 * window,), (window,)))
      last = jnp.mean(jax.lax.dynamic_slice(objectives, (n - window,), (window,)))
      rel = jnp.where(n >= 2 * window, (prev - last) / (window * jnp.abs(prev)), nan)
    else:  # too few steps for two windows: no criterion
      rel = nan
    relative = c["relative"].at[i].set(rel)
    converged = jnp.asarray(False) if tol is None else ((n >= 2 * window) & (rel < tol))
    if callback is not None:
      jax.debug.callback(
        lambda i, v, s, active: callback(i, v, s) if active else None,
        i,
        value,
        to_eta(z),
        cond(c),
      )
    return dict(
      i=n,
      z=z,
      outer_state=outer_state,
      history=history,
      objectives=objectives,
      relative=relative,
      converged=converged,
      nonfinite=c["nonfinite"] + (~finite).astype(jnp.int32),
    )

  carry = dict(
    i=jnp.asarray(0, jnp.int32),
    z=z0,
    outer_state=outer_tx.init(z0),
    history=jnp.full((records, schedule.shape[0]), nan),
    objectives=jnp.full(num_steps, nan),
    relative=jnp.full(num_steps, nan),
    converged=jnp.asarray(False),
    nonfinite=jnp.asarray(0, jnp.int32),
  )
  c = jax.lax.while_loop(cond, body, carry)
  return LrsOptResult(
    schedule=to_eta(c["z"]),
    objectives=c["objectives"],
    schedules=c["history"],
    schedule_steps=jnp.arange(0, num_steps, record_every),
    relative_improvement=c["relative"],
    steps_taken=c["i"],
    converged=c["converged"],
    nonfinite_count=c["nonfinite"],
  )
