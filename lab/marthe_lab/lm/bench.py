# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The language-model benchmark: every method compiled, selected or tuned, timed against AdamW."""

import functools
import time
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_lab.lm.corpus import Corpus, pydoc_corpus
from marthe_lab.lm.model import Config
from marthe_lab.lm.runs import Data, Inputs, block_loss, graphdef, seed_inputs, train
from marthe_lab.lm.methods import METHODS, Method
from marthe_lab.lm.results import Result, Run, Timing, summarize


def _train(method: Method, gdef, data, config, inputs, hyper, steps=None):
  tx = method.build(config, hyper)
  return train(
    gdef,
    tx,
    data,
    config,
    inputs,
    needs=method.registry.needs,
    steps=steps,
    read_lr=lambda s, t: method.lr(s, t, config, hyper),
    eval_params=method.registry.eval_params,
  )


def run_one(
  method: Method, gdef, data: Data, config: Config, inputs: Inputs, hyper: jax.Array
) -> Run:
  """A whole run of ``method`` and its final evaluation."""
  params, state, trace = _train(method, gdef, data, config, inputs, hyper)
  ev = lambda block, starts: block_loss(gdef, params, inputs.rest, block, starts, config.context)
  counters = {
    name: jnp.asarray(optax.tree.get(state, name + "_count", 0), jnp.int32)
    for name in ("nonfinite", "safeguard", "repaired")
  }
  return Run(trace, ev(data.val, data.val_starts), ev(data.test, data.test_starts), counters)


@functools.partial(jax.jit, static_argnames=("method", "config", "vocab"))
def run_rows(data, inputs, hypers, *, method: str, config: Config, vocab: int) -> Run:
  """:func:`run_one` vmapped over the seeds (row ``i``: ``inputs[i]``, ``hypers[i]``)."""
  gdef = graphdef(vocab, config)
  return jax.vmap(lambda i, h: run_one(METHODS[method], gdef, data, config, i, h))(inputs, hypers)


def _prefix_losses(method: str, config: Config, vocab: int, data, inputs, value):
  """The training losses of a ``config.select_steps`` prefix at ``hyper = value``."""
  gdef = graphdef(vocab, config)
  return _train(METHODS[method], gdef, data, config, inputs, value, steps=config.select_steps)[
    2
  ].train_loss


class Prepared(NamedTuple):
  """The corpus on the device and every seed's inputs."""

  corpus: Corpus
  data: Data
  inputs: Inputs  # leading axis S


def prepare(config: Config, corpus: Optional[Corpus] = None) -> Prepared:
  """Loads the corpus (``pydoc_data.topics`` by default) and draws the seeds' inputs."""
  corpus = corpus or pydoc_corpus()
  data = Data.from_corpus(corpus, config)
  v = len(corpus.vocab)
  inputs = jax.jit(jax.vmap(lambda s: seed_inputs(s, v, data, config)))(jnp.arange(config.seeds))
  return Prepared(corpus, data, jax.block_until_ready(inputs))


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return jax.tree.map(np.asarray, out), time.perf_counter() - t0


class Runner:
  """A method compiled for a prepared benchmark."""

  def __init__(self, method: str, prepared: Prepared, config: Config):
    self.spec, self.config, self.prepared = METHODS[method], config, prepared
    self.vocab = len(prepared.corpus.vocab)
    s = config.seeds
    rows = jnp.zeros(s, jnp.float32)
    t0 = time.perf_counter()
    self.compiled = run_rows.lower(
      prepared.data, prepared.inputs, rows, method=method, config=config, vocab=self.vocab
    ).compile()
    self.compile_s = time.perf_counter() - t0
    # The selection's prefix runs: one function for every seed (one compilation).
    self.prefix = jax.tree_util.Partial(
      functools.partial(_prefix_losses, method, config, self.vocab), prepared.data
    )

  def run(self, hypers: np.ndarray) -> tuple[Run, float]:
    """Every seed's run at ``hypers[S]`` and the wall time."""
    return _timed(
      self.compiled, self.prepared.data, self.prepared.inputs, jnp.asarray(hypers, jnp.float32)
    )

  def select(self) -> tuple[np.ndarray, np.ndarray, float]:
    """Per seed, :func:`marthe_optax.select_hyper_lr_step` on its default grid.

    Returns:
      The selected values ``[S]`` (the smallest candidate where every one
      diverged), the verdicts ``[S, C]`` and the seconds spent (compilation
      of the prefix program included).
    """
    t0 = time.perf_counter()
    values, verdicts = [], []
    for s in range(self.config.seeds):
      inputs = jax.tree.map(lambda a: a[s], self.prepared.inputs)
      run = jax.tree_util.Partial(self.prefix.func, *self.prefix.args, inputs)
      try:
        chosen = mo.select_hyper_lr_step(run)
        values.append(chosen.value)
        verdicts.append(np.asarray(chosen.diverged))
      except ValueError:  # every candidate diverged
        grid = mo.selection.decimated_grid(1.0, 10)
        values.append(grid.min())
        verdicts.append(np.ones(len(grid), bool))
    return np.asarray(values), np.stack(verdicts), time.perf_counter() - t0


