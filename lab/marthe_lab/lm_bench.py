# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Learning-rate methods on the character transformer of :mod:`~marthe_lab.lm`.

One protocol for every method: the same seeds (``w_0``, training windows,
validation windows), the same horizon ``Config.steps`` and, wherever a method
takes a learning rate, ``eta_0 = Config.learning_rate``. AdamW (Optax defaults
otherwise) is the inner optimizer of every hypergradient method. For the
methods that read a validation signal, ``E`` is the validation loss of the
step's fresh validation window batch. The methods (:data:`METHODS`):

* AdamW at the constant ``eta_0`` (the time reference);
* AdamW with linear warm-up + cosine decay (to a tenth of the peak), its peak
  tuned over ``Config.peaks`` by the final validation loss (mean over seeds):
  every grid run counts in its cost;
* ``optax.contrib``'s ``prodigy``, ``dadapt_adamw`` and ``schedule_free_adamw``
  at their defaults (schedule-free evaluated at
  ``optax.contrib.schedule_free_eval_params``);
* HD over AdamW with a fixed ``beta``, and the paper's MARTHE over AdamW with
  the step size ``kappa``: each chosen per seed by
  :func:`marthe_optax.select_hyper_lr_step` on its default decimated grid
  ``1, 0.1, ..., 1e-9`` (largest candidate whose training loss over a prefix
  of ``Config.select_steps`` steps stays finite and below twice its first
  value), then trained over the whole horizon; the prefix runs count in the
  cost;
* MARTHE's knob-free mode at the package defaults, fed ``value=`` the
  training loss (for its safeguard): over AdamW from ``eta_0``; on top of
  the warm-up + cosine shape (``schedule=``, unit peak: MARTHE adapts the
  scale, from ``eta_0``); and with one learning rate per layer
  (``marthe_multi`` over ``per_group(adamw, group_labels)``).

