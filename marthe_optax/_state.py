# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The state: one core layout for ``K`` hyperparameters and its two public views.

The core (:mod:`marthe_optax._core`) reads and writes a :class:`Core`, in
which every per-hyperparameter value has a leading axis ``K``. Users see one
of two named tuples, each a :class:`View` of the core:

* :class:`MartheState`, the ``K = 1`` view of :func:`marthe_optax.marthe`,
  :func:`marthe_optax.hd` and :func:`marthe_optax.rtho`: scalars, and trees
  shaped like the params;
* :class:`MultiMartheState`, the view of :func:`marthe_optax.marthe_multi`:
  vectors ``[K]``, trees with a leading axis ``K``, and the hyperparameters
  as the tree the user gave.

Trees that may reuse MARTHE's field names (the inner optimizer's state,
trees shaped like the params) are held in :class:`Sealed` nodes, so that
``optax.tree.get(state, name)`` finds MARTHE's fields alone. See
``docs/algorithm.md`` (The state) for every field.
"""

import sys
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from marthe_optax import _tangent


class Sealed(tuple):
  """A pytree node that holds one pytree and hides its names from ``optax.tree``.

  The inner optimizer's state (Adam's ``mu``, ``count``), and trees shaped
  like the params, may use the same names as MARTHE's own fields. A sealed
  node shows each library what it needs:

  * to JAX it is a node with one child, the tree itself (under the key
    ``tree``): ``jit``, ``vmap``, sharding and checkpointing see ordinary
    arrays, and ``optax.tree.map_params`` finds the params-shaped trees inside
    (the placeholder it passes to ``init`` is kept in place);
  * to ``optax.tree.get`` and ``optax.tree.set``, which descend into named
    tuples by their fields, it is a named tuple with the one field
    ``leaves``, the flat tuple of the arrays: the names inside are not
    searched, so ``optax.tree.get(state, 'mu')`` is MARTHE's ``mu`` even
    with an Adam inner optimizer.

  :meth:`unseal` returns the tree.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> sealed = mo.Sealed.seal(optax.adam(0.1).init(jnp.zeros(2)))
    >>> optax.tree.get(sealed, 'mu') is None
    True
    >>> sealed.unseal()[0].mu
    Array([0., 0.], dtype=float32)
  """

  __slots__ = ()
  _fields = ("leaves",)  # what optax.tree's named-tuple traversal sees

  def __new__(cls, tree: Any) -> "Sealed":
    return super().__new__(cls, (tree,))

  def __getnewargs__(self):
    return (self[0],)

  @classmethod
  def seal(cls, tree: Any) -> "Sealed":
    """Seals ``tree``."""
    return cls(tree)

  def unseal(self) -> Any:
    """The tree held."""
    return self[0]

  @property
  def leaves(self) -> tuple[Any, ...]:
    """The arrays of the tree held, flat."""
    return tuple(jax.tree.leaves(self[0]))

  @property
  def treedef(self) -> Any:
    """The structure of the tree held."""
    return jax.tree.structure(self[0])

  def __repr__(self) -> str:
    return f"Sealed({self[0]!r})"


jax.tree_util.register_pytree_with_keys(
  Sealed,
  lambda s: (((jax.tree_util.GetAttrKey("tree"), s[0]),), None),
  lambda _, children: Sealed(children[0]),
  flatten_func=lambda s: ((s[0],), None),
)


class Hyper(NamedTuple):
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
  stale_tangent: jax.Array  # Z_{t+1} is discarded (read as 0) at the next step (bool)


class Monitor(NamedTuple):
  """The divergence safeguard's view of the training loss (scalars)."""

  loss_ema: jax.Array  # smoothed training loss
  loss_min: jax.Array  # its running minimum since the last cut


class Start(NamedTuple):
  """The factory's arguments the hyperparameters last started from, ``[K]``."""

  value: jax.Array
  hyper_lr: jax.Array


class Counters(NamedTuple):
  """The event counters (int32 scalars)."""

  nonfinite_count: jax.Array
  safeguard_count: jax.Array
  repaired_count: jax.Array


class Core(NamedTuple):
  """The core's state for ``K`` hyperparameters, as the step reads and writes it."""

  count: jax.Array
  hyper: Hyper
  monitor: Monitor
  start: Start
  tangent: _tangent.Tangent  # Z_t, leaves with a leading axis K (empty for HD)
  b: Any  # b_{t-1}, leaves with a leading axis K
  inner_state: Any
  counters: Counters


