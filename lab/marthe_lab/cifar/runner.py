# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The CIFAR runs: one method and seed (:func:`run_one`), MARTHE's ``kappa``, all of them.

:func:`run` trains every method and seed of a configuration (resuming from
:class:`~marthe_lab.cifar.checkpoints.Checkpoints`), :func:`select_kappa`
picks MARTHE's step size by the paper's procedure and :func:`time_steps`
measures the per-step cost of methods side by side.
"""

import dataclasses
import math
import statistics
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marthe_lab import loop
from marthe_lab.cifar import models as cifar_models
from marthe_lab.cifar.checkpoints import Budget, Checkpoints
from marthe_lab.cifar.config import Config, load_data, make_optimizer
from marthe_lab.cifar.step import Prepared, build, make_batches, make_one_step, split


def _subsample(trace: list, max_points: int) -> tuple[list, list]:
  stride = max(1, math.ceil(len(trace) / max_points))
  steps = list(range(0, len(trace), stride))
  return steps, [trace[i] for i in steps]


def run_one(
  cfg: Config,
  prepared: Prepared,
  method: str,
  seed: int,
  kappa: Optional[float] = None,
  progress: bool = True,
  max_trace_points: int = 2000,
  checkpoints: Optional[Checkpoints] = None,
  budget: Optional[Budget] = None,
) -> dict:
  """Trains one method from one seed; returns its per-epoch record (JSON-able).

  With ``checkpoints``, a finished run is read back, an interrupted one
  continues from its last checkpoint, and the state is saved every
  ``checkpoints.every`` epochs. ``budget`` raises :class:`Stopped` (after
  saving) once it is used up.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  if checkpoints is not None:
    done = checkpoints.finished(method, seed)
    if done is not None:
      return done
  if budget is not None and budget.used_up():
    raise budget.stop(f"before {method} seed {seed}")
  spe = prepared.spe
  state, run_epoch, evaluate = build(cfg, prepared, method, seed, kappa, epoch=True)
  n_train, n_val = len(prepared.data.x_train), len(prepared.data.x_val)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  record = {
    k: []
    for k in (
      "epoch",
      "train_loss",
      "train_ce",
      "val_loss",
      "val_acc",
      "test_loss",
      "test_acc",
      "lr",
      "hypergradient",
    )
  }
  lr_trace, first_epoch, elapsed, diverged = [], 0, 0.0, False
  if checkpoints is not None:
    restored = checkpoints.restore(method, seed, state)
    if restored is not None:
      state, meta = restored
      first_epoch, record, lr_trace = meta["epoch"], meta["record"], meta["lr_trace"]
      elapsed, diverged = meta["time_s"], meta["diverged"]
      rng.bit_generator.state = meta["rng"]
  bar = tqdm(
    total=cfg.epochs * spe,
    initial=first_epoch * spe,
    desc=f"{method} seed {seed}",
    disable=not progress,
    leave=False,
    mininterval=1.0,
  )
  start = time.perf_counter() - elapsed
  for epoch in range(first_epoch, cfg.epochs):
    if diverged:
      break
    # The epoch's minibatches, drawn in the order of one draw per step.
    perm = rng.permutation(n_train)
    idx = perm[: spe * cfg.batch_size].reshape(spe, cfg.batch_size)
    vidx = np.stack([rng.integers(0, n_val, cfg.val_batch_size) for _ in range(spe)])
    state, metrics = run_epoch(
      state, prepared.device, jnp.asarray(idx), jnp.asarray(vidx), key, epoch * spe
    )
    stacked = jax.tree.map(np.asarray, metrics)
    bar.update(spe)
    bar.set_postfix(lr=f"{stacked['lr'][-1]:.3g}", loss=f"{stacked['loss'][-1]:.3f}")
    lr_trace.extend(float(v) for v in stacked["lr"])
    val_loss, val_acc = evaluate(state, prepared.val_chunks)
    test_loss, test_acc = evaluate(state, prepared.test_chunks)
    record["epoch"].append(epoch + 1)
    record["train_loss"].append(float(stacked["loss"].mean()))
    record["train_ce"].append(float(stacked["ce"].mean()))
    record["val_loss"].append(val_loss)
    record["val_acc"].append(val_acc)
    record["test_loss"].append(test_loss)
    record["test_acc"].append(test_acc)
    record["lr"].append(float(stacked["lr"][-1]))
    record["hypergradient"].append(float(stacked["hypergradient"][-1]))
    diverged = not np.isfinite(record["train_loss"][-1])
    if budget is not None:
      budget.spend()
    stop = budget is not None and budget.used_up()
    last = diverged or epoch + 1 == cfg.epochs
    if checkpoints is not None and not last and (stop or (epoch + 1) % checkpoints.every == 0):
      checkpoints.save(
        method,
        seed,
        epoch + 1,
        state,
        dict(
          epoch=epoch + 1,
          record=record,
          lr_trace=lr_trace,
          diverged=diverged,
          time_s=time.perf_counter() - start,
          rng=rng.bit_generator.state,
        ),
      )
    if stop and not last:
      bar.close()
      raise budget.stop(f"{method} seed {seed} at epoch {epoch + 1}")
  bar.close()
  steps, lrs = _subsample(lr_trace, max_trace_points)
  record.update(
    method=method,
    seed=seed,
    diverged=diverged,
    steps_per_epoch=spe,
    lr_trace_step=steps,
    lr_trace=lrs,
    time_s=time.perf_counter() - start,
  )
  if checkpoints is not None:
    checkpoints.finish(method, seed, record)
  return record


