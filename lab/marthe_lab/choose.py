# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Choosing a grid value from runs already trained: the paper's selection and
the best value in hindsight.

The experiments train every candidate of a grid anyway (vmapped), so the
selection of :func:`marthe_optax.selection.select_hyper_lr_step` costs no
training here: its ``run`` returns the curve already computed for the
candidate (:func:`select_from_curves`).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from marthe_optax import selection


def _curve(curves: jax.Array, log_grid: jax.Array, value: jax.Array) -> jax.Array:
  """The curve of the grid value nearest (in log scale) to ``value``."""
  return curves[jnp.argmin(jnp.abs(log_grid - jnp.log(value)))]


def select_from_curves(
  curves: np.ndarray, grid: np.ndarray, growth: float = 2.0
) -> tuple[Optional[selection.HyperLrSelection], int]:
  """The paper's selection over runs already trained, one per grid value.

  :func:`marthe_optax.selection.select_hyper_lr_step` over ``grid``, largest
  first, whose ``run`` returns the training-loss curve already computed for
  the candidate: the largest value whose loss stays finite and at most
  ``growth`` times its first value over the curve.

  Args:
    curves: ``[len(grid), steps]`` training losses, row ``i`` that of
      ``grid[i]`` (any order of the grid).
    grid: the candidates (positive).
    growth: the divergence threshold.

  Returns:
    The selection and the index in ``grid`` of the selected value; ``(None,
    i)`` with ``i`` the smallest value's index when every candidate diverged.

  Examples:
    >>> import numpy as np
    >>> curves = np.array([[1.0, 5.0], [1.0, 0.5], [1.0, 0.9]])  # 1 diverges
    >>> chosen, i = select_from_curves(curves, np.array([1.0, 0.1, 0.01]))
    >>> float(chosen.value), i
    (0.1, 1)
  """
  grid = np.asarray(grid, np.float64)
  log_grid = jnp.log(jnp.asarray(grid, jnp.float32))
  run = jax.tree_util.Partial(_curve, jnp.asarray(curves), log_grid)
  try:
    chosen = selection.select_hyper_lr_step(run, candidates=np.sort(grid)[::-1], growth=growth)
  except ValueError:  # every candidate diverged
    return None, int(np.argmin(grid))
  return chosen, int(np.argmin(np.abs(np.log(grid) - np.log(chosen.value))))


def diverged(curves: np.ndarray, growth: float = 2.0) -> np.ndarray:
  """:func:`marthe_optax.selection.divergence`'s verdict, in NumPy.

  Args:
    curves: ``[..., steps]`` loss curves.
    growth: a curve diverges when a loss exceeds ``growth`` times its first,
      or is not finite.

  Returns:
    A boolean array of shape ``curves.shape[:-1]``.

  Examples:
    >>> import numpy as np
    >>> diverged(np.array([[1.0, 2.5], [1.0, 1.5], [1.0, np.nan]])).tolist()
    [True, False, True]
  """
  curves = np.asarray(curves)
  with np.errstate(invalid="ignore"):
    grew = np.any(curves > growth * curves[..., :1], axis=-1)
  return ~np.all(np.isfinite(curves), axis=-1) | grew


def best_in_hindsight(val_accuracy: np.ndarray) -> int:
  """The index of the grid value with the best mean final validation accuracy.

  Args:
    val_accuracy: ``[len(grid), S]`` final validation accuracies, one row
      per grid value (``nan`` counts as the worst).

  Returns:
    The row whose mean over seeds is the largest; ties go to the first such
    row.

  Examples:
    >>> import numpy as np
    >>> best_in_hindsight(np.array([[0.5, 0.7], [0.8, 0.6], [0.9, np.nan]]))
    1
  """
  mean = np.mean(np.asarray(val_accuracy, np.float64), axis=-1)
  return int(np.argmax(np.where(np.isnan(mean), -np.inf, mean)))