Each method reports its final validation and test loss in bits per
character, the values its user sets, the runs it needed, its cost against
constant AdamW measured in the same process, its validation curve and its
learning-rate trajectory.
"""

import functools
import math
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_lab import lm
from marthe_lab import report

Config = lm.Config


def warmup_cosine(config: Config, peak: Any = 1.0) -> optax.Schedule:
  """Linear warm-up from 0 over ``config.warmup`` steps, cosine decay to ``peak / 10``.

  ``peak`` times the unit-peak shape ``optax.warmup_cosine_decay_schedule(0.,
  1., warmup, steps, end_value=0.1)`` (so that ``peak`` may be traced).
  """
  shape = optax.warmup_cosine_decay_schedule(
      0.0, 1.0, config.warmup, config.steps, end_value=0.1)
  return lambda count: peak * shape(count)


def _get(state, name):
  return jnp.asarray(optax.tree.get(state, name), jnp.float32)


class Method(NamedTuple):
  """One competitor.

  Attributes:
    name: a short key.
    label: the name in tables and plots.
    family: ``'schedule'``, ``'lr-free'`` or ``'hypergradient'``.
    build: ``build(config, hyper) -> GradientTransformationExtraArgs``;
      ``hyper`` is the grid's peak or the selected ``beta`` / ``kappa``.
    lr: ``lr(state, t, config, hyper)``, the rate step ``t`` used (a vector
      of per-group rates for per-layer methods; ``nan`` if not exposed).
    feed: what the update receives besides the gradient (see
      :func:`marthe_lab.lm.train`).
    user_set: the values the user writes down (no library default, or a
      default changed); values a procedure picks are not counted.
    tune: ``None``, ``'grid'`` (over ``Config.peaks``) or ``'beta'`` /
      ``'kappa'`` (chosen by the selection).
    eval_params: ``eval_params(state, params)`` or ``None``.
    notes: a remark for the report.
  """

  name: str
  label: str
  family: str
  build: Callable[[Config, Any], optax.GradientTransformationExtraArgs]
  lr: Callable[[Any, jax.Array, Config, Any], jax.Array]
  feed: str = "none"
  user_set: tuple = ()
  tune: Optional[str] = None
  eval_params: Optional[Callable[[Any, Any], Any]] = None
  notes: str = ""


_nan = lambda s, t, c, h: jnp.float32(jnp.nan)
_state_lr = lambda s, t, c, h: _get(s, "learning_rate")
_estim_lr = lambda s, t, c, h: _get(s, "estim_lr")


def _sf_eval(state, params):
  return optax.contrib.schedule_free_eval_params(state, params)


METHODS = {m.name: m for m in (
    Method("adamw", "AdamW constant", "schedule",
           lambda c, h: optax.adamw(c.learning_rate),
           lambda s, t, c, h: jnp.float32(c.learning_rate),
           user_set=("learning_rate",)),
    Method("cosine", "AdamW warm-up + cosine (peak tuned)", "schedule",
           lambda c, h: optax.adamw(warmup_cosine(c, h)),
           lambda s, t, c, h: jnp.asarray(warmup_cosine(c, h)(t), jnp.float32),
           user_set=("peak grid", "warmup_steps", "decay_steps", "end_value"),
           tune="grid", notes="peak picked by mean final validation loss"),
    Method("prodigy", "Prodigy", "lr-free",
           lambda c, h: optax.contrib.prodigy(), _estim_lr,
           notes="step = d * lr (lr = 1)"),
    Method("dadapt", "D-Adapt AdamW", "lr-free",
           lambda c, h: optax.contrib.dadapt_adamw(), _estim_lr,
           notes="step = d * lr (lr = 1)"),
    Method("schedule_free", "Schedule-free AdamW", "lr-free",
           lambda c, h: optax.contrib.schedule_free_adamw(), _nan,
           eval_params=_sf_eval,
           notes="defaults (lr 0.0025); evaluated at schedule_free_eval_params"),
    Method("hd", "HD (AdamW)", "hypergradient",
           lambda c, h: mo.hd(optax.adamw, learning_rate=c.learning_rate, hyper_lr=h),
           _state_lr, feed="objective", user_set=("learning_rate",), tune="beta",
           notes="fixed beta from select_hyper_lr_step"),
    Method("marthe", "MARTHE, paper (AdamW, kappa selected)", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate,
                                  hyper_lr_step=h),
           _state_lr, feed="objective", user_set=("learning_rate",), tune="kappa",
           notes="eq. 5, adaptive mu and beta; kappa from select_hyper_lr_step"),
    Method("marthe_kf", "MARTHE knob-free (AdamW)", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate),
           _state_lr, feed="objective+value", user_set=("learning_rate",),
           notes="package defaults; value = training loss for the safeguard"),
    Method("marthe_kf_cosine", "MARTHE knob-free on warm-up + cosine", "hypergradient",
           lambda c, h: mo.marthe(optax.adamw, learning_rate=c.learning_rate,
                                  schedule=warmup_cosine(c)),
           lambda s, t, c, h: _get(s, "learning_rate") * warmup_cosine(c)(t),
           feed="objective+value",
           user_set=("learning_rate", "warmup_steps", "decay_steps", "end_value"),
           notes="the unit-peak shape; MARTHE adapts its scale from eta_0"),
    Method("marthe_layers", "MARTHE knob-free, per-layer rates", "hypergradient",
           lambda c, h: mo.marthe_multi(
               mo.per_group(optax.adamw, lm.group_labels),
               {"learning_rate": {g: c.learning_rate for g in lm.groups(c)}}),
           lambda s, t, c, h: jnp.stack([
               jnp.asarray(v, jnp.float32)
               for v in jax.tree.leaves(optax.tree.get(s, "hyperparams"))]),
           feed="objective+value", user_set=("learning_rate", "groups"),
           notes="marthe_multi(per_group(adamw)): embeddings, each block, final norm"),
)}


# ----------------------------------------------------------------------------
# Runs.


class Run(NamedTuple):
  """One seed's run (leading axes when vmapped)."""

  trace: lm.Trace
  val_loss: jax.Array  # final, nats, every non-overlapping validation window
  test_loss: jax.Array  # final, nats, every non-overlapping test window
  counters: dict  # MARTHE's nonfinite / safeguard / repaired counts (0 elsewhere)


def _train(method: Method, gdef, data, config, inputs, hyper, steps=None):
  tx = method.build(config, hyper)
  return lm.train(
      gdef, tx, data, config, inputs, feed=method.feed, steps=steps,
      read_lr=lambda s, t: method.lr(s, t, config, hyper),
      eval_params=method.eval_params)


def run_one(method: Method, gdef, data: lm.Data, config: Config,
            inputs: lm.Inputs, hyper: jax.Array) -> Run:
  """A whole run of ``method`` and its final evaluation."""
  params, state, trace = _train(method, gdef, data, config, inputs, hyper)
  ev = lambda block, starts: lm.block_loss(gdef, params, inputs.rest, block, starts, config.context)
  counters = {name: jnp.asarray(optax.tree.get(state, name + "_count", 0), jnp.int32)
              for name in ("nonfinite", "safeguard", "repaired")}
  return Run(trace, ev(data.val, data.val_starts), ev(data.test, data.test_starts), counters)


