# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Online learning-rate schedules from hypergradients, as Optax transformations.

Public API:

* :func:`marthe`, :func:`hd`, :func:`rtho`: the online methods, each an
  ``optax.GradientTransformationExtraArgs`` wrapping any inner Optax factory.
* :class:`MartheState`, :class:`Tangent`, :class:`Sealed`: their state.
* :mod:`marthe_optax.sharding`: shardings of the state for ``jax.jit`` over a
  device mesh (``state_sharding``, ``fsdp_sharding``).
"""

from marthe_optax import sharding
from marthe_optax._marthe import MartheState
from marthe_optax._marthe import Sealed
from marthe_optax._marthe import hd
from marthe_optax._marthe import marthe
from marthe_optax._marthe import rtho
from marthe_optax._tangent import Tangent

__version__ = "0.1.0"

__all__ = (
    "MartheState",
    "Sealed",
    "Tangent",
    "hd",
    "marthe",
    "rtho",
    "sharding",
)
