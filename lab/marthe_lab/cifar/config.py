# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The CIFAR experiments' configuration: :class:`Config`, its presets, the methods.

:func:`preset` gives the paper's setting, a synthetic stand-in and a smoke
test. Each method (:data:`METHODS`) is an entry of the one registry
(:data:`marthe_lab.methods.METHODS`) over the experiment's inner optimizer:
the fixed schedules are ``'plain'`` with an Optax schedule as its learning
rate, HD / RTHO / MARTHE the registry's own, from ``eta_0``;
:func:`make_optimizer` builds one.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import optax

from marthe_lab import data as data_lib
from marthe_lab import methods as methods_lib
from marthe_lab.cifar import data as cifar_data


EXPERIMENTS = {
  # name: (dataset, model, inner, eta_0)
  "vgg11-cifar10": ("cifar10", "vgg11", "momentum", 0.1),
  "resnet18-cifar100": ("cifar100", "resnet18", "adam", 3e-4),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment: data, model, optimizer, methods, schedules.

  Durations of the fixed schedules are in epochs.
  """

  dataset: str = "cifar10"  # 'cifar10', 'cifar100' or 'synthetic'
  model: str = "vgg11"  # 'vgg11' or 'resnet18'
  inner: str = "momentum"  # a key of marthe_lab.methods.INNERS
  eta0: float = 0.1
  width: float = 1.0
  epochs: int = 200
  batch_size: int = 128
  val_batch_size: int = 128
  eval_batch_size: int = 500
  weight_decay: float = 5e-4
  num_val: int = 5000
  seeds: tuple = (0, 1, 2, 3, 4)
  methods: tuple = ("staircase", "exponential", "sgdr", "hd", "rtho", "marthe")
  kappa: Optional[float] = None  # MARTHE's hyper_lr_step; None: selection
  selection_start: float = 1e-2
  selection_num: int = 8  # 1e-2 ... 1e-9
  selection_factor: float = 10.0
  selection_steps: int = 200
  # SGD-momentum at eta_0 = 0.1 alone can multiply the loss of a fresh small
  # VGG by 2.6 in its first steps; a too large kappa drives eta (and the loss)
  # to overflow within a few steps.
  selection_growth: float = 4.0
  selection_chunk: Optional[int] = 1  # candidates per vmapped chunk
  hd_beta: float = 1e-6
  rtho_beta: float = 1e-8
  staircase_every: float = 60.0
  staircase_factor: float = 0.1
  exp_decay: float = 0.99
  sgdr_t0: float = 10.0
  sgdr_mult: float = 2.0
  max_steps_per_epoch: Optional[int] = None
  augment: bool = True
  synthetic_sizes: tuple = (2048, 256, 512)  # train, val, test
  num_classes: int = 10  # for the synthetic data
  data_dir: Optional[str] = None


def preset(name: str, experiment: str = "vgg11-cifar10", **overrides) -> Config:
  """A named configuration.

  Args:
    name: ``'paper'`` (the paper's full setting on the real data),
      ``'synthetic'`` (no data, reduced width, a couple of minutes on a CPU,
      the README command) or ``'smoke'`` (four steps of a three-convolution
      VGG on tiny synthetic data, staircase and MARTHE only, for CI).
    experiment: ``'vgg11-cifar10'`` or ``'resnet18-cifar100'``: the model,
      inner optimizer and ``eta_0`` (and the dataset for ``'paper'``).
    **overrides: fields of :class:`Config` to replace.

  Returns:
    The :class:`Config`.
  """
  if experiment not in EXPERIMENTS:
    raise ValueError(f"experiment must be one of {sorted(EXPERIMENTS)}, got {experiment!r}.")
  dataset, model, inner, eta0 = EXPERIMENTS[experiment]
  base = dict(model=model, inner=inner, eta0=eta0)
  if name == "paper":
    cfg = Config(dataset=dataset, **base)
  elif name == "synthetic":
    # Eight short epochs; the fixed schedules are compressed to match.
    cfg = Config(
      dataset="synthetic",
      width=0.125,
      epochs=8,
      batch_size=64,
      val_batch_size=64,
      eval_batch_size=256,
      synthetic_sizes=(2048, 256, 512),
      seeds=(0, 1),
      staircase_every=3.0,
      exp_decay=0.8,
      sgdr_t0=1.0,
      # From the selection on this preset (--select-kappa, 20 steps, about
      # 5 CPU-minutes; run on a harder version of the data, separation
      # 0.25): 1e-7 overflows, 1e-8 multiplies the loss by 9.4, 1e-9 and
      # below do not diverge.
      kappa=1e-9 if inner == "momentum" else None,
      selection_steps=20,
      selection_start=1e-7,
      selection_num=6,
      **base,
    )
  elif name == "smoke":
    # A three-convolution VGG ('vgg-mini'): compile time dominates here.
    # kappa: the hypergradients are ~1e2 at once, and 1e-5 or more drives
    # eta to 0 at the third step; at 1e-9 it moves and stays positive.
    base["model"] = "vgg-mini"
    cfg = Config(
      dataset="synthetic",
      width=0.0625,
      epochs=2,
      batch_size=16,
      val_batch_size=16,
      eval_batch_size=32,
      synthetic_sizes=(64, 32, 32),
      max_steps_per_epoch=2,
      seeds=(0,),
      staircase_every=1.0,
      exp_decay=0.5,
      sgdr_t0=1.0,
      kappa=1e-9,
      methods=("staircase", "marthe"),
      **base,
    )
  else:
    raise ValueError(f"preset must be 'paper', 'synthetic' or 'smoke', got {name!r}.")
  return dataclasses.replace(cfg, **overrides)


def load_data(cfg: Config) -> cifar_data.Cifar:
  """The dataset of ``cfg``: the CIFAR pickles, or the synthetic stand-in."""
  if cfg.dataset == "synthetic":
    n_train, n_val, n_test = cfg.synthetic_sizes
    return cifar_data.synthetic(n_train, n_val, n_test, cfg.num_classes)
  return cifar_data.load(cfg.dataset, cfg.data_dir, num_val=cfg.num_val)


def steps_per_epoch(cfg: Config, num_train: int) -> int:
  """:func:`marthe_lab.data.steps_per_epoch` (full batches), capped by
  ``cfg.max_steps_per_epoch``."""
  steps = data_lib.steps_per_epoch(num_train, cfg.batch_size)
  return min(steps, cfg.max_steps_per_epoch or steps)


def sgdr_schedule(eta0: float, t0_steps: int, mult: float, total_steps: int) -> optax.Schedule:
  """SGDR (Loshchilov & Hutter, 2017): ``optax.sgdr_schedule`` from ``eta0``.

  Cosine decays to 0 restarted at ``eta0``, of ``T_0, T_0 mult, T_0 mult^2,
  ...`` steps (rounded), until ``total_steps`` are covered.
  """
  periods, start, period = [], 0, float(t0_steps)
  while start < total_steps:
    periods.append(max(1, int(round(period))))
    start += periods[-1]
    period *= mult
  return optax.sgdr_schedule(
    [
      dict(init_value=eta0, peak_value=eta0, warmup_steps=0, decay_steps=d, end_value=0.0)
      for d in periods
    ]
  )


def staircase_schedule(cfg: Config, spe: int) -> optax.Schedule:
  """``eta_0`` times ``cfg.staircase_factor`` every ``cfg.staircase_every`` epochs."""
  every = max(1, int(round(cfg.staircase_every * spe)))
  return optax.piecewise_constant_schedule(
    cfg.eta0, {k: cfg.staircase_factor for k in range(every, cfg.epochs * spe, every)}
  )


def exponential_schedule(cfg: Config, spe: int) -> optax.Schedule:
  """``eta_0`` times ``cfg.exp_decay`` per epoch (staircase)."""
  return optax.exponential_decay(
    cfg.eta0, transition_steps=spe, decay_rate=cfg.exp_decay, staircase=True
  )


def _sgdr(cfg: Config, spe: int) -> optax.Schedule:
  return sgdr_schedule(cfg.eta0, int(round(cfg.sgdr_t0 * spe)), cfg.sgdr_mult, cfg.epochs * spe)


def _eta0(cfg: Config, spe: int) -> float:
  del spe
  return cfg.eta0


def _kappa(cfg: Config, kappa: Optional[float]) -> float:
  del cfg
  if kappa is None:
    raise ValueError("marthe needs kappa (Config.kappa or the selection).")
  return kappa


class Method(NamedTuple):
  """One method of the experiment: a registry method and its settings.

  Attributes:
    name: the key (``Config.methods`` names these).
    method: the registry method, a key of :data:`marthe_lab.methods.METHODS`:
      it builds the transformation over ``Config.inner``, names what the
      update is fed and reads the learning rate.
    learning_rate: ``learning_rate(cfg, steps_per_epoch)``: ``eta_0``, or
      the Optax schedule of a fixed-schedule method.
    value: ``value(cfg, kappa)``, the registry method's value (HD's and
      RTHO's ``beta``, MARTHE's ``kappa``); ``None`` for the schedules.
  """

  name: str
  method: str
  learning_rate: Callable[[Config, int], Any] = _eta0
  value: Callable[[Config, Optional[float]], Any] = lambda cfg, kappa: None

  @property
  def registry(self) -> methods_lib.Method:
    """The registry method."""
    return methods_lib.get(self.method)


METHODS = {
  m.name: m
  for m in (
    Method("staircase", "plain", staircase_schedule),
    Method("exponential", "plain", exponential_schedule),
    Method("sgdr", "plain", _sgdr),
    Method("hd", "hd", value=lambda cfg, kappa: cfg.hd_beta),
    Method("rtho", "rtho", value=lambda cfg, kappa: cfg.rtho_beta),
    Method("marthe", "marthe", value=_kappa),
  )
}
"""The methods of section 6, by name."""

ONLINE = tuple(n for n, m in METHODS.items() if m.registry.family == "hypergradient")
"""The methods that read the validation objective: HD, RTHO, MARTHE."""


def make_optimizer(
  cfg: Config, method: str, spe: int, kappa: Optional[float]
) -> tuple[optax.GradientTransformationExtraArgs, Any]:
  """``(tx, learning_rate)`` of a method: ``METHODS[method]`` over ``cfg.inner``.

  Args:
    cfg: the configuration.
    method: a key of :data:`METHODS`.
    spe: steps per epoch (the schedules' unit).
    kappa: MARTHE's ``kappa`` (ignored by the other methods).

  Returns:
    The transformation and what it was built with: ``eta_0``, or the
    schedule (read the step's learning rate with the registry method's
    ``learning_rate(state, t, learning_rate)``).

  Raises:
    ValueError: on an unknown method, or MARTHE without ``kappa``.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}.")
  m = METHODS[method]
  learning_rate = m.learning_rate(cfg, spe)
  tx = m.registry.make(methods_lib.get_inner(cfg.inner), learning_rate, m.value(cfg, kappa))
  return tx, learning_rate