@functools.partial(jax.jit, static_argnames=("method", "config", "vocab"))
def run_rows(data, inputs, hypers, *, method: str, config: Config, vocab: int) -> Run:
  """:func:`run_one` vmapped over the seeds (row ``i``: ``inputs[i]``, ``hypers[i]``)."""
  gdef = lm.graphdef(vocab, config)
  return jax.vmap(lambda i, h: run_one(METHODS[method], gdef, data, config, i, h))(inputs, hypers)


def _prefix_losses(method: str, config: Config, vocab: int, data, inputs, value):
  """The training losses of a ``config.select_steps`` prefix at ``hyper = value``."""
  gdef = lm.graphdef(vocab, config)
  return _train(METHODS[method], gdef, data, config, inputs, value,
                steps=config.select_steps)[2].train_loss


class Timing(NamedTuple):
  """Seconds: compiling, selecting, the runs; the reference run measured just before."""

  compile_s: float
  select_s: float
  run_s: float  # every full run (the whole grid for 'cosine')
  runs: int  # full runs per seed
  reference_s: float

  @property
  def total_s(self) -> float:
    return self.compile_s + self.select_s + self.run_s


class Result(NamedTuple):
  """What one method produced: the reported run per seed and its cost."""

  method: str
  run: Run  # NumPy, leading axis S
  timing: Timing
  hyper: np.ndarray  # [S] the peak / beta / kappa used (nan if none)
  settings: int  # settings trained per seed (grid points, candidates + 1)
  grid_val: Optional[np.ndarray] = None  # [len(peaks), S] the grid's final val losses
  diverged: Optional[np.ndarray] = None  # [S, C] the selection's verdicts


class Prepared(NamedTuple):
  """The corpus on the device and every seed's inputs."""

  corpus: lm.Corpus
  data: lm.Data
  inputs: lm.Inputs  # leading axis S


def prepare(config: Config, corpus: Optional[lm.Corpus] = None) -> Prepared:
  """Loads the corpus (``pydoc_data.topics`` by default) and draws the seeds' inputs."""
  corpus = corpus or lm.pydoc_corpus()
  data = lm.Data.from_corpus(corpus, config)
  v = len(corpus.vocab)
  inputs = jax.jit(jax.vmap(lambda s: lm.seed_inputs(s, v, data, config)))(
      jnp.arange(config.seeds))
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
    self.compiled = run_rows.lower(prepared.data, prepared.inputs, rows, method=method,
                                   config=config, vocab=self.vocab).compile()
    self.compile_s = time.perf_counter() - t0
    # The selection's prefix runs: one function for every seed (one compilation).
    self.prefix = jax.tree_util.Partial(
        functools.partial(_prefix_losses, method, config, self.vocab), prepared.data)

  def run(self, hypers: np.ndarray) -> tuple[Run, float]:
    """Every seed's run at ``hypers[S]`` and the wall time."""
    return _timed(self.compiled, self.prepared.data, self.prepared.inputs,
                  jnp.asarray(hypers, jnp.float32))

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
  return Result(m.name, run, Timing(runner.compile_s, select_s, run_s, n_runs,
                                    run_s if ref_s is None else ref_s),
                hyper, settings, grid_val, diverged)


# ----------------------------------------------------------------------------
# Results.


def bits(nats: Any) -> np.ndarray:
  """Nats to bits."""
  return np.asarray(nats, np.float64) / lm.LN2


def summarize(result: Result, reference: Timing, config: Config) -> dict:
  """JSON-ready summary; times as ratios to constant AdamW's.

  ``time.total_ratio``: everything the method cost (compilation, selection,
  every run) over constant AdamW's compilation and run; ``time.run_ratio``:
  one full run over one constant-AdamW run measured just before.
  """
  m, r, t = METHODS[result.method], result.run, result.timing
  stat = lambda a: dict(mean=float(np.mean(a)), std=float(np.std(a)), per_seed=a)
  lr = np.asarray(r.trace.learning_rate, np.float64)  # [S, steps] or [S, steps, K]
  scalar_lr = np.exp(np.mean(np.log(lr), axis=-1)) if lr.ndim == 3 else lr
  has_lr = bool(np.isfinite(scalar_lr).any())
  # The curve on a time axis: the selection (or the other grid runs) first.
  before = t.select_s + (t.run_s - t.run_s / t.runs)
  points = np.arange(len(r.trace.curve[0])) * config.eval_every
  elapsed = before + t.run_s / t.runs * points / config.steps
  return dict(
      method=m.name, label=m.label, family=m.family, notes=m.notes,
      user_set=list(m.user_set), n_user_set=len(m.user_set), tune=m.tune,
      hyper=result.hyper, settings=result.settings,
      grid=dict(peaks=config.peaks, val_bits=bits(result.grid_val)) if result.grid_val is not None else None,
      candidate_diverged=result.diverged,
      val_bits=stat(bits(r.val_loss)), test_bits=stat(bits(r.test_loss)),
      diverged=int(np.sum(~np.isfinite(r.val_loss) | (r.val_loss > r.trace.curve[:, 0]))),
      counters={k: v for k, v in r.counters.items()},
      seeds=int(len(r.val_loss)),
      time=dict(**t._asdict(), total_s=t.total_s,
                run_ratio=(t.run_s / t.runs) / t.reference_s,
                total_ratio=t.total_s / (reference.compile_s + t.reference_s)),
      curve=dict(step=points, seconds=elapsed, ref_run_s=t.reference_s,
                 val_bits_mean=bits(r.trace.curve).mean(0)),
      learning_rate=dict(
          mean=np.nanmean(scalar_lr, 0) if has_lr else None,
          groups=np.nanmean(lr, 0) if lr.ndim == 3 else None,
          final_mean=float(np.nanmean(scalar_lr[:, -1])) if has_lr else None),
      train_bits_mean=bits(r.trace.train_loss).mean(0),
  )