def run_method(runner: Runner, reference: Optional[Runner]) -> Result:
  """Selects or tunes ``runner``'s method as its definition says, then trains every seed.

  The reference (constant AdamW) runs once right before the method's runs, so
  that their ratio compares two times measured under the same machine load.
  """
  m, c = runner.spec, runner.config
  zeros = np.zeros(c.seeds, np.float32)
  ref_s = reference.run(zeros)[1] if reference is not None else None
  select_s, hyper, diverged, grid_val = 0.0, np.full(c.seeds, np.nan), None, None
  if m.tune == "grid":
    runs, run_s = [], 0.0
    for peak in c.peaks:
      run, seconds = runner.run(np.full(c.seeds, peak))
      runs.append(run)
      run_s += seconds
    grid_val = np.stack([r.val_loss for r in runs])  # [P, S]
    mean = np.where(np.isfinite(grid_val), grid_val, np.inf).mean(axis=1)
    best = int(np.argmin(mean))
    run, hyper, n_runs = runs[best], np.full(c.seeds, c.peaks[best]), len(c.peaks)
    settings = len(c.peaks)
  else:
    if m.tune is not None:
      hyper, diverged, select_s = runner.select()
    run, run_s = runner.run(np.nan_to_num(hyper))
    n_runs, settings = 1, 1 + (0 if diverged is None else diverged.shape[1])
  return Result(
    m.name,
    run,
    Timing(runner.compile_s, select_s, run_s, n_runs, run_s if ref_s is None else ref_s),
    hyper,
    settings,
    grid_val,
    diverged,
  )


def run_benchmark(
  config: Config,
  methods: Sequence[str],
  progress: Optional[Callable[[str], None]] = None,
  corpus: Optional[Corpus] = None,
) -> dict:
  """Every method, constant AdamW first (the time reference).

  Args:
    config: the configuration (:data:`marthe_lab.lm.PRESETS`).
    methods: keys of :data:`METHODS` (``'adamw'`` always runs, first).
    progress: called with each method's name when it is done.
    corpus: the corpus (``pydoc_data.topics`` by default).

  Returns:
    ``{'corpus', 'n_params', 'setup_s', 'methods': [summary, ...]}``.
  """
  names = ["adamw"] + [m for m in methods if m != "adamw"]
  for name in names:
    if name not in METHODS:
      raise ValueError(f"Unknown method {name!r}; choose from {list(METHODS)}.")
  t0 = time.perf_counter()
  prepared = prepare(config, corpus)
  setup_s = time.perf_counter() - t0
  results, reference = [], None
  for name in names:
    runner = Runner(name, prepared, config)
    results.append(run_method(runner, reference))
    reference = reference or runner
    if progress is not None:
      progress(name)
  c = prepared.corpus
  return dict(
    corpus=dict(vocab=len(c.vocab), train=len(c.train), val=len(c.val), test=len(c.test)),
    n_params=int(sum(np.prod(a.shape[1:]) for a in jax.tree.leaves(prepared.inputs.params))),
    setup_s=setup_s,
    methods=[summarize(r, results[0].timing, config) for r in results],
  )
