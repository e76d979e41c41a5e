# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The learning-rate methods of the language-model benchmark (:data:`METHODS`)."""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

import marthe_optax as mo
from marthe_lab.lm.model import Config, group_labels, groups


def warmup_cosine(config: Config, peak: Any = 1.0) -> optax.Schedule:
  """Linear warm-up from 0 over ``config.warmup`` steps, cosine decay to ``peak / 10``.

  ``peak`` times the unit-peak shape ``optax.warmup_cosine_decay_schedule(0.,
  1., warmup, steps, end_value=0.1)`` (so that ``peak`` may be traced).
  """
  shape = optax.warmup_cosine_decay_schedule(
      0.0, 1.0, config.warmup, config.steps, end_value=0.1)
  return lambda count: peak * shape(count)


def _get(state, name):
  return jnp.asarray(optax.tree.get(state, name), jnp.float32)


class Method(NamedTuple):
  """One competitor.

  Attributes:
    name: a short key.
    label: the name in tables and plots.
    family: ``'schedule'``, ``'lr-free'`` or ``'hypergradient'``.
    build: ``build(config, hyper) -> GradientTransformationExtraArgs``;
      ``hyper`` is the grid's peak or the selected ``beta`` / ``kappa``.
    lr: ``lr(state, t, config, hyper)``, the rate step ``t`` used (a vector
      of per-group rates for per-layer methods; ``nan`` if not exposed).
    feed: what the update receives besides the gradient (see
      :func:`marthe_lab.lm.train`).
    user_set: the values the user writes down (no library default, or a
      default changed); values a procedure picks are not counted.
    tune: ``None``, ``'grid'`` (over ``Config.peaks``) or ``'beta'`` /
      ``'kappa'`` (chosen by the selection).
    eval_params: ``eval_params(state, params)`` or ``None``.
    notes: a remark for the report.
  """

  name: str
  label: str
  family: str
  build: Callable[[Config, Any], optax.GradientTransformationExtraArgs]
  lr: Callable[[Any, jax.Array, Config, Any], jax.Array]
  feed: str = "none"
  user_set: tuple = ()
  tune: Optional[str] = None
  eval_params: Optional[Callable[[Any, Any], Any]] = None
  notes: str = ""


_nan = lambda s, t, c, h: jnp.float32(jnp.nan)
_state_lr = lambda s, t, c, h: _get(s, "learning_rate")
_estim_lr = lambda s, t, c, h: _get(s, "estim_lr")


def _sf_eval(state, params):
  return optax.contrib.schedule_free_eval_params(state, params)


METHODS = {m.name: m for m in (
    Method("adamw", "AdamW constant", "schedule",
           lambda c, h: optax.adamw(c.learning_rate),
           lambda s, t, c, h: jnp.float32(c.learning_rate),
           user_set=("learning_rate",)),
    Method("cosine", "AdamW warm-up + cosine (peak tuned)", "schedule",
           lambda c, h: optax.adamw(warmup_cosine(c, h)),
           lambda s, t, c, h: jnp.asarray(warmup_cosine(c, h)(t), jnp.float32),
           user_set=("peak grid", "warmup_steps", "decay_steps", "end_value"),
           tune="grid", notes="peak picked by mean final validation loss"),
    Method("prodigy", "Prodigy", "lr-free",
           lambda c, h: optax.contrib.prodigy(), _estim_lr,
           notes="step = d * lr (lr = 1)"),
    Method("dadapt", "D-Adapt AdamW", "lr-free",
           lambda c, h: optax.contrib.dadapt_adamw(), _estim_lr,
           notes="step = d * lr (lr = 1)"),
    Method("schedule_free", "Schedule-free AdamW", "lr-free",
           lambda c, h: optax.contrib.schedule_free_adamw(), _nan,
           eval_params=_sf_eval,
           notes="defaults (lr 0.0025); evaluated at schedule_free_eval_params"),
    Method("hd", "HD (AdamW)", "hypergradient",
           lambda c, h: mo.hd(optax.adamw, learning_rate=c.learning_rate, hyper_lr=h),
           _state_lr, feed="objective", user_set=("learning_rate",), tune="beta",
           notes="fixed beta from select_hyper_lr_step"),
    Method("marthe", "MARTHE, paper (AdamW, kappa selected)", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate,
                                  hyper_lr_step=h),
           _state_lr, feed="objective", user_set=("learning_rate",), tune="kappa",
           notes="eq. 5, adaptive mu and beta; kappa from select_hyper_lr_step"),
    Method("marthe_kf", "MARTHE knob-free (AdamW)", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate),
           _state_lr, feed="objective+value", user_set=("learning_rate",),
           notes="package defaults; value = training loss for the safeguard"),
    Method("marthe_kf_cosine", "MARTHE knob-free on warm-up + cosine", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate,
                                  schedule=warmup_cosine(c)),
           lambda s, t, c, h: _get(s, "learning_rate") * warmup_cosine(c)(t),
           feed="objective+value",
           user_set=("learning_rate", "warmup_steps", "decay_steps", "end_value"),
           notes="the unit-peak shape; MARTHE adapts its scale from eta_0"),
    Method("marthe_layers", "MARTHE knob-free, per-layer rates", "hypergradient",
           lambda c, h: mo.marthe_multi(
               mo.per_group(optax.adamw, group_labels),
               {"learning_rate": {g: c.learning_rate for g in groups(c)}}),
           lambda s, t, c, h: jnp.stack([
               jnp.asarray(v, jnp.float32)
               for v in jax.tree.leaves(optax.tree.get(s, "hyperparams"))]),
           feed="objective+value", user_set=("learning_rate", "groups"),
           notes="marthe_multi(per_group(adamw)): embeddings, each block, final norm"),
)}

