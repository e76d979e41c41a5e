# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The learning-rate methods of the language-model benchmark (:data:`METHODS`).

Each row is an entry of the one registry (:data:`marthe_lab.methods.METHODS`)
with this benchmark's inner optimizer (AdamW), ``eta_0``, schedule or
per-group rates, label and what its user sets.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo
from marthe_lab import methods as methods_lib
from marthe_lab.lm.model import Config, group_labels, groups


def warmup_cosine(config: Config, peak: Any = 1.0) -> optax.Schedule:
  """Linear warm-up from 0 over ``config.warmup`` steps, cosine decay to ``peak / 10``.

  ``peak`` times the unit-peak shape ``optax.warmup_cosine_decay_schedule(0.,
  1., warmup, steps, end_value=0.1)`` (so that ``peak`` may be traced).
  """
  shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, config.warmup, config.steps, end_value=0.1)
  return lambda count: peak * shape(count)


def _eta0(config: Config, hyper: Any) -> float:
  del hyper
  return config.learning_rate


def _hyper(config: Config, hyper: Any) -> Any:
  del config
  return hyper


def _none(config: Config, hyper: Any) -> None:
  """``None``: an unused value, or an ``optax.contrib`` method's own default rate."""
  del config, hyper


class Method(NamedTuple):
  """One competitor: a registry method and this benchmark's settings of it.

  Attributes:
    name: a short key.
    label: the name in tables and plots.
    method: the registry method, a key of :data:`marthe_lab.methods.METHODS`:
      it builds the transformation, names what the update is fed
      (``registry.needs``), reads the learning rate, gives the evaluation
      params (``registry.eval_params``) and the family (``'schedule'``,
      ``'lr-free'`` or ``'hypergradient'``: ``registry.family``).
    inner: the inner optimizer factory (AdamW, Optax defaults otherwise).
    learning_rate: ``learning_rate(config, hyper)``, what the registry method
      is built with: ``eta_0``, a schedule, the initial per-group rates,
      ``None`` for an ``optax.contrib`` default.
    value: ``value(config, hyper)``, the registry method's value (the
      selected ``beta`` / ``kappa``, a schedule's shape); ``None`` if unused.
    read_lr: ``read_lr(state, t, config, hyper)``, the rate step ``t`` used,
      where the registry's reader does not say it (a vector of per-group
      rates; a scale times its schedule's shape); ``None`` for the
      registry's.
    user_set: the values the user writes down (no library default, or a
      default changed); values a procedure picks are not counted.
    tune: ``None``, ``'grid'`` (over ``Config.peaks``) or ``'beta'`` /
      ``'kappa'`` (chosen by the selection).
    notes: a remark for the report.
  """

  name: str
  label: str
  method: str
  inner: Callable[..., optax.GradientTransformation] = optax.adamw
  learning_rate: Callable[[Config, Any], Any] = _eta0
  value: Callable[[Config, Any], Any] = _none
  read_lr: Optional[Callable[[Any, jax.Array, Config, Any], jax.Array]] = None
  user_set: tuple = ()
  tune: Optional[str] = None
  notes: str = ""

  @property
  def registry(self) -> methods_lib.Method:
    """The registry method."""
    return methods_lib.get(self.method)

  def build(self, config: Config, hyper: Any) -> optax.GradientTransformationExtraArgs:
    """The transformation at ``hyper`` (the grid's peak, or ``beta`` / ``kappa``)."""
    return self.registry.make(
      self.inner, self.learning_rate(config, hyper), self.value(config, hyper)
    )

  def lr(self, state: Any, t: jax.Array, config: Config, hyper: Any) -> jax.Array:
    """The rate step ``t`` used, read after it (``nan`` if not exposed)."""
    if self.read_lr is not None:
      return self.read_lr(state, t, config, hyper)
    return self.registry.learning_rate(state, t, self.learning_rate(config, hyper))


def _scaled_shape(state, t, config, hyper):
  """The knob-free scale times the warm-up + cosine shape at step ``t``."""
  del hyper
  return methods_lib.stat(state, "learning_rate") * warmup_cosine(config)(t)


def _group_rates(state, t, config, hyper):
  """The per-group rates, a vector."""
  del t, config, hyper
  return jnp.stack(
    [jnp.asarray(v, jnp.float32) for v in jax.tree.leaves(optax.tree.get(state, "hyperparams"))]
  )


METHODS = {
  m.name: m
  for m in (
    Method("adamw", "AdamW constant", "plain", user_set=("learning_rate",)),
    Method(
      "cosine",
      "AdamW warm-up + cosine (peak tuned)",
      "plain",
      learning_rate=warmup_cosine,
      user_set=("peak grid", "warmup_steps", "decay_steps", "end_value"),
      tune="grid",
      notes="peak picked by mean final validation loss",
    ),
    Method("prodigy", "Prodigy", "prodigy", learning_rate=_none, notes="step = d * lr (lr = 1)"),
    Method(
      "dadapt", "D-Adapt AdamW", "dadapt_adamw", learning_rate=_none, notes="step = d * lr (lr = 1)"
    ),
    Method(
      "schedule_free",
      "Schedule-free AdamW",
      "schedule_free_adamw",
      learning_rate=_none,
      notes="defaults (lr 0.0025); evaluated at schedule_free_eval_params",
    ),
    Method(
      "hd",
      "HD (AdamW)",
      "hd",
      value=_hyper,
      user_set=("learning_rate",),
      tune="beta",
      notes="fixed beta from select_hyper_lr_step",
    ),
    Method(
      "marthe",
      "MARTHE, paper (AdamW, kappa selected)",
      "marthe",
      value=_hyper,
      user_set=("learning_rate",),
      tune="kappa",
      notes="eq. 5, adaptive mu and beta; kappa from select_hyper_lr_step",
    ),
    Method(
      "marthe_kf",
      "MARTHE knob-free (AdamW)",
      "knob_free",
      user_set=("learning_rate",),
      notes="package defaults; value = training loss for the safeguard",
    ),
    Method(
      "marthe_kf_cosine",
      "MARTHE knob-free on warm-up + cosine",
      "knob_free_schedule",
      value=lambda c, h: warmup_cosine(c),
      read_lr=_scaled_shape,
      user_set=("learning_rate", "warmup_steps", "decay_steps", "end_value"),
      notes="the unit-peak shape; MARTHE adapts its scale from eta_0",
    ),
    Method(
      "marthe_layers",
      "MARTHE knob-free, per-layer rates",
      "knob_free_multi",
      inner=mo.per_group(optax.adamw, group_labels),
      learning_rate=lambda c, h: {"learning_rate": {g: c.learning_rate for g in groups(c)}},
      read_lr=_group_rates,
      user_set=("learning_rate", "groups"),
      notes="marthe_multi(per_group(adamw)): embeddings, each block, final norm",
    ),
  )
}
"""The competitors, constant AdamW first (the time reference)."""
