# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The competitors of the learning-rate-free benchmark (:data:`METHODS`).

Fixed schedules of SGD, the hypergradient methods of the package (HD, RTHO,
MARTHE and its knob-free mode) and the learning-rate-free optimizers of
``optax.contrib``, each a :class:`Method`: an entry of the one registry
:data:`marthe_lab.methods.METHODS` (which builds it, says what its update is
fed, reads its learning rate and its evaluation params) with this
benchmark's inner optimizer, ``eta_0`` or schedule, label, and what its user
has to set.
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import numpy as np
import optax

from marthe_lab import data as data_lib
from marthe_lab import methods as methods_lib
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
  return optax.sgdr_schedule(
    [
      dict(init_value=lr, peak_value=lr, warmup_steps=0, decay_steps=d, end_value=0.0)
      for d in sgdr_periods(config.steps)
    ]
  )


def _eta0(config: TrainConfig, hyper: Any) -> float:
  del hyper
  return config.learning_rate


def _hyper(config: TrainConfig, hyper: Any, n_train: int) -> Any:
  del config, n_train
  return hyper


class Method(NamedTuple):
  """One competitor, as the benchmark runs it: a registry method and its settings.

  Attributes:
    name: a short key.
    label: the name shown in tables and plots.
    family: ``'schedule'`` (SGD with a fixed schedule), ``'hypergradient'``
      (HD / RTHO / MARTHE) or ``'lr-free'`` (``optax.contrib``).
    method: the registry method, a key of :data:`marthe_lab.methods.METHODS`
      or a :class:`marthe_lab.methods.Method`: it builds the transformation,
      names what the update is fed (:attr:`needs`), reads the learning rate
      and gives the evaluation params.
    user_set: the hyperparameters the user has to set: arguments without a
      library default, and defaults this benchmark changed. The value that
      :func:`~marthe_optax.selection.select_hyper_lr_step` picks is not
      counted (the procedure picks it, on its default grid and divergence
      test, over the whole horizon: nothing more to set).
    inner: the inner optimizer, a key of :data:`marthe_lab.methods.INNERS`.
    learning_rate: ``learning_rate(config, hyper)``, what the registry
      method is built with: ``eta_0``, a schedule, a grid value, ``None``
      for an ``optax.contrib`` default.
    value: ``value(config, hyper, n_train)``, the registry method's value
      (the selected ``beta`` / ``kappa``, reduce_on_plateau's accumulation
      size); ``hyper`` by default.
    selects: ``'beta'`` or ``'kappa'`` when chosen by
      :func:`~marthe_optax.selection.select_hyper_lr_step`, the name of the
      hyperparameter that :attr:`grid` holds, else ``None``.
    notes: a short remark for the report.
    grid: values of ``hyper`` that are all trained, for every seed, and
      chosen in hindsight: the value with the best mean (over seeds) final
      validation accuracy is reported
      (:func:`~marthe_lab.choose.best_in_hindsight`); every run counts in the
      method's time. ``None`` otherwise.
    tasks: the keys of :data:`~marthe_lab.lr_free.TASKS` the method runs on;
      ``None`` for all.
  """

  name: str
  label: str
  family: str
  method: Union[str, methods_lib.Method]
  user_set: tuple = ()
  inner: str = "sgd"
  learning_rate: Callable[[TrainConfig, Any], Any] = _eta0
  value: Callable[[TrainConfig, Any, int], Any] = _hyper
  selects: Optional[str] = None
  notes: str = ""
  grid: Optional[tuple] = None
  tasks: Optional[tuple] = None

  @property
  def registry(self) -> methods_lib.Method:
    """The registry method."""
    return methods_lib.get(self.method)

  @property
  def needs(self) -> tuple:
    """What the update receives besides the gradient (the registry's)."""
    return self.registry.needs

  def build(
    self, config: TrainConfig, hyper: Any, n_train: int
  ) -> optax.GradientTransformationExtraArgs:
    """The transformation at ``hyper`` for ``n_train`` training examples."""
    return self.registry.make(
      methods_lib.get_inner(self.inner),
      self.learning_rate(config, hyper),
      self.value(config, hyper, n_train),
    )

  def read_lr(self, state: Any, t: jax.Array, config: TrainConfig, hyper: Any) -> jax.Array:
    """The learning rate (or effective step) of step ``t``, read after it."""
    return self.registry.learning_rate(state, t, self.learning_rate(config, hyper))

  def evaluation_params(self, state: Any, params: Any) -> Any:
    """The params at which the method is evaluated (schedule-free: its average)."""
    return self.registry.evaluation_params(state, params)


def _plateau_size(config: TrainConfig, hyper: Any, n_train: int) -> int:
  """reduce_on_plateau averages one epoch of validation losses."""
  del hyper
  return data_lib.steps_per_epoch(n_train, config.batch_size)


# Constant SGD "in hindsight": half-decades from 1e-3 to 10, wide enough that
# the largest rates diverge on every task.
BEST_CONSTANT_GRID = tuple(float(f"{v:.3g}") for v in 10.0 ** np.arange(-3.0, 1.01, 0.5))

