# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Figure 1 of the paper: HD, RTHO and MARTHE on two-dimensional test functions.

Section 3 runs 500 steps of gradient descent with ``E = L`` from a fixed
point on the Beale function (plateaus and sharp walls, where HD is slow) and
on a smoothed, simplified Bukin N. 6 function (a narrow valley
``y = 0.01 x``, where RTHO's undiscounted history makes the learning rate
explode and then vanish), for a grid of hyper-learning rates ``beta``, and
reports the best objective value reached within the 500 steps.

Paper footnote 5: ``L(x, y) = sqrt(sqrt((y - 0.01 x)^2 + eps) + eps)``; the
paper does not give ``eps``, the starting points or ``eta_0``; the values
used here are in :data:`PROBLEMS` and are printed with the results.

Methods: HD (``mu = 0``), RTHO (``mu = 1``), MARTHE with adaptive ``mu`` and a
fixed ``beta`` (the ``h_mu`` curve of section 5), all on one ``beta`` grid,
and full MARTHE (adaptive ``mu`` and ``beta``, ``beta_0 = 0``) on a grid of
its step size ``kappa``. Every grid point is one vmapped run.
"""

import functools
import time
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_lab import loop
from marthe_lab import methods as methods_lib


def beale(w: jax.Array) -> jax.Array:
  """Beale: ``sum_i (c_i - x + x y^i)^2``, minimum 0 at (3, 0.5)."""
  x, y = w[0], w[1]
  return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def bukin_smoothed(w: jax.Array, eps: float = 1e-2) -> jax.Array:
  """Smoothed, simplified Bukin N. 6 (paper footnote 5).

  ``sqrt(sqrt((y - 0.01 x)^2 + eps) + eps)``: minimal, equal to
  ``sqrt(sqrt(eps) + eps)``, along the whole valley ``y = 0.01 x``.
  """
  x, y = w[0], w[1]
  return jnp.sqrt(jnp.sqrt((y - 0.01 * x) ** 2 + eps) + eps)


class Problem(NamedTuple):
  """A test function with its starting point and plot window.

  Attributes:
    name: a short name.
    fn: ``w -> scalar`` for ``w`` of shape ``[2]``.
    start: the fixed initial point.
    learning_rate: ``eta_0`` for every method.
    xlim: the plot's x range.
    ylim: the plot's y range.
    minimum: the function's minimal value (for the plots' reference line).
    note: how the problem was set up.
  """

  name: str
  fn: Callable[[jax.Array], jax.Array]
  start: tuple
  learning_rate: float
  xlim: tuple
  ylim: tuple
  minimum: float
  note: str


BUKIN_EPS = 1e-2

PROBLEMS = {
  "beale": Problem(
    name="beale",
    fn=beale,
    start=(1.0, 1.5),
    learning_rate=1e-3,
    xlim=(-0.5, 4.0),
    ylim=(-0.5, 2.0),
    minimum=0.0,
    note="Beale, start (1, 1.5), eta_0 = 1e-3",
  ),
  "bukin": Problem(
    name="bukin",
    fn=functools.partial(bukin_smoothed, eps=BUKIN_EPS),
    start=(-10.0, 2.0),
    learning_rate=1e-3,
    xlim=(-12.0, -8.0),
    ylim=(-0.6, 2.2),
    minimum=float(np.sqrt(np.sqrt(BUKIN_EPS) + BUKIN_EPS)),
    note=f"smoothed Bukin N.6, eps = {BUKIN_EPS:g}, start (-10, 2), eta_0 = 1e-3",
  ),
}


METHODS = (
  methods_lib.Variant("HD", "beta", False, 0.0),
  methods_lib.Variant("RTHO", "beta", False, 1.0),
  methods_lib.Variant("MARTHE (h_mu, fixed beta)", "beta", True),
  methods_lib.Variant("MARTHE", "kappa", True),
)
"""The methods, each over its grid (``METHODS[0]`` at ``beta = 0`` is plain
gradient descent)."""


class Trajectory(NamedTuple):
  """A gradient-descent run (arrays gain leading axes under vmap).

  Attributes:
    points: ``[steps + 1, 2]`` iterates ``w_0 .. w_T``.
    loss: ``[steps + 1]`` objective values.
    learning_rate: ``[steps]`` learning rates used.
    mu: ``[steps]`` discounts.
    hyper_lr: ``[steps]`` hyper-learning rates.
    best: the minimum of ``loss`` (non-finite values ignored).
    diverged: a non-finite iterate, or a final loss above the initial one.
  """

  points: jax.Array
  loss: jax.Array
  learning_rate: jax.Array
  mu: jax.Array
  hyper_lr: jax.Array
  best: jax.Array
  diverged: jax.Array


def descend(
  fn: Callable[[jax.Array], jax.Array],
  start: jax.Array,
  learning_rate: float,
  steps: int,
  grid_value: jax.Array,
  method: methods_lib.Variant,
) -> Trajectory:
  """``steps`` steps of gradient descent scheduled online, with ``E = L``.

  :func:`marthe_lab.loop.scan` of the registry's eq. 5 method (``'eq5'`` or
  ``'eq5_adaptive_mu'``) over ``optax.sgd``, fed ``value_fn`` only (no
  validation batch: ``E = L``).

  Args:
    fn: the objective.
    start: the initial point, shape ``[2]``.
    learning_rate: ``eta_0``.
    steps: the number of steps.
    grid_value: ``beta`` (or ``kappa`` when ``method.grid == 'kappa'``).
    method: the online method.

  Returns:
    A :class:`Trajectory`.

  Examples:
    >>> traj = descend(beale, jnp.array([1.0, 1.5]), 1e-3, 10, 1e-4, METHODS[0])
    >>> traj.points.shape, traj.learning_rate.shape
    ((11, 2), (10,))
  """
  m = methods_lib.get(method.method)
  tx = m.make(optax.sgd, learning_rate, method.hyper(grid_value))
  step = loop.make_step(tx, lambda w, _: fn(w), m.needs)
  w = jnp.asarray(start, jnp.float32)

  def record(x, w, state, out):
    del x
    stats = tuple(optax.tree.get(state, k) for k in ("learning_rate", "mu", "hyper_lr"))
    return (w, out.value, *stats)

  run = loop.scan(step, w, tx.init(w), length=steps, record=record)
  w_last, (ws, values, lrs, mus, betas) = run.params, run.records
  points = jnp.concatenate([ws, w_last[None]])
  loss = jnp.concatenate([values, fn(w_last)[None]])
  finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(points), axis=-1)
  return Trajectory(
    points=points,
    loss=loss,
    learning_rate=lrs,
    mu=mus,
    hyper_lr=betas,
    best=jnp.min(jnp.where(finite, loss, jnp.inf)),
    diverged=~jnp.all(finite) | (loss[-1] > loss[0]),
  )


@functools.partial(jax.jit, static_argnames=("problem", "steps", "method"))
def _run_grid(problem: Problem, steps: int, method: methods_lib.Variant, grid: jax.Array):
  return jax.vmap(
    lambda v: descend(
      problem.fn,
      jnp.asarray(problem.start),
      problem.learning_rate,
      steps,
      v,
      method,
    )
  )(grid)


class Figure1Result(NamedTuple):
  """All numbers of the figure-1 experiment.

  Attributes:
    steps: gradient steps per run.
    beta_grid: the ``beta`` grid (HD, RTHO, MARTHE with fixed ``beta``).
    kappa_grid: the ``kappa`` grid (full MARTHE).
    runs: ``{problem: {method: Trajectory over the method's grid}}`` (NumPy).
    constant: ``{problem: Trajectory}`` of plain gradient descent at eta_0.
    seconds: wall-clock time.
  """

  steps: int
  beta_grid: np.ndarray
  kappa_grid: np.ndarray
  runs: dict
  constant: dict
  seconds: float


def run_figure1(
  problems: Sequence[str] = ("beale", "bukin"),
  steps: int = 500,
  beta_grid: Optional[np.ndarray] = None,
  kappa_grid: Optional[np.ndarray] = None,
  methods: Sequence[methods_lib.Variant] = METHODS,
) -> Figure1Result:
  """Runs every method over its grid on every problem.

  Args:
    problems: keys of :data:`PROBLEMS`.
    steps: gradient steps (500 in the paper).
    beta_grid: hyper-learning rates (default ``10**-8 .. 10**1``, half
      decades).
    kappa_grid: step sizes of ``beta`` for full MARTHE (default
      ``10**-18 .. 10**1``, half decades).
    methods: the methods (default :data:`METHODS`).

  Returns:
    A :class:`Figure1Result`.
  """
  t0 = time.time()
  beta_grid = np.logspace(-8, 1, 19) if beta_grid is None else np.asarray(beta_grid)
  kappa_grid = np.logspace(-18, 1, 39) if kappa_grid is None else np.asarray(kappa_grid)
  runs, constant = {}, {}
  for name in problems:
    problem = PROBLEMS[name]
    runs[name] = {}
    for m in methods:
      grid = beta_grid if m.grid == "beta" else kappa_grid
      out = _run_grid(problem, steps, m, jnp.asarray(grid, jnp.float32))
      runs[name][m.name] = jax.tree.map(np.asarray, out)
    out = _run_grid(problem, steps, METHODS[0], jnp.zeros([1], jnp.float32))
    constant[name] = jax.tree.map(lambda a: np.asarray(a)[0], out)
  return Figure1Result(steps, beta_grid, kappa_grid, runs, constant, time.time() - t0)


def best_index(traj: Trajectory) -> int:
  """The grid index with the lowest best objective among non-diverged runs,
  ties (equal to 4 significant digits) broken by the final objective; ``-1``
  when every run diverged."""
  div = np.asarray(traj.diverged)
  if div.all():
    return -1
  best = np.where(div, np.inf, np.asarray(traj.best, np.float64))
  best = np.array([float(f"{b:.4g}") if np.isfinite(b) else np.inf for b in best])
  final = np.where(div, np.inf, np.asarray(traj.loss[:, -1], np.float64))
  final = np.where(np.isfinite(final), final, np.inf)
  return int(np.lexsort((final, best))[0])
