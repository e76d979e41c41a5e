# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Online learning-rate schedules from hypergradients, as Optax transformations.

Public API:

* :func:`marthe`, :func:`hd`, :func:`rtho`: the online methods, each an
  ``optax.GradientTransformationExtraArgs`` wrapping any inner Optax factory.
* :func:`marthe_multi`, :func:`per_group`: several hyperparameters at once
  (learning rates per parameter group, weight decay, momentum, ...).
* :class:`MartheState`, :class:`MultiMartheState`, :class:`Tangent`,
  :class:`Sealed`: their state; :func:`hyperparam_log` names their values.
* :func:`schedule_hypergradient`, :func:`lrs_opt` (module :mod:`exact`): the
  exact offline hypergradient of a whole schedule and LRS-OPT.
* :func:`select_hyper_lr_step` (module :mod:`selection`): the paper's
  decimation procedure for the hyper-learning-rate step size.
* :mod:`marthe_optax.sharding`: shardings of the state for ``jax.jit`` over a
  device mesh (``state_sharding``, ``fsdp_sharding``).
"""

from marthe_optax import exact
from marthe_optax import selection
from marthe_optax import sharding
from marthe_optax._marthe import hd
from marthe_optax._marthe import marthe
from marthe_optax._marthe import rtho
from marthe_optax._multi import marthe_multi
from marthe_optax._multi import per_group
from marthe_optax._state import MartheState
from marthe_optax._state import MultiMartheState
from marthe_optax._state import Sealed
from marthe_optax._state import hyperparam_log
from marthe_optax._tangent import Tangent
from marthe_optax.exact import LrsOptResult
from marthe_optax.exact import ScheduleHypergradient
from marthe_optax.exact import lrs_opt
from marthe_optax.exact import random_minibatches
from marthe_optax.exact import schedule_hypergradient
from marthe_optax.exact import schedule_objective
from marthe_optax.exact import train_with_schedule
from marthe_optax.selection import HyperLrSelection
from marthe_optax.selection import select_hyper_lr_step

__version__ = "0.2.0"

__all__ = (
  "HyperLrSelection",
  "LrsOptResult",
  "MartheState",
  "MultiMartheState",
  "ScheduleHypergradient",
  "Sealed",
  "Tangent",
  "exact",
  "hd",
  "hyperparam_log",
  "marthe",
  "marthe_multi",
  "lrs_opt",
  "per_group",
  "random_minibatches",
  "rtho",
  "schedule_hypergradient",
  "schedule_objective",
  "select_hyper_lr_step",
  "selection",
  "sharding",
  "train_with_schedule",
)