# The Adam inner of the CNN rows: Optax's usual 1e-3 (eps_root = 0, the
# default).
ADAM_LEARNING_RATE = 1e-3
_adam_lr = lambda c, h: ADAM_LEARNING_RATE


METHODS = {
  m.name: m
  for m in (
    Method("sgd", "SGD constant", "schedule", "plain", ("learning_rate",)),
    Method(
      "cosine",
      "SGD cosine",
      "schedule",
      "plain",
      ("learning_rate", "decay_steps"),
      learning_rate=lambda c, h: cosine_schedule(c),
    ),
    Method(
      "sgdr",
      "SGD SGDR",
      "schedule",
      "plain",
      ("learning_rate", "T0", "T_mult"),
      learning_rate=lambda c, h: sgdr_schedule(c),
      notes="3 cycles T0, 2T0, 4T0 covering T",
    ),
    Method(
      "sgd_best",
      "SGD best constant (hindsight)",
      "schedule",
      "plain",
      ("learning_rate grid",),
      learning_rate=lambda c, h: h,
      selects="lr",
      grid=BEST_CONSTANT_GRID,
      notes="every rate of the grid trained; best mean validation accuracy reported",
    ),
    Method(
      "hd",
      "HD",
      "hypergradient",
      "hd",
      ("learning_rate",),
      selects="beta",
      notes="fixed beta from select_hyper_lr_step",
    ),
    Method(
      "rtho",
      "RTHO",
      "hypergradient",
      "rtho",
      ("learning_rate",),
      selects="beta",
      notes="fixed beta from select_hyper_lr_step",
    ),
    Method(
      "marthe",
      "MARTHE",
      "hypergradient",
      "marthe",
      ("learning_rate",),
      selects="kappa",
      notes="adaptive mu and beta, kappa selected",
    ),
    Method(
      "marthe_kf",
      "MARTHE knob-free (SGD)",
      "hypergradient",
      "knob_free",
      ("learning_rate",),
      notes="package defaults; value = training loss",
    ),
    Method(
      "marthe_kf_first_order",
      "MARTHE knob-free first-order (SGD)",
      "hypergradient",
      "knob_free_first_order",
      ("learning_rate",),
      notes="first_order=True: no Hessian-vector product, no value_fn",
    ),
    Method(
      "marthe_kf_full",
      "MARTHE knob-free full (SGD)",
      "hypergradient",
      "knob_free_full",
      ("learning_rate",),
      notes="first_order=False: the tangent's Hessian-vector product",
    ),
    Method(
      "adam",
      "Adam constant 1e-3",
      "schedule",
      "plain",
      ("learning_rate",),
      inner="adam",
      learning_rate=_adam_lr,
      tasks=("mnist1d-cnn",),
      notes="reference of the knob-free Adam row",
    ),
    Method(
      "marthe_kf_adam",
      "MARTHE knob-free (Adam)",
      "hypergradient",
      "knob_free",
      ("learning_rate",),
      inner="adam",
      learning_rate=_adam_lr,
      tasks=("mnist1d-cnn",),
      notes="eta_0 = 1e-3, Optax's default eps_root = 0",
    ),
    Method("prodigy", "Prodigy", "lr-free", "prodigy", notes="Adam-type; step = d * lr (lr = 1)"),
    Method(
      "dadapt",
      "D-Adapt AdamW",
      "lr-free",
      "dadapt_adamw",
      notes="Adam-type; step = d * lr (lr = 1)",
    ),
    Method("dog", "DoG", "lr-free", "dog", notes="no iterate averaging"),
    Method(
      "mechanic",
      "Mechanic(SGD)",
      "lr-free",
      "mechanic",
      ("base_learning_rate",),
      learning_rate=lambda c, h: 1.0,
      notes="base SGD lr 1.0 as its docs advise; step = sum(s)",
    ),
    Method(
      "schedule_free",
      "Schedule-free SGD",
      "lr-free",
      "schedule_free_sgd",
      ("learning_rate",),
      notes="lr = eta_0; evaluated at schedule_free_eval_params",
    ),
    Method(
      "schedule_free_default",
      "Schedule-free SGD (lr=1 default)",
      "lr-free",
      "schedule_free_sgd",
      learning_rate=lambda c, h: None,
      notes="all defaults; evaluated at schedule_free_eval_params",
    ),
    Method(
      "plateau",
      "SGD + reduce_on_plateau",
      "lr-free",
      "plateau",
      ("learning_rate", "accumulation_size"),
      value=_plateau_size,
      notes="fed the validation minibatch loss, averaged per epoch",
    ),
  )
}
"""The benchmark's competitors, by name (each an entry of the registry)."""


def get_method(method: "str | Method") -> Method:
  """``METHODS[method]``, or ``method`` itself if it is a :class:`Method`."""
  return method if isinstance(method, Method) else METHODS[method]