def select_kappa(cfg: Config, prepared: Prepared) -> tuple[float, str, dict]:
  """MARTHE's ``kappa``: ``(value, source, evidence)``.

  ``cfg.kappa`` when given (source ``'flag'``). Otherwise the paper's
  procedure, :func:`marthe_optax.selection.select_hyper_lr_step` (source
  ``'selection'``): a prefix of ``cfg.selection_steps`` MARTHE steps from seed
  0 for every candidate of the decimated grid
  ``cfg.selection_start``, divided by ``cfg.selection_factor`` (10) each time
  (``cfg.selection_num`` values), all in
  one compiled program (``cfg.selection_chunk`` candidates at a time), and the
  largest candidate whose training loss neither becomes non-finite nor grows
  past ``cfg.selection_growth`` times its first value.
  """
  if cfg.kappa is not None:
    return cfg.kappa, "flag", {}
  from marthe_optax import selection  # pylint: disable=g-import-not-at-top

  data = prepared.data
  rng = np.random.default_rng(10_000)
  steps, n_train, n_val = cfg.selection_steps, len(data.x_train), len(data.x_val)
  idx = np.stack([rng.permutation(n_train)[: cfg.batch_size] for _ in range(steps)])
  vidx = rng.integers(0, n_val, (steps, cfg.val_batch_size))
  keys = jax.random.split(jax.random.key(10_000), steps)
  model = cifar_models.make(cfg.model, data.num_classes, cfg.width, 0)
  graphdef, params, model_state = split(model)

  def prefix(params, model_state, data, idx, vidx, keys, kappa):
    """The training losses of the prefix at ``kappa`` (traced)."""
    tx, _ = make_optimizer(cfg, "marthe", prepared.spe, kappa)
    run = loop.scan(
      make_one_step(graphdef, cfg, "marthe", tx),
      params,
      tx.init(params),
      (idx, vidx, keys),
      batches=make_batches(cfg, data, data_mean, data_std),
      model_state=model_state,
    )
    return run.records

  data_mean, data_std = data.mean, data.std
  run = jax.tree_util.Partial(
    prefix,
    params,
    model_state,
    prepared.device,
    jnp.asarray(idx),
    jnp.asarray(vidx),
    keys,
  )
  result = selection.select_hyper_lr_step(
    run,
    start=cfg.selection_start,
    num=cfg.selection_num,
    factor=cfg.selection_factor,
    growth=cfg.selection_growth,
    batch_size=cfg.selection_chunk,
  )
  evidence = dict(
    candidates=np.asarray(result.candidates).tolist(),
    diverged=np.asarray(result.diverged).tolist(),
    max_ratio=np.asarray(result.max_ratio).tolist(),
    final_ratio=np.asarray(result.final_ratio).tolist(),
    steps=steps,
  )
  return result.value, "selection", evidence


def summarize(records: Sequence[dict], key: str) -> dict:
  """Mean and standard deviation over seeds of the final value of ``key``."""
  finals = [r[key][-1] for r in records if r[key]]
  return dict(
    mean=float(np.mean(finals)) if finals else float("nan"),
    std=float(np.std(finals)) if finals else float("nan"),
  )