class MartheState(NamedTuple):
  """State of the transformations returned by :func:`marthe`, :func:`hd` and :func:`rtho`.

  After the update at step ``t`` (``count == t + 1``) the scalar fields hold
  the values used at step ``t``. Read them with ``optax.tree.get(state, name)``
  or, for logging, with :func:`marthe_optax.hyperparam_log`. It is the
  ``K = 1`` view of the state of :func:`marthe_optax.marthe_multi`
  (``docs/algorithm.md``, The state).

  Attributes:
    count: number of updates applied so far (int32).
    learning_rate: ``eta_t``, the learning rate of the last step (with a
      ``schedule``, its scale: the step used ``eta_t * schedule(t)``).
    hyper_lr: ``beta_t``, the hyper-learning rate (the eq. 5 rule; constant
      in the knob-free mode, which has none).
    mu: ``mu_t``, the discount of the tangent system, in [0, 1].
    c: ``c_t``, appendix A's multiplicative counter (effective horizon).
    hypergradient: ``Delta eta_t = <Z_t, grad E(w_t)>`` (0 when ``Z_t`` is
      stale).
    nonfinite_count: number of steps whose hypergradient, or whose update of
      ``beta`` or ``eta``, was not finite (the hyperparameters were then left
      unchanged and the tangent marked stale).
    tangent: ``Z_{t+1}``, a sealed :class:`Tangent` (params and inner-state
      parts). Empty for HD (``mu`` fixed at 0), where ``Z_{t+1}.w = b_t``.
    b: ``b_t = d w_{t+1} / d eta_t``, sealed, shaped like the params.
    inner_state: the inner optimizer's state, sealed.
    agreement: the smoothed agreement ``q_bar_t`` (smoothed horizon).
    hyper_m: the knob-free step's first moment of ``d E / d log(eta)``.
    hyper_v: its second moment.
    hyper_steps: steps since these moments were last reset.
    stale_tangent: whether ``tangent`` is stale (a boolean): this step's
      hypergradient was not finite, so the next step reads ``Z_{t+1}`` as 0
      and the tangent restarts from ``B_{t+1}``.
    loss_ema: the safeguard's smoothed training loss (from ``value``).
    loss_min: its running minimum since the last cut (the largest finite
      number before the first ``value``).
    safeguard_count: number of steps at which the knob-free safeguard cut
      the learning rate back (a blow-up of the training loss, or a non-finite
      hypergradient).
    repaired_count: number of steps at which some tangent entries were NaN
      at a finite primal (``0 * inf``, e.g. Adam at a zero second moment)
      and were set to 0.
    start_learning_rate: the ``learning_rate`` argument ``eta`` last started
      from: when the transformation is rebuilt with another value (as
      ``optax.inject_hyperparams`` does), ``eta`` restarts from it.
    start_hyper_lr: the same for the ``hyper_lr`` argument and ``beta``.
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
  stale_tangent: jax.Array
  loss_ema: jax.Array
  loss_min: jax.Array
  safeguard_count: jax.Array
  repaired_count: jax.Array
  start_learning_rate: jax.Array
  start_hyper_lr: jax.Array


class MultiMartheState(NamedTuple):
  """State of :func:`marthe_multi`.

  The per-hyperparameter vectors (``hyper_lr``, ``mu``, ``c``,
  ``hypergradient``, ...) are indexed like ``jax.tree.leaves(hyperparams)``;
  :func:`hyperparam_log` names them. The fields are those of
  :class:`MartheState`, with a leading axis ``K`` (``docs/algorithm.md``,
  The state).

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
      marked stale).
    tangent: ``Z^k_{t+1}``, sealed, every leaf with a leading axis ``K``.
    b: ``b^k_t``, sealed, every leaf with a leading axis ``K``.
    inner_state: the inner optimizer's state, sealed.
    agreement: the smoothed agreements ``q_bar_k``, ``[K]``.
    hyper_m: the knob-free step's first moments, ``[K]``.
    hyper_v: its second moments, ``[K]``.
    hyper_steps: steps since the moments were last reset, ``[K]``.
    stale_tangent: whether each tangent ``Z^k_{t+1}`` is stale (read as 0 at
      the next step, after a non-finite hypergradient), ``[K]`` booleans.
    loss_ema: the safeguard's smoothed training loss.
    loss_min: its running minimum since the last cut.
    safeguard_count: number of steps at which the safeguard cut the learning
      rates back.
    repaired_count: number of steps at which some NaN tangent entries at a
      finite primal were set to 0.
    start_hyperparams: the initial values given to :func:`marthe_multi` that
      the hyperparameters last started from, ``[K]``: a hyperparameter whose
      value given to a rebuilt transformation differs restarts from it.
    start_hyper_lr: the same for ``hyper_lr`` and ``beta_k``, ``[K]``.
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
  stale_tangent: jax.Array
  loss_ema: jax.Array
  loss_min: jax.Array
  safeguard_count: jax.Array
  repaired_count: jax.Array
  start_hyperparams: jax.Array
  start_hyper_lr: jax.Array


