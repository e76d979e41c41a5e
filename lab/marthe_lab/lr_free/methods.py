# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The competitors of the learning-rate-free benchmark (:data:`METHODS`).

Fixed schedules of SGD, the hypergradient methods of the package (HD, RTHO,
MARTHE and its knob-free mode) and the learning-rate-free optimizers of
``optax.contrib``, each a :class:`Method`: how to build it, what its update
is fed, how to read its learning rate, and what its user has to set.
"""

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_lab import train as train_lib

TrainConfig = train_lib.TrainConfig


def cosine_schedule(config: TrainConfig) -> optax.Schedule:
  """Cosine decay from ``eta_0`` to 0 over the horizon."""
  return optax.cosine_decay_schedule(config.learning_rate, config.steps)


def sgdr_periods(steps: int, cycles: int = 3, mult: int = 2) -> list[int]:
  """SGDR cycle lengths ``T0, mult T0, mult**2 T0, ...`` that cover ``steps``.

  ``T0 = ceil(steps / (1 + mult + ... + mult**(cycles-1)))``: with the
  defaults (``T_mult = 2`` as in the paper's section 6) three cycles of
  ``T0, 2 T0, 4 T0`` fill the horizon (the last one may run past it).

  Examples:
    >>> sgdr_periods(512)
    [74, 148, 296]
  """
  t0 = max(1, math.ceil(steps / sum(mult**i for i in range(cycles))))
  return [t0 * mult**i for i in range(cycles)]


def sgdr_schedule(config: TrainConfig) -> optax.Schedule:
  """``optax.sgdr_schedule``: cosine cycles from ``eta_0`` with warm restarts."""
  lr = config.learning_rate
  return optax.sgdr_schedule([
      dict(init_value=lr, peak_value=lr, warmup_steps=0, decay_steps=d,
           end_value=0.0)
      for d in sgdr_periods(config.steps)
  ])


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
  """``ceil(n_train / batch_size)``: reduce_on_plateau's accumulation size."""
  return max(1, -(-n_train // config.batch_size))


def _nan(*_):
  return jnp.asarray(jnp.nan, jnp.float32)


def _get(state, name):
  return jnp.asarray(optax.tree.get(state, name), jnp.float32)


def _dog_lr(state, t, config):
  """DoG's step ``max_dist / sqrt(sum ||g||^2 + eps)`` (eps = 1e-8, its default)."""
  del t, config
  return _get(state, "max_dist") / jnp.sqrt(_get(state, "sum_sq_norm_grads") + 1e-8)


class Method(NamedTuple):
  """One competitor, as the benchmark runs it.

  Attributes:
    name: a short key.
    label: the name shown in tables and plots.
    family: ``'schedule'`` (SGD with a fixed schedule), ``'hypergradient'``
      (HD / RTHO / MARTHE) or ``'lr-free'`` (``optax.contrib``).
    build: ``build(config, hyper, n_train) -> GradientTransformation``;
      ``hyper`` is the selected ``beta`` or ``kappa``, or a value of
      :attr:`grid` (ignored otherwise).
    feed: what the update receives besides the gradient: ``'none'``,
      ``'objective'`` (``value_fn`` and ``val_grads`` of a validation
      minibatch), ``'objective_value'`` (``val_grads`` of a validation
      minibatch, ``value=`` the training minibatch loss ``L_t(w_t)`` and,
      if :attr:`needs_value_fn`, ``value_fn``) or ``'value'`` (``value=``
      the validation minibatch loss).
    lr: ``lr(state, t, config)``, the learning rate (or effective step) used
      at step ``t``, read after the update; ``nan`` if not exposed.
    user_set: the hyperparameters the user has to set: arguments without a
      library default, and defaults this benchmark changed. The value that
      :func:`~marthe_optax.selection.select_hyper_lr_step` picks is not
      counted (the procedure picks it, on its default grid and divergence
      test, over the whole horizon: nothing more to set).
    selects: ``'beta'`` or ``'kappa'`` when chosen by
      :func:`~marthe_optax.selection.select_hyper_lr_step`, the name of the
      hyperparameter that :attr:`grid` holds, else ``None``.
    eval_params: ``eval_params(state, params)``: the params to evaluate
      (schedule-free's averaged sequence); ``None`` for the params themselves.
    notes: a short remark for the report.
    grid: values of ``hyper`` that are all trained, for every seed, and
      chosen in hindsight: the value with the best mean (over seeds) final
      validation accuracy is reported (:func:`best_in_hindsight`); every run
      counts in the method's time. ``None`` otherwise.
    tasks: the keys of :data:`TASKS` the method runs on; ``None`` for all.
    needs_value_fn: whether the ``'objective_value'`` feed passes
      ``value_fn`` (a method whose tangent forms a Hessian-vector product);
      a first-order method gets only ``val_grads`` and ``value``.
  """

  name: str
  label: str
  family: str
  build: Callable[[TrainConfig, jax.Array, int], optax.GradientTransformation]
  feed: str
  lr: Callable[[Any, jax.Array, TrainConfig], jax.Array]
  user_set: tuple
  selects: Optional[str] = None
  eval_params: Optional[Callable[[Any, Any], Any]] = None
  notes: str = ""
  grid: Optional[tuple] = None
  tasks: Optional[tuple] = None
  needs_value_fn: bool = True


def _sched_lr(make):
  return lambda state, t, config: jnp.asarray(make(config)(t), jnp.float32)


def _const_lr(state, t, config):
  del state, t
  return jnp.asarray(config.learning_rate, jnp.float32)


def state_lr(state: Any, t: jax.Array, config: TrainConfig) -> jax.Array:
  """The ``'learning_rate'`` of ``state`` (a :attr:`Method.lr` reader)."""
  del t, config
  return _get(state, "learning_rate")


def _sf_eval(state, params):
  return optax.contrib.schedule_free_eval_params(state, params)


def _adam_lr(state, t, config):
  del state, t, config
  return jnp.asarray(ADAM_LEARNING_RATE, jnp.float32)


# Constant SGD "in hindsight": half-decades from 1e-3 to 10, wide enough that
# the largest rates diverge on every task.
BEST_CONSTANT_GRID = tuple(
    float(f"{v:.3g}") for v in 10.0 ** np.arange(-3.0, 1.01, 0.5))

# Whether knob-free MARTHE at its default (``first_order=None``) forms a
# Hessian-vector product, so that the benchmark must pass ``value_fn``: the
# default tangent is first order, so it does not.
KNOB_FREE_NEEDS_VALUE_FN = False

# The Adam inner of the CNN rows: Optax's usual 1e-3 (eps_root = 0, the
# default).
ADAM_LEARNING_RATE = 1e-3


METHODS = {
    m.name: m
    for m in (
        Method(
            "sgd", "SGD constant", "schedule",
            lambda c, h, n: optax.sgd(c.learning_rate), "none", _const_lr,
            ("learning_rate",),
        ),
        Method(
            "cosine", "SGD cosine", "schedule",
            lambda c, h, n: optax.sgd(cosine_schedule(c)), "none",
            _sched_lr(cosine_schedule), ("learning_rate", "decay_steps"),
        ),
        Method(
            "sgdr", "SGD SGDR", "schedule",
            lambda c, h, n: optax.sgd(sgdr_schedule(c)), "none",
            _sched_lr(sgdr_schedule), ("learning_rate", "T0", "T_mult"),
            notes="3 cycles T0, 2T0, 4T0 covering T",
        ),
        Method(
            "sgd_best", "SGD best constant (hindsight)", "schedule",
            lambda c, h, n: optax.inject_hyperparams(optax.sgd)(
                learning_rate=h),
            "none", state_lr, ("learning_rate grid",), selects="lr",
            grid=BEST_CONSTANT_GRID,
            notes="every rate of the grid trained; best mean validation "
            "accuracy reported",
        ),
        Method(
            "hd", "HD", "hypergradient",
            lambda c, h, n: mo.hd(optax.sgd, c.learning_rate, hyper_lr=h),
            "objective",
            state_lr, ("learning_rate",), selects="beta",
            notes="fixed beta from select_hyper_lr_step",
        ),
        Method(
            "rtho", "RTHO", "hypergradient",
            lambda c, h, n: mo.rtho(optax.sgd, c.learning_rate, hyper_lr=h),
            "objective",
            state_lr, ("learning_rate",), selects="beta",
            notes="fixed beta from select_hyper_lr_step",
        ),
        Method(
            "marthe", "MARTHE", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, c.learning_rate,
                                      hyper_lr_step=h),
            "objective", state_lr, ("learning_rate",),
            selects="kappa", notes="adaptive mu and beta, kappa selected",
        ),
        Method(
            "marthe_kf", "MARTHE knob-free (SGD)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate),
            "objective_value", state_lr, ("learning_rate",),
            needs_value_fn=KNOB_FREE_NEEDS_VALUE_FN,
            notes="package defaults; value = training loss",
        ),
        Method(
            "marthe_kf_first_order", "MARTHE knob-free first-order (SGD)",
            "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate,
                                      first_order=True),
            "objective_value", state_lr, ("learning_rate",),
            needs_value_fn=False,
            notes="first_order=True: no Hessian-vector product, no value_fn",
        ),
        Method(
            "marthe_kf_full", "MARTHE knob-free full (SGD)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate,
                                      first_order=False),
            "objective_value", state_lr, ("learning_rate",),
            notes="first_order=False: the tangent's Hessian-vector product",
        ),
        Method(
            "adam", "Adam constant 1e-3", "schedule",
            lambda c, h, n: optax.adam(ADAM_LEARNING_RATE), "none", _adam_lr,
            ("learning_rate",), tasks=("mnist1d-cnn",),
            notes="reference of the knob-free Adam row",
        ),
        Method(
            "marthe_kf_adam", "MARTHE knob-free (Adam)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.adam,
                                      learning_rate=ADAM_LEARNING_RATE),
            "objective_value", state_lr, ("learning_rate",),
            tasks=("mnist1d-cnn",), needs_value_fn=KNOB_FREE_NEEDS_VALUE_FN,
            notes="eta_0 = 1e-3, Optax's default eps_root = 0",
        ),
        Method(
            "prodigy", "Prodigy", "lr-free",
            lambda c, h, n: optax.contrib.prodigy(), "none",
            lambda s, t, c: _get(s, "estim_lr"), (),
            notes="Adam-type; step = d * lr (lr = 1)",
        ),
        Method(
            "dadapt", "D-Adapt AdamW", "lr-free",
            lambda c, h, n: optax.contrib.dadapt_adamw(), "none",
            lambda s, t, c: _get(s, "estim_lr"), (),
            notes="Adam-type; step = d * lr (lr = 1)",
        ),
        Method(
            "dog", "DoG", "lr-free",
            lambda c, h, n: optax.contrib.dog(), "none", _dog_lr, (),
            notes="no iterate averaging",
        ),
        Method(
            "mechanic", "Mechanic(SGD)", "lr-free",
            lambda c, h, n: optax.contrib.mechanize(optax.sgd(1.0)), "none",
            lambda s, t, c: jnp.sum(_get(s, "s")), ("base_learning_rate",),
            notes="base SGD lr 1.0 as its docs advise; step = sum(s)",
        ),
        Method(
            "schedule_free", "Schedule-free SGD", "lr-free",
            lambda c, h, n: optax.contrib.schedule_free_sgd(c.learning_rate),
            "none", _nan, ("learning_rate",), eval_params=_sf_eval,
            notes="lr = eta_0; evaluated at schedule_free_eval_params",
        ),
        Method(
            "schedule_free_default", "Schedule-free SGD (lr=1 default)",
            "lr-free",
            lambda c, h, n: optax.contrib.schedule_free_sgd(), "none", _nan, (),
            eval_params=_sf_eval,
            notes="all defaults; evaluated at schedule_free_eval_params",
        ),
        Method(
            "plateau", "SGD + reduce_on_plateau", "lr-free",
            lambda c, h, n: optax.chain(
                optax.sgd(c.learning_rate),
                optax.contrib.reduce_on_plateau(
                    accumulation_size=steps_per_epoch(c, n)),
            ),
            "value",
            lambda s, t, c: c.learning_rate * _get(s, "scale"),
            ("learning_rate", "accumulation_size"),
            notes="fed the validation minibatch loss, averaged per epoch",
        ),
    )
}



def get_method(method: "str | Method") -> Method:
  """``METHODS[method]``, or ``method`` itself if it is a :class:`Method`."""
  return method if isinstance(method, Method) else METHODS[method]


