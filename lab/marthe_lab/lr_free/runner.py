# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The benchmark: every method on every task, timed against constant SGD.

A :class:`Runner` compiles a method for a prepared task and executes its
seeds' runs (every candidate of the selection, or every value of a grid, as
the method needs); :func:`run_method` times it next to constant SGD and reads
the selection; :func:`run_benchmark` does it for every method and task.
"""

import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marthe_optax import selection
from marthe_lab import choose
from marthe_lab.lr_free.results import MethodResult, Timing, summarize
from marthe_lab.lr_free.methods import METHODS, Method, get_method
from marthe_lab.lr_free.runs import Run, candidates, run_rows
from marthe_lab.lr_free.tasks import TASKS, Prepared, TrainConfig, n_params, prepare


def _chunks(tree: Any, chunk: Optional[int]) -> tuple[list, int]:
  """``tree`` split along its leading axis into equal chunks, on the device.

  The last chunk is padded by repeating the last row, so that one compiled
  program serves every chunk. Done before the timed executions.

  Returns:
    The chunks and the number of rows.
  """
  n = len(jax.tree.leaves(tree)[0])
  calls = 1 if chunk is None else -(-n // chunk)
  size = -(-n // calls)
  host = jax.tree.map(np.asarray, tree)
  parts = []
  for start in range(0, n, size):
    take = np.minimum(np.arange(start, start + size), n - 1)
    parts.append(jax.device_put(jax.tree.map(lambda a: a[take], host)))
  return parts, n


def _execute(compiled, arrays, parts, hyper, n):
  """Runs every chunk at ``hyper``; the NumPy results of the first ``n`` rows."""
  outs = [compiled(arrays, part, hyper) for part in parts]
  outs = jax.tree.map(np.asarray, jax.block_until_ready(outs))
  return jax.tree.map(lambda *a: np.concatenate(a)[:n], *outs)


class Runner:
  """A method compiled for a task: executes its seeds' runs (and selection).

  Plain methods run every seed once. A method with a :attr:`Method.grid`
  runs every value of its grid for every seed (one compiled program, the
  value a traced argument). HD, RTHO and MARTHE follow the paper's
  selection over :func:`candidates`, "start high and decimate until training
  does not diverge": candidate after candidate, largest first, each trained
  for every seed over the whole horizon, until every seed has a candidate
  whose run did not diverge (the final verdict is
  :func:`~marthe_optax.selection.select_hyper_lr_step`'s, see
  :func:`~marthe_lab.choose.select_from_curves`: the same value as evaluating all candidates, and the
  winner's run is the trained model). Every run counts in the method's time.

  Attributes:
    method: the key in :data:`METHODS` (or the :class:`Method`'s name).
    spec: the :class:`Method`.
    grid: the values of ``hyper`` it may run (``[0]`` for plain methods).
    compile_s: seconds spent compiling.
  """

  def __init__(
    self,
    method: "str | Method",
    prepared: Prepared,
    config: TrainConfig,
    chunk: Optional[int] = None,
  ):
    """Compiles ``method`` for ``prepared`` (``chunk`` rows per call)."""
    self.spec = get_method(method)
    self.method = self.spec.name
    self.arrays = prepared.arrays
    self.n_seeds = len(prepared.inputs.batches)
    if self.spec.grid is not None:
      self.grid = np.asarray(self.spec.grid, np.float64)
    else:
      self.grid = candidates() if self.spec.selects else np.zeros(1)
    self.parts, _ = _chunks(prepared.inputs, chunk)
    size = len(self.parts[0].batches)
    self.hypers = [jax.device_put(np.full(size, v, np.float32)) for v in self.grid]
    t0 = time.perf_counter()
    self.compiled = run_rows.lower(
      self.arrays,
      self.parts[0],
      self.hypers[0],
      method=method,
      model=prepared.task.model,
      config=config,
    ).compile()
    self.task = prepared.task.name
    self.compile_s = time.perf_counter() - t0

  def execute(self) -> Run:
    """The runs, ``[tried, S, ...]``: every value of a :attr:`Method.grid`;
    candidates in decreasing order until every seed has a survivor; or one
    "candidate" for plain methods."""
    runs = []
    for hyper in self.hypers:
      runs.append(_execute(self.compiled, self.arrays, self.parts, hyper, self.n_seeds))
      if self.spec.grid is not None:
        continue
      if not self.spec.selects:
        break
      curves = np.stack([r.train_loss for r in runs])  # [tried, S, steps]
      verdicts = np.asarray(selection.divergence(jnp.asarray(curves)).diverged)
      if not verdicts.all(axis=0).any():  # every seed has a survivor
        break
    return jax.tree.map(lambda *a: np.stack(a), *runs)

  def timed(self) -> tuple[Run, float]:
    """:meth:`execute` and its wall time in seconds."""
    t0 = time.perf_counter()
    run = self.execute()
    return run, time.perf_counter() - t0


def run_method(
  runner: Runner,
  reference: Optional[Runner] = None,
  repeats: int = 1,
  min_timing_s: float = 0.0,
) -> MethodResult:
  """Executes a compiled method (timed), then reads each seed's selection.

  The time reference (constant SGD) is executed once right before each timed
  execution, so that a ratio compares two times measured under the same
  machine load (the machine may be shared).

  Args:
    runner: the compiled method.
    reference: the compiled constant SGD (``None`` when ``runner`` is it).
    repeats: at most this many timed executions (median kept; the runs are
      deterministic, so every execution gives the same numbers) ...
    min_timing_s: ... stopping once they add up to this many seconds.

  Returns:
    A :class:`MethodResult`.
  """
  samples, ref_samples = [], []
  while len(samples) < max(1, repeats) and (not samples or sum(samples) < min_timing_s):
    if reference is not None:
      ref_samples.append(reference.timed()[1])
    run, seconds = runner.timed()
    samples.append(seconds)
  run_s = float(np.median(samples))
  ref_s = float(np.median(ref_samples)) if ref_samples else run_s
  m, grid, n_seeds = runner.spec, runner.grid, runner.n_seeds
  tried = len(run.train_loss)
  selected = diverged = candidate_val = None
  select_s = 0.0
  if m.grid is not None:
    t0 = time.perf_counter()
    i = choose.best_in_hindsight(run.val_accuracy)
    selected = np.full(n_seeds, grid[i])
    diverged = np.asarray(run.diverged).T  # [S, C]
    candidate_val = np.asarray(run.val_accuracy).T
    run = jax.tree.map(lambda a: a[i], run)
    select_s = time.perf_counter() - t0
  elif m.selects:
    t0 = time.perf_counter()
    picks, selected, diverged = [], [], []
    for s in range(n_seeds):
      chosen, i = choose.select_from_curves(run.train_loss[:, s], grid[:tried])
      picks.append(i)
      selected.append(np.nan if chosen is None else chosen.value)
      verdict = np.ones(tried, bool) if chosen is None else np.asarray(chosen.diverged)
      # Candidates below the first survivor of every seed were not needed.
      diverged.append(np.concatenate([verdict, np.zeros(len(grid) - tried, bool)]))
    run = jax.tree.map(lambda a: a[np.asarray(picks), np.arange(n_seeds)], run)
    selected, diverged = np.asarray(selected), np.stack(diverged)
    select_s = time.perf_counter() - t0
  else:
    run = jax.tree.map(lambda a: a[0], run)
  return MethodResult(
    method=runner.method,
    run=run,
    timing=Timing(runner.compile_s, run_s, select_s, tried, ref_s, tuple(samples)),
    selected=selected,
    candidate_diverged=diverged,
    grid=grid if m.selects else None,
    candidate_val_accuracy=candidate_val,
  )


def task_methods(task: str, methods: Sequence[str]) -> list[str]:
  """The methods run on ``task``: ``'sgd'`` first, then those of ``methods``
  whose :attr:`Method.tasks` admits ``task``, in order.

  Examples:
    >>> task_methods("digits-mlp", ["prodigy", "marthe_kf_adam", "sgd"])
    ['sgd', 'prodigy']
    >>> task_methods("mnist1d-cnn", ["marthe_kf_adam"])
    ['sgd', 'marthe_kf_adam']
  """
  return ["sgd"] + [
    m for m in methods if m != "sgd" and (METHODS[m].tasks is None or task in METHODS[m].tasks)
  ]


def run_benchmark(
  tasks: Sequence[str],
  methods: Sequence[str],
  config: TrainConfig,
  seeds: Sequence[int],
  chunk: Optional[int] = None,
  repeats: int = 1,
  min_timing_s: float = 0.0,
  progress: Optional[Callable[[str], None]] = None,
) -> dict:
  """Every method on every task; constant SGD first (the time reference).

  Args:
    tasks: keys of :data:`TASKS`.
    methods: keys of :data:`METHODS` (``'sgd'`` is always run, first; a
      method whose :attr:`Method.tasks` excludes a task skips it).
    config: the inner problem shared by all tasks and methods.
    seeds: the seeds.
    chunk: rows per compiled call (``None``: all at once).
    repeats: timed executions of each method, at most ...
    min_timing_s: ... until they add up to this many seconds.
    progress: called with ``'task/method'`` after each finished unit.

  Returns:
    ``{task: {'dataset', 'model', 'n_params', 'setup_s', 'methods': [...]}}``.
  """
  for name in methods:
    if name not in METHODS:
      raise ValueError(f"Unknown method {name!r}; choose from {list(METHODS)}.")
  out = {}
  for task_name in tasks:
    task = TASKS[task_name]
    prepared = prepare(task, config, seeds)
    results, reference = [], None
    for name in task_methods(task_name, methods):
      runner = Runner(name, prepared, config, chunk)
      results.append(run_method(runner, reference, repeats, min_timing_s))
      reference = reference or runner  # constant SGD, compiled first
      if progress is not None:
        progress(f"{task_name}/{name}")
    sgd = results[0].timing
    out[task_name] = dict(
      dataset=prepared.dataset.describe(),
      model=task.model,
      n_params=n_params(task.model, prepared.dataset, config),
      setup_s=prepared.setup_s,
      methods=[summarize(r, sgd) for r in results],
    )
  return out