def run(
  cfg: Config,
  progress: bool = True,
  log: Callable[[str], None] = print,
  checkpoint_dir: Optional[str] = None,
  resume: bool = False,
  checkpoint_every: int = 1,
  stop_after_epochs: Optional[int] = None,
) -> dict:
  """All methods and seeds of ``cfg``; returns the results (JSON-able).

  Args:
    cfg: the configuration.
    progress: show a progress bar per run.
    log: where the summary lines go.
    checkpoint_dir: if given, checkpoint every ``checkpoint_every`` epochs
      there (see :class:`Checkpoints`).
    resume: continue from the checkpoints in ``checkpoint_dir`` (finished
      runs are read back, the interrupted one continues); without it they
      are cleared first.
    checkpoint_every: epochs between checkpoints.
    stop_after_epochs: stop (after a checkpoint) once this many epochs have
      been trained in this call, by raising :class:`Stopped`; continue with
      ``resume=True``.

  Returns:
    The results: the configuration, MARTHE's ``kappa`` and its source, and
    per method the records of every seed and their final summaries.
  """
  if stop_after_epochs is not None and checkpoint_dir is None:
    raise ValueError("stop_after_epochs needs a checkpoint_dir to resume from.")
  checkpoints = (
    Checkpoints(checkpoint_dir, cfg, checkpoint_every, resume)
    if checkpoint_dir is not None
    else None
  )
  budget = Budget(stop_after_epochs)
  data = load_data(cfg)
  prepared = Prepared(cfg, data)
  saved_kappa = checkpoints.kappa() if checkpoints is not None else None
  if saved_kappa is not None:
    kappa, kappa_source, evidence = saved_kappa
  elif "marthe" in cfg.methods:
    kappa, kappa_source, evidence = select_kappa(cfg, prepared)
  else:
    kappa, kappa_source, evidence = None, "unused", {}
  if checkpoints is not None and saved_kappa is None:
    checkpoints.save_kappa(kappa, kappa_source, evidence)
  log(
    f"{cfg.dataset}/{cfg.model} (width {cfg.width}): {len(data.x_train)} train,"
    f" {len(data.x_val)} val, {len(data.x_test)} test; {prepared.spe} steps "
    f"per epoch; kappa={kappa} ({kappa_source})"
  )
  results = dict(
    config=dataclasses.asdict(cfg),
    kappa=kappa,
    kappa_source=kappa_source,
    kappa_selection=evidence,
    steps_per_epoch=prepared.spe,
    backend=jax.default_backend(),
    methods={},
  )
  for method in cfg.methods:
    records = [
      run_one(cfg, prepared, method, seed, kappa, progress, checkpoints=checkpoints, budget=budget)
      for seed in cfg.seeds
    ]
    summary = {k: summarize(records, k) for k in ("test_acc", "val_loss", "val_acc")}
    results["methods"][method] = dict(runs=records, final=summary)
    log(
      f"{method:12s} test acc {100 * summary['test_acc']['mean']:.2f} "
      f"+- {100 * summary['test_acc']['std']:.2f}%  val loss "
      f"{summary['val_loss']['mean']:.4f}  ({records[0]['time_s']:.1f}s/run)"
    )
  return results


def time_steps(
  cfg: Config,
  methods: Sequence[str] = ("staircase", "marthe"),
  steps: int = 5,
  warmup: int = 2,
  kappa: Optional[float] = None,
) -> dict:
  """Warm per-step wall time of each method, measured interleaved in one process.

  Builds every method's jitted step on the same data, compiles and warms each
  (``warmup`` steps), then runs ``steps`` rounds, each timing one step of
  every method in turn (so all see the same machine load).

  Returns:
    ``{'median_s': {method: seconds}, 'compile_s': {...}, 'ratio_to':
    {method: median / median of methods[0]}, 'batch_size': ...}``.
  """
  data = load_data(cfg)
  prepared = Prepared(cfg, data)
  # The cost of a step does not depend on kappa.
  kappa = (cfg.kappa or 0.0) if kappa is None else kappa
  runs, compile_s = {}, {}
  rng = np.random.default_rng(0)
  n_train, n_val = len(data.x_train), len(data.x_val)

  def batch():
    return (
      jnp.asarray(rng.permutation(n_train)[: cfg.batch_size]),
      jnp.asarray(rng.integers(0, n_val, cfg.val_batch_size)),
    )

  for method in methods:
    state, step, _ = build(cfg, prepared, method, 0, kappa)
    start = time.perf_counter()
    for w in range(warmup):
      state, m = step(state, prepared.device, *batch(), jax.random.key(w))
      jax.block_until_ready(m)
    compile_s[method] = time.perf_counter() - start
    runs[method] = [state, step, []]
  for r in range(steps):
    for method in methods:
      state, step, times = runs[method]
      idx, vidx = batch()
      start = time.perf_counter()
      state, m = step(state, prepared.device, idx, vidx, jax.random.key(100 + r))
      jax.block_until_ready((state, m))
      times.append(time.perf_counter() - start)
      runs[method][0] = state
  median = {m: statistics.median(runs[m][2]) for m in methods}
  return dict(
    median_s=median,
    samples_s={m: runs[m][2] for m in methods},
    compile_s=compile_s,
    ratio_to={m: median[m] / median[methods[0]] for m in methods},
    reference=methods[0],
    batch_size=cfg.batch_size,
    model=cfg.model,
    width=cfg.width,
    backend=jax.default_backend(),
  )
