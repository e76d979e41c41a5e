# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The one registry of learning-rate methods that the experiments compare.

A :class:`Method` says everything a training loop needs to know about a
method, so that no experiment writes its own ``if method == ...`` ladder:

* how to build its Optax transformation from ``(inner, learning_rate,
  value)``: ``inner`` an Optax factory ``learning_rate -> transformation``
  (one of :data:`INNERS`), ``learning_rate`` a float, an array or an Optax
  schedule (the experiment builds its schedules with Optax's own
  ``optax.cosine_decay_schedule``, ``optax.sgdr_schedule``, ...), ``value``
  the method's grid value (``beta``, ``kappa``, a :class:`Hyper`, ...; may be
  traced, so one compiled program serves a whole vmapped grid);
* which extra arguments ``update`` receives (:attr:`Method.needs`, read by
  :func:`marthe_lab.loop.make_step`);
* how to read the learning rate it used from its state, for logging;
* at which params it is evaluated (schedule-free's averaged sequence).

The section-3 and section-5 grids name their rows with :class:`Variant`
(HD is ``mu = 0`` with a ``beta`` grid, RTHO ``mu = 1``, ...): every fixed-
``mu`` variant is the one method ``'eq5'`` with a traced :class:`Hyper`, so
they share one compiled program.

Examples:
  >>> import optax
  >>> m = get("hd")
  >>> m.needs
  ('val_grads',)
  >>> tx = m.make(INNERS["sgd"], 0.01, 1e-3)
  >>> isinstance(tx, optax.GradientTransformationExtraArgs)
  True
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo

InnerFactory = Callable[..., optax.GradientTransformation]

INNERS = {
  "sgd": optax.sgd,
  "momentum": functools.partial(optax.sgd, momentum=0.9),
  "adam": optax.adam,
  "adamw": optax.adamw,
}
"""The inner optimizers, ``learning_rate -> GradientTransformation``.

``'adam'`` is plain ``optax.adam`` (``eps_root = 0``): MARTHE sets the NaN
tangent entries of weights whose gradients are all exactly zero to their
limit 0 and counts them in ``repaired_count`` (see ``docs/algorithm.md``), so
no ``eps_root`` is needed for correctness. A run that compares devices or
summation orders to round-off may still pass
``functools.partial(optax.adam, eps_root=1e-8)`` (the sharded benchmark
does)."""

EXTRA_ARGS = ("value_fn", "val_grads", "value", "val_value")
"""What :attr:`Method.needs` may name: ``'value_fn'`` (the training-loss
closure ``params -> L_t(params)`` on the step's minibatch), ``'val_grads'``
(the gradient of ``E``, the validation minibatch loss), ``'value'`` (the
training minibatch loss ``L_t(w_t)``) and ``'val_value'`` (``value=`` the
validation minibatch loss ``E(w_t)``, which ``reduce_on_plateau`` reads)."""


class Hyper(NamedTuple):
  """The eq. 5 rule's knobs (scalars, or arrays under ``jax.vmap``).

  Attributes:
    hyper_lr: ``beta`` (fixed), or ``beta_0`` when ``hyper_lr_step > 0``.
    hyper_lr_step: ``kappa``, the step size of ``beta`` (0: ``beta`` fixed).
    mu: the fixed discount (ignored when ``mu`` is adapted).
  """

  hyper_lr: Any
  hyper_lr_step: Any
  mu: Any


def stat(state: Any, name: str) -> jax.Array:
  """The float32 mean of the ``name`` leaves of ``state`` (NaN when absent).

  With several hyperparameters (``mo.marthe_multi``: per-layer learning
  rates, ...) the mean of the values is returned.

  Examples:
    >>> import optax
    >>> s = optax.inject_hyperparams(optax.sgd)(learning_rate=0.5).init({})
    >>> float(stat(s, 'learning_rate')), bool(jnp.isnan(stat(s, 'mu')))
    (0.5, True)
  """
  value = optax.tree.get(state, name)
  if value is None:
    return jnp.asarray(jnp.nan, jnp.float32)
  return jnp.mean(jnp.stack(jax.tree.leaves(value))).astype(jnp.float32)


COUNTERS = ("nonfinite_count", "safeguard_count", "repaired_count")


def counters(state: Any) -> dict:
  """MARTHE's event counters in ``state`` as float32 (NaN where absent).

  ``nonfinite_count`` (discarded hypergradients), ``safeguard_count``
  (knob-free divergence safeguard events), ``repaired_count`` (steps with
  repaired NaN tangent entries).
  """
  out = {}
  for name in COUNTERS:
    value = optax.tree.get(state, name)
    out[name] = jnp.asarray(jnp.nan if value is None else value, jnp.float32)
  return out


def _scheduled(state, t, learning_rate):
  """The learning rate of a plain optimizer: ``learning_rate(t)`` or itself."""
  del state
  lr = learning_rate(t) if callable(learning_rate) else learning_rate
  return jnp.asarray(lr, jnp.float32)


def _in_state(state, t, learning_rate):
  del t, learning_rate
  return stat(state, "learning_rate")


def _from(name: str, scale: Optional[Callable] = None):
  def read(state, t, learning_rate):
    del t
    value = stat(state, name)
    return value if scale is None else scale(value, learning_rate)

  return read


def _dog(state, t, learning_rate):
  """DoG's step ``max_dist / sqrt(sum ||g||^2 + eps)`` (eps = 1e-8, its default)."""
  del t, learning_rate
  return stat(state, "max_dist") / jnp.sqrt(stat(state, "sum_sq_norm_grads") + 1e-8)


def _none(state, t, learning_rate):
  del state, t, learning_rate
  return jnp.asarray(jnp.nan, jnp.float32)


def _schedule_free_eval(state, params):
  return optax.contrib.schedule_free_eval_params(state, params)


class Method(NamedTuple):
  """One learning-rate method (hashable: a static argument of jitted runs).

  Attributes:
    name: the registry key.
    build: ``build(inner, learning_rate, value) -> GradientTransformation``.
    needs: the extra arguments ``update`` receives (names of
      :data:`EXTRA_ARGS`); without a validation batch, ``'val_grads'`` and
      ``'val_value'`` are dropped (``E = L``).
    family: ``'schedule'`` (a plain optimizer), ``'hypergradient'`` or
      ``'lr-free'``.
    value: what ``value`` is: ``'beta'``, ``'kappa'``, ``'hyper'`` (a
      :class:`Hyper`), ``'accumulation_size'``, ``'schedule'`` (an Optax
      schedule) or ``None`` (unused).
    learning_rate: ``learning_rate(state, t, lr) -> float32``, the learning
      rate (or effective step) of step ``t``, read from the state after it;
      ``lr`` is what was passed to :meth:`make`. NaN where not exposed.
    eval_params: ``eval_params(state, params)``, the params to evaluate;
      ``None`` for the params themselves.
  """

  name: str
  build: Callable[[InnerFactory, Any, Any], optax.GradientTransformation]
  needs: tuple = ()
  family: str = "hypergradient"
  value: Optional[str] = None
  learning_rate: Callable[[Any, jax.Array, Any], jax.Array] = _in_state
  eval_params: Optional[Callable[[Any, Any], Any]] = None

  def make(
    self, inner: InnerFactory, learning_rate: Any, value: Any = None
  ) -> optax.GradientTransformationExtraArgs:
    """The transformation, with extra-arguments support.

    Args:
      inner: the inner factory (ignored by the ``optax.contrib`` methods
        that have their own).
      learning_rate: ``eta_0``, or a schedule for the plain optimizer.
      value: the grid value (see :attr:`value`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return optax.with_extra_args_support(self.build(inner, learning_rate, value))

  def evaluation_params(self, state: Any, params: Any) -> Any:
    """The params at which the method is evaluated."""
    return params if self.eval_params is None else self.eval_params(state, params)


_OBJECTIVE = ("value_fn", "val_grads")
_KNOB_FREE = ("val_grads", "value")

METHODS = {
  m.name: m
  for m in (
    Method("plain", lambda i, lr, v: i(lr), family="schedule", learning_rate=_scheduled),
    Method("hd", lambda i, lr, v: mo.hd(i, lr, hyper_lr=v), ("val_grads",), value="beta"),
    Method("rtho", lambda i, lr, v: mo.rtho(i, lr, hyper_lr=v), _OBJECTIVE, value="beta"),
    Method("marthe", lambda i, lr, v: mo.marthe(i, lr, hyper_lr_step=v), _OBJECTIVE, value="kappa"),
    Method(
      "eq5",
      lambda i, lr, h: mo.marthe(
        i, lr, hyper_lr_step=h.hyper_lr_step, hyper_lr=h.hyper_lr, mu=h.mu
      ),
      _OBJECTIVE,
      value="hyper",
    ),
    Method(
      "eq5_adaptive_mu",
      lambda i, lr, h: mo.marthe(
        i, lr, hyper_lr_step=h.hyper_lr_step, hyper_lr=h.hyper_lr, mu=None
      ),
      _OBJECTIVE,
      value="hyper",
    ),
    Method("knob_free", lambda i, lr, v: mo.marthe(i, learning_rate=lr), _KNOB_FREE),
    Method(
      "knob_free_first_order",
      lambda i, lr, v: mo.marthe(i, learning_rate=lr, first_order=True),
      _KNOB_FREE,
    ),
    Method(
      "knob_free_full",
      lambda i, lr, v: mo.marthe(i, learning_rate=lr, first_order=False),
      ("value_fn",) + _KNOB_FREE,
    ),
    Method(
      "knob_free_schedule",
      lambda i, lr, v: mo.marthe(i, learning_rate=lr, schedule=v),
      _KNOB_FREE,
      value="schedule",
    ),
    Method(
      "marthe_multi",
      lambda i, hp, v: mo.marthe_multi(i, hp, hyper_lr_step=v),
      _OBJECTIVE,
      value="kappa",
    ),
    Method("knob_free_multi", lambda i, hp, v: mo.marthe_multi(i, hp), _KNOB_FREE),
    Method(
      "prodigy",
      lambda i, lr, v: optax.contrib.prodigy(),
      family="lr-free",
      learning_rate=_from("estim_lr"),
    ),
    Method(
      "dadapt_adamw",
      lambda i, lr, v: optax.contrib.dadapt_adamw(),
      family="lr-free",
      learning_rate=_from("estim_lr"),
    ),
    Method("dog", lambda i, lr, v: optax.contrib.dog(), family="lr-free", learning_rate=_dog),
    Method(
      "mechanic",
      lambda i, lr, v: optax.contrib.mechanize(i(lr)),
      family="lr-free",
      learning_rate=lambda s, t, lr: jnp.sum(jnp.asarray(optax.tree.get(s, "s"), jnp.float32)),
    ),
    Method(
      "schedule_free_sgd",
      lambda i, lr, v: optax.contrib.schedule_free_sgd(*(() if lr is None else (lr,))),
      family="lr-free",
      learning_rate=_none,
      eval_params=_schedule_free_eval,
    ),
    Method(
      "schedule_free_adamw",
      lambda i, lr, v: optax.contrib.schedule_free_adamw(*(() if lr is None else (lr,))),
      family="lr-free",
      learning_rate=_none,
      eval_params=_schedule_free_eval,
    ),
    Method(
      "plateau",
      lambda i, lr, v: optax.chain(i(lr), optax.contrib.reduce_on_plateau(accumulation_size=v)),
      ("val_value",),
      family="lr-free",
      value="accumulation_size",
      learning_rate=_from("scale", lambda s, lr: lr * s),
    ),
  )
}
"""Every method, by name.

``plain``: the inner optimizer at ``learning_rate`` (a schedule, or a traced
grid value); ``hd``, ``rtho``: fixed ``beta = value``; ``marthe``: eq. 5 with
adaptive ``mu`` and ``beta`` (``beta_0 = 0``), ``kappa = value``; ``eq5`` /
``eq5_adaptive_mu``: eq. 5 with every knob in a :class:`Hyper` (HD, RTHO and
fixed ``mu`` are members of ``eq5``); ``knob_free*``: ``mo.marthe(inner, lr)``
in its knob-free mode (default tangent, ``first_order=True``, ``False``);
``knob_free_schedule``: the knob-free mode on the shape of an Optax schedule
(``schedule = value``): step ``t`` uses ``eta_t * value(t)`` and MARTHE adapts
the scale ``eta_t`` from ``learning_rate`` (what its ``learning_rate`` reader
returns: the scale);
``marthe_multi`` / ``knob_free_multi``: ``mo.marthe_multi(inner,
hyperparams)`` (``learning_rate`` is then the dict of initial
hyperparameters); the ``optax.contrib`` learning-rate-free optimizers at their
defaults (``mechanic`` wraps ``inner(learning_rate)``; schedule-free takes
``learning_rate``, ``None`` for its default); ``plateau``:
``inner(learning_rate)`` chained with ``reduce_on_plateau``
(``accumulation_size = value``, a Python int) fed the validation loss."""


def get(method: Union[str, Method]) -> Method:
  """``METHODS[method]``, or ``method`` itself if it is a :class:`Method`.

  Raises:
    ValueError: on an unknown name (the message lists the known ones).

  Examples:
    >>> get("rtho").needs
    ('value_fn', 'val_grads')
  """
  if isinstance(method, Method):
    return method
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; expected one of {sorted(METHODS)}.")
  return METHODS[method]


def get_inner(name: str) -> InnerFactory:
  """``INNERS[name]``.

  Raises:
    ValueError: on an unknown name.
  """
  if name not in INNERS:
    raise ValueError(f"Unknown inner optimizer {name!r}; expected one of {sorted(INNERS)}.")
  return INNERS[name]


class Variant(NamedTuple):
  """A row of the section-3 and section-5 grids: an eq. 5 method on a grid.

  Attributes:
    name: the label in tables and plots.
    grid: ``'beta'`` (fixed hyper-learning rate), ``'kappa'`` (its step size,
      ``beta_0 = 0``) or ``'none'`` (constant learning rate).
    adaptive_mu: adapt ``mu`` online (appendix A).
    mu: the fixed discount otherwise.

  Examples:
    >>> hd = Variant("HD", "beta", False, 0.0)
    >>> hd.method, hd.hyper(1e-3)
    ('eq5', Hyper(hyper_lr=0.001, hyper_lr_step=0.0, mu=0.0))
  """

  name: str
  grid: str
  adaptive_mu: bool
  mu: float = 0.0

  @property
  def method(self) -> str:
    """The registry method: ``'eq5_adaptive_mu'`` or ``'eq5'``."""
    return "eq5_adaptive_mu" if self.adaptive_mu else "eq5"

  def hyper(self, value: Any) -> Hyper:
    """The :class:`Hyper` of grid value ``value`` (0 for the other knob)."""
    beta = value if self.grid == "beta" else 0.0
    kappa = value if self.grid == "kappa" else 0.0
    return Hyper(beta, kappa, self.mu)