class View(NamedTuple):
  """How a public state type stores the :class:`Core`."""

  pack: Callable[[Core], Any]
  unpack: Callable[[Any], Core]


def _take(cls: Any, state: Any, **given: Any) -> Any:
  """``cls`` filled from the fields of ``state`` of the same names (``given`` first)."""
  return cls(**{f: given[f] if f in given else getattr(state, f) for f in cls._fields})


def _shared_fields(core: Core, hyper: Hyper, tangent: Any, b: Any) -> dict:
  """The fields both views store alike (``hyper`` and the trees as given)."""
  scalars = hyper._asdict()
  del scalars["value"]
  return dict(
    count=core.count,
    tangent=Sealed(tangent),
    b=Sealed(b),
    inner_state=Sealed(core.inner_state),
    **scalars,
    **core.monitor._asdict(),
    **core.counters._asdict(),
  )


def _first(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[0], tree)


def _batch(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[None], tree)


def _pack_single(core: Core) -> MartheState:
  hyper, start = _first(core.hyper), _first(core.start)
  return MartheState(
    learning_rate=hyper.value,
    start_learning_rate=start.value,
    start_hyper_lr=start.hyper_lr,
    **_shared_fields(core, hyper, _first(core.tangent), _first(core.b)),
  )


def _unpack_single(state: MartheState) -> Core:
  return Core(
    count=state.count,
    hyper=_batch(_take(Hyper, state, value=state.learning_rate)),
    monitor=_take(Monitor, state),
    start=_batch(Start(state.start_learning_rate, state.start_hyper_lr)),
    tangent=_batch(state.tangent.unseal()),
    b=_batch(state.b.unseal()),
    inner_state=state.inner_state.unseal(),
    counters=_take(Counters, state),
  )


SINGLE = View(_pack_single, _unpack_single)


def multi_view(treedef: Any) -> View:
  """The view of :class:`MultiMartheState`, with hyperparameters shaped by ``treedef``."""

  def pack(core: Core) -> MultiMartheState:
    return MultiMartheState(
      hyperparams=jax.tree.unflatten(treedef, list(core.hyper.value)),
      start_hyperparams=core.start.value,
      start_hyper_lr=core.start.hyper_lr,
      **_shared_fields(core, core.hyper, core.tangent, core.b),
    )

  def unpack(state: MultiMartheState) -> Core:
    return Core(
      count=state.count,
      hyper=_take(Hyper, state, value=jnp.stack(jax.tree.leaves(state.hyperparams))),
      monitor=_take(Monitor, state),
      start=Start(state.start_hyperparams, state.start_hyper_lr),
      tangent=state.tangent.unseal(),
      b=state.b.unseal(),
      inner_state=state.inner_state.unseal(),
      counters=_take(Counters, state),
    )

  return View(pack, unpack)


def names(hyperparams: Any) -> list[str]:
  """'learning_rate', 'learning_rate/hidden', ... in leaf order."""
  paths = jax.tree_util.tree_flatten_with_path(hyperparams)[0]
  return [
    "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path) for path, _ in paths
  ]


COUNTERS = ("count", "nonfinite_count", "safeguard_count", "repaired_count")


def _pure(state: Any) -> Any:
  """``state`` with Flax NNX variables replaced by their values."""
  state = getattr(state, "opt_state", state)  # nnx.Optimizer, TrainState
  if "flax.nnx" in sys.modules:
    from flax import nnx  # pylint: disable=g-import-not-at-top

    state = nnx.as_pure(state) if isinstance(state, nnx.State) else state
    state = jax.tree.map(
      lambda v: v.get_value() if isinstance(v, nnx.Variable) else v,
      state,
      is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
  return state


def _as_float(x: jax.Array) -> Union[float, int, jax.Array]:
  try:
    value = np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
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
  kinds = (MartheState, MultiMartheState)
  found = [
    x
    for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, kinds))
    if isinstance(x, kinds)
  ]
  if len(found) != 1:
    raise ValueError(
      f"hyperparam_log needs a state holding exactly one MARTHE state; found {len(found)}."
    )
  (s,) = found
  if isinstance(s, MartheState):
    keys = ["learning_rate"]
    values = [s.learning_rate]
    vectors = {k: getattr(s, k)[None] for k in ("hyper_lr", "mu", "hypergradient")}
  else:
    keys = names(s.hyperparams)
    values = jax.tree.leaves(s.hyperparams)
    vectors = {k: getattr(s, k) for k in ("hyper_lr", "mu", "hypergradient")}
  log = dict(zip(keys, values))
  for field, vector in vectors.items():
    log.update({f"{field}/{name}": vector[i] for i, name in enumerate(keys)})
  log.update({name: getattr(s, name) for name in COUNTERS})
  return {name: _as_float(value) for name, value in log.items()}