TABLE_HEADER = ("method", "val bits/char", "test bits/char", "# set", "# runs",
                "chosen", "time x AdamW", "run x AdamW", "diverged", "final lr")


def _chosen(s: dict) -> str:
  if s["tune"] is None:
    return "-"
  name = "peak" if s["tune"] == "grid" else s["tune"]
  vals = sorted({float(v) for v in s["hyper"] if math.isfinite(v)})
  return f"{name}=" + "/".join(report.format_value(v) for v in vals)


def table_rows(methods: Sequence[dict]) -> list[list[str]]:
  """One row per method."""
  rows = []
  for s in methods:
    final = s["learning_rate"]["final_mean"]
    rows.append([
        s["label"], report.mean_std(s["val_bits"]["per_seed"], 1.0, 3),
        report.mean_std(s["test_bits"]["per_seed"], 1.0, 3), str(s["n_user_set"]),
        str(s["settings"]), _chosen(s), f"{s['time']['total_ratio']:.2f}",
        f"{s['time']['run_ratio']:.2f}", f"{s['diverged']}/{s['seeds']}",
        "-" if final is None or not math.isfinite(final) else f"{final:.2e}"])
  return rows


def run_benchmark(config: Config, methods: Sequence[str],
                  progress: Optional[Callable[[str], None]] = None,
                  corpus: Optional[lm.Corpus] = None) -> dict:
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
      methods=[summarize(r, results[0].timing, config) for r in results])


# ----------------------------------------------------------------------------
# Figures.


def plot(out: dict, path: str, lr_path: str) -> None:
  """Validation curves against steps and against wall time (``path``), and the
  learning-rate trajectories (``lr_path``), means over seeds."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cmap = plt.get_cmap("tab10")
  methods = out["methods"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
  for i, s in enumerate(methods):
    c = s["curve"]
    y = np.asarray(c["val_bits_mean"], np.float64)
    ls = "--" if s["family"] == "lr-free" else "-"
    axes[0].plot(c["step"], y, ls, color=cmap(i % 10), label=s["label"])
    axes[1].plot(np.asarray(c["seconds"]) / c["ref_run_s"], y, ls, color=cmap(i % 10))
  axes[0].set(xlabel="step", ylabel="validation bits/char (mean over seeds)")
  axes[1].set(xlabel="wall time / one constant-AdamW run (selection or grid runs first)")
  finite = np.concatenate([np.asarray(s["curve"]["val_bits_mean"], np.float64) for s in methods])
  finite = finite[np.isfinite(finite) & (finite > 0)]
  for ax in axes:  # diverged runs (nan, or huge) stay off the chart
    ax.set_ylim(finite.min() - 0.05 if finite.size else 0.0, 5.0)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7.5, 4.4))
  for i, s in enumerate(methods):
    lr = s["learning_rate"]
    if lr["groups"] is not None:
      for g in np.asarray(lr["groups"], np.float64).T:
        ax.plot(g, ":", color=cmap(i % 10), lw=0.8)
    if lr["mean"] is not None:
      ax.plot(np.asarray(lr["mean"], np.float64), color=cmap(i % 10), label=s["label"],
              ls="--" if s["family"] == "lr-free" else "-")
  ax.set(xlabel="step", ylabel="learning rate / effective step (mean over seeds)",
         yscale="log", ylim=(1e-5, 1.0))  # rates above 1 have diverged
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(lr_path, dpi=110)
  plt.close(fig)
