# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Online learning-rate schedules from hypergradients, as Optax transformations.

Public API:

* :func:`marthe`, :func:`hd`, :func:`rtho`: the online methods, each an
  ``optax.GradientTransformationExtraArgs`` wrapping any inner Optax factory.
* :func:`marthe_multi`, :func:`per_group`: several hyperparameters at once
  (learning rates per parameter group, weight decay, momentum, ...).
* :class:`MartheState`, :class:`MultiMartheState`, :class:`Tangent`,
  :class:`Sealed`: their state; :func:`hyperparam_log` names their values.
* :mod:`marthe_optax.sharding`: shardings of the state for ``jax.jit`` over a
  device mesh (``state_sharding``, ``fsdp_sharding``).
"""

from marthe_optax import sharding
from marthe_optax._marthe import MartheState
from marthe_optax._marthe import Sealed
from marthe_optax._marthe import hd
from marthe_optax._marthe import marthe
from marthe_optax._marthe import rtho
from marthe_optax._multi import MultiMartheState
from marthe_optax._multi import hyperparam_log
from marthe_optax._multi import marthe_multi
from marthe_optax._multi import per_group
from marthe_optax._tangent import Tangent

__version__ = "0.1.0"

__all__ = (
    "MartheState",
    "MultiMartheState",
    "Sealed",
    "Tangent",
    "hd",
    "hyperparam_log",
    "marthe",
    "marthe_multi",
    "per_group",
    "rtho",
    "sharding",
)
