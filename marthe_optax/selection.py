# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Choosing MARTHE's hyper-learning-rate step size by decimation.

MARTHE's last hyperparameter, the step size ``kappa`` of the hyper-learning
rate (``hyper_lr_step``), has units of 1 / hypergradient**2 and no
task-independent good value. The paper (end of section 4) observes that a too
large value makes training diverge within the first few steps, while among the
values that do not diverge the final performance is rather stable, and
suggests to "start with a high enough beta and aggressively diminish it (e.g.
decimating it) until the learning system does not diverge".

:func:`select_hyper_lr_step` does exactly that, but instead of a sequential
retry loop it trains a short prefix for every candidate of the decimated grid
``start, start / 10, start / 100, ...`` at once, with ``jax.vmap`` under one
``jax.jit``, and returns the largest candidate that does not diverge, together
with the loss curves as evidence. The same procedure picks a fixed
hyper-learning rate ``beta`` for :func:`marthe_optax.hd` or
:func:`marthe_optax.rtho`: the function is generic over what the user's
``run`` does with the scalar.

Cost: one short training run per candidate, batched: the time of one run on a
vectorised machine (``num`` runs' worth of FLOPs) and ``num`` times its memory;
``batch_size`` trades memory for time by evaluating the candidates in chunks
(``jax.lax.map``), still within one compiled program.

References:
  Donini et al., `Scheduling the Learning Rate via Hypergradients: New
  Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
"""

import functools
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np


class Divergence(NamedTuple):
  """The divergence test of loss curves (see :func:`divergence`).

  Attributes:
    diverged: ``True`` where a curve has a non-finite loss or grows past
      ``growth`` times its first value.
    final_ratio: last loss over first loss.
    max_ratio: largest loss over first loss (``nan`` or ``inf`` for a
      non-finite curve).
  """

  diverged: jax.Array
  final_ratio: jax.Array
  max_ratio: jax.Array


class HyperLrSelection(NamedTuple):
  """What :func:`select_hyper_lr_step` returns.

  Attributes:
    value: the selected step size, the largest candidate that did not
      diverge, as a Python float.
    candidates: the values tried, shape ``[num]``, in the order evaluated,
      as given (a float64 NumPy array; ``run`` received them in JAX's
      default float dtype).
    diverged: a boolean mask over the candidates.
    final_ratio: per candidate, last loss over first loss (below 1: the
      prefix made progress).
    max_ratio: per candidate, largest loss over first loss (the divergence
      criterion is ``max_ratio > growth`` or a non-finite loss).
    losses: the loss curves, shape ``[num, steps]``, the evidence.
  """

  value: float
  candidates: np.ndarray
  diverged: jax.Array
  final_ratio: jax.Array
  max_ratio: jax.Array
  losses: jax.Array


def decimated_grid(start: float, num: int, factor: float = 10.0) -> np.ndarray:
  """The candidates ``start, start / factor, ..., start / factor**(num - 1)``.

  Args:
    start: the largest candidate, ``> 0``.
    num: the number of candidates, ``>= 1``.
    factor: the ratio between consecutive candidates, ``> 1``.

  Returns:
    A decreasing float64 NumPy array of shape ``[num]``.

  Raises:
    ValueError: on a non-positive ``start``, ``num < 1`` or ``factor <= 1``.

  Examples:
    >>> from marthe_optax import selection
    >>> selection.decimated_grid(1e-2, 3).tolist()
    [0.01, 0.001, 0.0001]
  """
  if not (np.isfinite(start) and start > 0) or num < 1 or not factor > 1:
    raise ValueError(
      f"Need start > 0, num >= 1 and factor > 1; got start={start}, num={num}, factor={factor}."
    )
  return start / float(factor) ** np.arange(num, dtype=np.float64)


def divergence(losses: jax.Array, growth: float = 2.0) -> Divergence:
  """Which loss curves diverge: a non-finite loss, or growth past ``growth``.

  Args:
    losses: loss curves of shape ``[..., steps]`` (positive losses, such as a
      cross-entropy or a squared error); the first entry of each curve is its
      reference value.
    growth: a curve diverges when any loss exceeds ``growth`` times the first.

  Returns:
    A :class:`Divergence`, each field of shape ``losses.shape[:-1]``.
  """
  first = losses[..., :1]
  ratio = losses / first
  nonfinite = ~jnp.all(jnp.isfinite(losses), axis=-1)
  grew = jnp.any(losses > growth * first, axis=-1)
  return Divergence(
    diverged=nonfinite | grew,
    final_ratio=ratio[..., -1],
    max_ratio=jnp.max(ratio, axis=-1),
  )


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _evaluate(
  run: jax.tree_util.Partial,
  candidates: jax.Array,
  growth: jax.Array,
  batch_size: Optional[int],
) -> tuple[jax.Array, Divergence]:
  """All candidates' loss curves (one vmapped program) and their divergence."""

  def one(candidate):
    losses = jnp.asarray(run(candidate))
    if losses.ndim != 1 or losses.shape[0] < 1:
      raise ValueError(
        "run(value) must return the per-step training losses, a non-empty "
        f"1-D array [steps]; got shape {losses.shape}."
      )
    return losses

  if batch_size is None:
    losses = jax.vmap(one)(candidates)
  else:
    losses = jax.lax.map(one, candidates, batch_size=batch_size)
  return losses, divergence(losses, growth)


def select_hyper_lr_step(
  run: Callable[[jax.Array], jax.Array],
  candidates: Optional[Union[Sequence[float], jax.Array]] = None,
  *,
  start: float = 1.0,
  num: int = 10,
  factor: float = 10.0,
  growth: float = 2.0,
  batch_size: Optional[int] = None,
) -> HyperLrSelection:
  """The paper's step-size selection: the largest value that does not diverge.

  Evaluates ``run`` on every candidate at once (``jax.vmap`` under one
  ``jax.jit``; ``run`` is traced once) and returns the largest candidate
  whose loss curve stays finite and never exceeds ``growth`` (default 2.0)
  times its first value. With the default decimated grid this is the paper's
  "start with a high enough value and decimate it until the learning system
  does not diverge" (end of section 4), without the sequential retries.

  ``run`` receives the candidate as a traced scalar and decides what it
  means: MARTHE's ``hyper_lr_step`` (``kappa``), or the fixed hyper-learning
  rate ``beta`` of :func:`marthe_optax.hd` and :func:`marthe_optax.rtho`.
  Build the optimizer inside ``run`` (the factories accept traced values) and
  train with ``jax.lax.scan`` for a short prefix: divergence shows within the
  first few steps when the value is too large (a few hundred steps is
  typical). A ``run`` closing over large arrays embeds them in the compiled
  program as constants; a ``jax.tree_util.Partial(fn, data)`` passes them as
  arguments instead. This is a host-side function (it returns a Python float
  and may raise): call it outside ``jax.jit``.

  Args:
    run: ``run(value) -> losses``, the per-step training losses ``[steps]``
      of a short run with the given step size. Positive losses.
    candidates: the values to try; defaults to
      ``decimated_grid(start, num, factor)``.
    start: the largest default candidate (the default grid, 1 down to 1e-9,
      covers the 1e-7 and 1e-8 that the paper selected on CIFAR).
    num: the number of default candidates.
    factor: the ratio between consecutive default candidates (10: decimation).
    growth: the loss growth, relative to the first loss of the prefix, that
      counts as divergence (default 2.0). Divergence is usually explosive
      (non-finite within a few steps); raise ``growth`` when minibatch noise
      alone can double the loss, or return losses on a fixed batch.
    batch_size: evaluate the candidates in vmapped chunks of this size
      (``jax.lax.map``) to bound memory; ``None`` evaluates all at once.

  Returns:
    A :class:`HyperLrSelection`: the selected ``value``, the candidates, the
    ``diverged`` mask, the final and maximal loss ratios and the loss curves.

  Raises:
    ValueError: if every candidate diverges (lower ``start`` or pass smaller
      candidates), on empty, negative or non-finite candidates, on
      ``growth <= 1``, or when ``run`` does not return a 1-D loss curve.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> from marthe_optax import selection
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (50, 32, 4))
    >>> batches = (x, x @ jnp.array([1.0, -1.0, 2.0, 0.5]))
    >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
    >>> def run(kappa):
    ...   tx = mo.marthe(optax.sgd, learning_rate=0.01, hyper_lr_step=kappa)
    ...   def step(carry, batch):
    ...     w, state = carry
    ...     value, grads = jax.value_and_grad(loss)(w, batch)
    ...     updates, state = tx.update(
    ...         grads, state, w, value_fn=lambda p: loss(p, batch))
    ...     return (optax.apply_updates(w, updates), state), value
    ...   w0 = jnp.zeros(4)
    ...   return jax.lax.scan(step, (w0, tx.init(w0)), batches)[1]
    >>> result = selection.select_hyper_lr_step(run)  # 1, 0.1, ..., 1e-9
    >>> bool(result.diverged[0]), result.value < 1.0
    (True, True)
    >>> tx = mo.marthe(optax.sgd, 0.01, hyper_lr_step=result.value)
  """
  if candidates is None:
    candidates = decimated_grid(start, num, factor)
  candidates = np.asarray(candidates, dtype=np.float64)
  if (
    candidates.ndim != 1
    or candidates.size == 0
    or not np.all(np.isfinite(candidates))
    or np.any(candidates < 0)
  ):
    raise ValueError(
      f"candidates must be a non-empty 1-D array of finite non-negative values; got {candidates!r}."
    )
  if not growth > 1:
    raise ValueError(f"growth must be > 1; got {growth}.")
  if not isinstance(run, jax.tree_util.Partial):
    run = jax.tree_util.Partial(run)
  # The run sees the candidates in JAX's default float dtype; the selection
  # returns the value exactly as given.
  losses, div = _evaluate(
    run,
    jnp.asarray(candidates, dtype=float),
    jnp.asarray(growth),
    batch_size,
  )
  diverged = np.asarray(div.diverged)
  if diverged.all():
    raise ValueError(
      f"Every candidate diverged (tried {candidates.max():.3g} down to "
      f"{candidates.min():.3g}, growth={growth}). Lower `start` (or pass "
      "smaller candidates), or check the run at a step size of 0."
    )
  value = float(candidates[~diverged].max())
  return HyperLrSelection(
    value=value,
    candidates=candidates,
    diverged=div.diverged,
    final_ratio=div.final_ratio,
    max_ratio=div.max_ratio,
    losses=losses,
  )
