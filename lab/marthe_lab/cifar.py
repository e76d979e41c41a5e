# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Section 6 of the paper: learning-rate schedules for VGG-11 and ResNet-18 on CIFAR.

The setting of the paper: batch 128, 200 epochs, training loss ``L`` = cross
entropy + weight decay ``5e-4`` (``0.5 * 5e-4 * ||w||^2`` on every parameter,
as PyTorch's ``weight_decay=5e-4``), objective ``E`` = the unregularised cross
entropy on a validation split carved from the training set (5000 images, the
same split for every method and seed), 5 seeds. VGG-11-BN on CIFAR-10 with
SGD-momentum 0.9 and ``eta_0 = 0.1``; ResNet-18 on CIFAR-100 with Adam and
``eta_0 = 3e-4``. Methods:

* ``staircase``: ``eta`` times 0.1 every 60 epochs
  (``optax.piecewise_constant_schedule``);
* ``exponential``: times 0.99 per epoch (``optax.exponential_decay``);
* ``sgdr``: cosine restarts with ``T_0 = 10`` epochs and ``T_mult = 2``
  (``optax.join_schedules`` of ``optax.cosine_decay_schedule``);
* ``hd`` (``beta = 1e-6``), ``rtho`` (``beta = 1e-8``) and ``marthe``
  (adaptive ``mu`` and ``beta``; step size ``kappa``).

All three online methods descend the validation objective: each step passes
``val_grads``, the gradient of ``E`` on a random validation minibatch (same
size as the training batch, no augmentation, BatchNorm in inference mode).
The training step is :func:`marthe_optax.flax.nnx_train_step` under ``jax.jit``
(split/merge of the NNX model and optimizer, state donated); training images
are augmented on the device (random crop with padding 4, horizontal flip).

Per epoch the run records the training loss, validation loss and accuracy,
test loss and accuracy, and the learning rate; per step, a subsampled trace of
the learning rate. :func:`plot` draws the paper's figures 3-4 (accuracy,
validation loss, one schedule per method).

Long runs checkpoint and resume (:class:`Checkpoints`, with Orbax): every few
epochs the model and optimizer state, the data order's random generator and
the records so far are saved; a resumed run continues from the last
checkpoint and gives the same results as an uninterrupted one.
"""

import dataclasses
import functools
import json
import math
import os
import shutil
import statistics
import time
from typing import Any, Callable, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_optax import flax as mof
from marthe_lab import cifar_data
from marthe_lab import cifar_models

METHODS = ("staircase", "exponential", "sgdr", "hd", "rtho", "marthe")
ONLINE = ("hd", "rtho", "marthe")
INNERS = {
    "sgdm": functools.partial(optax.sgd, momentum=0.9),
    "adam": optax.adam,
}
EXPERIMENTS = {
    # name: (dataset, model, inner, eta_0)
    "vgg11-cifar10": ("cifar10", "vgg11", "sgdm", 0.1),
    "resnet18-cifar100": ("cifar100", "resnet18", "adam", 3e-4),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment: data, model, optimizer, methods, schedules.

  Durations of the fixed schedules are in epochs.
  """

  dataset: str = "cifar10"  # 'cifar10', 'cifar100' or 'synthetic'
  model: str = "vgg11"  # 'vgg11' or 'resnet18'
  inner: str = "sgdm"  # 'sgdm' or 'adam'
  eta0: float = 0.1
  width: float = 1.0
  epochs: int = 200
  batch_size: int = 128
  val_batch_size: int = 128
  eval_batch_size: int = 500
  weight_decay: float = 5e-4
  num_val: int = 5000
  seeds: tuple = (0, 1, 2, 3, 4)
  methods: tuple = METHODS
  kappa: Optional[float] = None  # MARTHE's hyper_lr_step; None: selection
  selection_start: float = 1e-2
  selection_num: int = 8  # 1e-2 ... 1e-9
  selection_factor: float = 10.0
  selection_steps: int = 200
  # SGD-momentum at eta_0 = 0.1 alone can multiply the loss of a fresh small
  # VGG by 2.6 in its first steps; a too large kappa drives eta (and the loss)
  # to overflow within a few steps.
  selection_growth: float = 4.0
  selection_chunk: Optional[int] = 1  # candidates per vmapped chunk
  hd_beta: float = 1e-6
  rtho_beta: float = 1e-8
  staircase_every: float = 60.0
  staircase_factor: float = 0.1
  exp_decay: float = 0.99
  sgdr_t0: float = 10.0
  sgdr_mult: float = 2.0
  max_steps_per_epoch: Optional[int] = None
  augment: bool = True
  synthetic_sizes: tuple = (2048, 256, 512)  # train, val, test
  num_classes: int = 10  # for the synthetic data
  data_dir: Optional[str] = None


def preset(name: str, experiment: str = "vgg11-cifar10", **overrides) -> Config:
  """A named configuration.

  Args:
    name: ``'paper'`` (the paper's full setting on the real data),
      ``'synthetic'`` (no data, reduced width, a couple of minutes on a CPU,
      the README command) or ``'smoke'`` (four steps of a three-convolution
      VGG on tiny synthetic data, staircase and MARTHE only, for CI).
    experiment: ``'vgg11-cifar10'`` or ``'resnet18-cifar100'``: the model,
      inner optimizer and ``eta_0`` (and the dataset for ``'paper'``).
    **overrides: fields of :class:`Config` to replace.

  Returns:
    The :class:`Config`.
  """
  if experiment not in EXPERIMENTS:
    raise ValueError(
        f"experiment must be one of {sorted(EXPERIMENTS)}, got {experiment!r}."
    )
  dataset, model, inner, eta0 = EXPERIMENTS[experiment]
  base = dict(model=model, inner=inner, eta0=eta0)
  if name == "paper":
    cfg = Config(dataset=dataset, **base)
  elif name == "synthetic":
    # Eight short epochs; the fixed schedules are compressed to match.
    cfg = Config(
        dataset="synthetic", width=0.125, epochs=8, batch_size=64,
        val_batch_size=64, eval_batch_size=256, synthetic_sizes=(2048, 256, 512),
        seeds=(0, 1), staircase_every=3.0, exp_decay=0.8, sgdr_t0=1.0,
        # From the selection on this preset (--select-kappa, 20 steps, about
        # 5 CPU-minutes; run on a harder version of the data, separation
        # 0.25): 1e-7 overflows, 1e-8 multiplies the loss by 9.4, 1e-9 and
        # below do not diverge.
        kappa=1e-9 if inner == "sgdm" else None,
        selection_steps=20, selection_start=1e-7, selection_num=6, **base,
    )
  elif name == "smoke":
    # A three-convolution VGG ('vgg-mini'): compile time dominates here.
    # kappa: the hypergradients are ~1e2 at once, and 1e-5 or more drives
    # eta to 0 at the third step; at 1e-9 it moves and stays positive.
    base["model"] = "vgg-mini"
    cfg = Config(
        dataset="synthetic", width=0.0625, epochs=2, batch_size=16,
        val_batch_size=16, eval_batch_size=32, synthetic_sizes=(64, 32, 32),
        max_steps_per_epoch=2, seeds=(0,), staircase_every=1.0, exp_decay=0.5,
        sgdr_t0=1.0, kappa=1e-9, methods=("staircase", "marthe"), **base,
    )
  else:
    raise ValueError(
        f"preset must be 'paper', 'synthetic' or 'smoke', got {name!r}."
    )
  return dataclasses.replace(cfg, **overrides)


def load_data(cfg: Config) -> cifar_data.Cifar:
  """The dataset of ``cfg``: the CIFAR pickles, or the synthetic stand-in."""
  if cfg.dataset == "synthetic":
    n_train, n_val, n_test = cfg.synthetic_sizes
    return cifar_data.synthetic(n_train, n_val, n_test, cfg.num_classes)
  return cifar_data.load(cfg.dataset, cfg.data_dir, num_val=cfg.num_val)


def steps_per_epoch(cfg: Config, num_train: int) -> int:
  """Full batches per epoch (the last partial batch is dropped), capped."""
  steps = num_train // cfg.batch_size
  if steps < 1:
    raise ValueError(
        f"batch_size {cfg.batch_size} exceeds the {num_train} training images."
    )
  return min(steps, cfg.max_steps_per_epoch or steps)


def sgdr_schedule(
    eta0: float, t0_steps: int, mult: float, total_steps: int
) -> optax.Schedule:
  """SGDR (Loshchilov & Hutter, 2017): cosine decays restarted at ``eta0``.

  Periods ``T_0, T_0 mult, T_0 mult^2, ...`` steps, joined with
  ``optax.join_schedules`` until ``total_steps`` are covered.
  """
  schedules, boundaries, start, period = [], [], 0, float(t0_steps)
  while start < total_steps:
    length = max(1, int(round(period)))
    schedules.append(optax.cosine_decay_schedule(eta0, length))
    start += length
    boundaries.append(start)
    period *= mult
  return optax.join_schedules(schedules, boundaries[:-1])


def make_optimizer(
    cfg: Config, method: str, spe: int, kappa: Optional[float]
) -> tuple[optax.GradientTransformation, Optional[optax.Schedule]]:
  """``(tx, schedule)`` of a method; ``schedule`` is ``None`` for online methods."""
  inner = INNERS[cfg.inner]
  total = cfg.epochs * spe
  if method == "staircase":
    every = max(1, int(round(cfg.staircase_every * spe)))
    schedule = optax.piecewise_constant_schedule(
        cfg.eta0,
        {k: cfg.staircase_factor for k in range(every, total, every)},
    )
  elif method == "exponential":
    schedule = optax.exponential_decay(
        cfg.eta0, transition_steps=spe, decay_rate=cfg.exp_decay, staircase=True
    )
  elif method == "sgdr":
    schedule = sgdr_schedule(
        cfg.eta0, int(round(cfg.sgdr_t0 * spe)), cfg.sgdr_mult, total
    )
  elif method == "hd":
    return mo.hd(inner, cfg.eta0, hyper_lr=cfg.hd_beta), None
  elif method == "rtho":
    return mo.rtho(inner, cfg.eta0, hyper_lr=cfg.rtho_beta), None
  elif method == "marthe":
    if kappa is None:
      raise ValueError("marthe needs kappa (Config.kappa or the selection).")
    return mo.marthe(inner, cfg.eta0, hyper_lr_step=kappa), None
  else:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  return inner(schedule), schedule


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_losses(weight_decay: float):
  """``(train_loss, objective)`` for :func:`marthe_optax.flax.nnx_train_step`.

  ``train_loss(model, x, y) -> (CE + 0.5 wd ||w||^2, CE)`` in training mode;
  ``objective(model, x, y) -> CE`` in inference mode (running statistics).
  """

  def train_loss(model, x, y):
    ce = _cross_entropy(model(x, train=True), y)
    params = jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param)))
    penalty = sum(jnp.vdot(p, p) for p in params)
    return ce + 0.5 * weight_decay * penalty, ce

  def objective(model, x, y):
    return _cross_entropy(model(x, train=False), y)

  return train_loss, objective


def make_train_step(
    graphdefs: Any,
    cfg: Config,
    online: bool,
    mean: Sequence[float],
    std: Sequence[float],
    schedule: Optional[optax.Schedule],
    jit: bool = True,
) -> Callable:
  """The training step ``(state, data, idx, vidx, key) -> (state, metrics)``.

  ``graphdefs`` and ``state`` are those of ``nnx.split(model)`` and
  ``nnx.split(optimizer)``, as pairs; ``data`` is ``(x_train, y_train, x_val,
  y_val)`` on the device (uint8 images); ``idx`` and ``vidx`` index the
  training and validation minibatches. With ``jit`` the step is jitted with
  ``state`` donated; without, it is the pure function (for ``lax.scan``).
  """
  train_loss, objective = make_losses(cfg.weight_decay)

  def step(state, data, idx, vidx, key):
    model = nnx.merge(graphdefs[0], state[0])
    optimizer = nnx.merge(graphdefs[1], state[1])
    x_train, y_train, x_val, y_val = data
    # nnx.Optimizer.step is uint32, which optax.piecewise_constant_schedule
    # mishandles (0.2.8: the scale reverts after the boundary): use int32.
    count = optimizer.step[...].astype(jnp.int32)
    x = x_train[idx]
    if cfg.augment:
      x = cifar_data.augment(key, x)
    x = cifar_data.normalize(x, mean, std)
    extra = {}
    if online:
      extra = dict(
          objective_fn=objective,
          objective_args=(cifar_data.normalize(x_val[vidx], mean, std), y_val[vidx]),
      )
    out = mof.nnx_train_step(
        optimizer, model, train_loss, (x, y_train[idx]), has_aux=True, **extra
    )
    if online:
      pure = nnx.as_pure(optimizer.opt_state)
      lr = optax.tree.get(pure, "learning_rate")
      hypergradient = optax.tree.get(pure, "hypergradient")
    else:
      lr = jnp.asarray(schedule(count), jnp.float32)
      hypergradient = jnp.zeros([], jnp.float32)
    metrics = dict(loss=out.loss, ce=out.aux, lr=lr, hypergradient=hypergradient)
    return (nnx.state(model), nnx.state(optimizer)), metrics

  return jax.jit(step, donate_argnums=0) if jit else step


def make_evaluate(graphdef: Any, mean, std) -> Callable:
  """``evaluate(state, chunks) -> (mean CE, accuracy)`` in inference mode.

  ``graphdef`` is the model's; ``state`` the ``(model, optimizer)`` state pair.
  """

  @jax.jit
  def chunk_stats(model_state, x, y, mask):
    model = nnx.merge(graphdef, model_state)
    logits = model(cifar_data.normalize(x, mean, std), train=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct & mask)

  def evaluate(state, chunks):
    totals = [chunk_stats(state[0], *c) for c in chunks]
    n = sum(float(jnp.sum(c[2])) for c in chunks)
    ce = sum(float(t[0]) for t in totals) / n
    acc = sum(float(t[1]) for t in totals) / n
    return ce, acc

  return evaluate


def _chunks(x: np.ndarray, y: np.ndarray, size: int):
  """Device chunks ``(x, y, mask)`` of ``size`` examples, the last one padded."""
  out = []
  for start in range(0, len(x), size):
    xs, ys = x[start : start + size], y[start : start + size]
    pad = size - len(xs)
    mask = np.arange(size) < len(xs)
    xs = np.concatenate([xs, np.zeros((pad, *xs.shape[1:]), xs.dtype)])
    ys = np.concatenate([ys, np.zeros(pad, ys.dtype)])
    out.append((jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(mask)))
  return out


class _Prepared:
  """Device copies of a dataset, and the jitted functions, shared by all runs.

  One training step per method and one evaluation function are compiled for
  all seeds (the seeds change the values in the state, not its structure).
  """

  def __init__(self, cfg: Config, data: cifar_data.Cifar):
    self.data = data
    self.steps = {}
    self.evaluate = None
    self.device = tuple(
        jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_val, data.y_val)
    )
    self.val_chunks = _chunks(data.x_val, data.y_val, cfg.eval_batch_size)
    self.test_chunks = _chunks(data.x_test, data.y_test, cfg.eval_batch_size)
    self.spe = steps_per_epoch(cfg, len(data.x_train))


def build(cfg: Config, prepared: _Prepared, method: str, seed: int, kappa):
  """``(state, step, evaluate)`` for one method and seed."""
  data = prepared.data
  model = cifar_models.make(cfg.model, data.num_classes, cfg.width, seed)
  tx, schedule = make_optimizer(cfg, method, prepared.spe, kappa)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  model_def, model_state = nnx.split(model)
  opt_def, opt_state = nnx.split(optimizer)
  if method not in prepared.steps:
    prepared.steps[method] = make_train_step(
        (model_def, opt_def), cfg, method in ONLINE, data.mean, data.std,
        schedule,
    )
  if prepared.evaluate is None:
    prepared.evaluate = make_evaluate(model_def, data.mean, data.std)
  return (model_state, opt_state), prepared.steps[method], prepared.evaluate


def _subsample(trace: list, max_points: int) -> tuple[list, list]:
  stride = max(1, math.ceil(len(trace) / max_points))
  steps = list(range(0, len(trace), stride))
  return steps, [trace[i] for i in steps]


class Stopped(Exception):
  """Raised by :func:`run` after ``stop_after_epochs`` epochs, once saved."""


class Checkpoints:
  """Periodic checkpoints of the runs of one configuration, and resumption.

  Layout under ``directory``: ``config.json`` (the :class:`Config` they
  belong to), ``kappa.json`` (MARTHE's selected ``kappa``), and per method and
  seed a folder ``<method>-seed<seed>/`` with ``state/`` (an Orbax
  ``CheckpointManager``: the model and optimizer state, and as JSON the
  epochs done, the records so far and the state of the NumPy generator that
  draws the minibatches) and, once the run is over, ``record.json``.

  Args:
    directory: where the checkpoints live.
    cfg: the configuration of the runs.
    every: save every ``every`` epochs (and after the last one).
    resume: continue from what ``directory`` holds (it must belong to
      ``cfg``); otherwise it is cleared first.
  """

  def __init__(self, directory: str, cfg: Config, every: int = 1, resume: bool = False):
    if every < 1:
      raise ValueError(f"checkpoint every must be >= 1 epoch, got {every}.")
    self.directory = os.path.abspath(directory)
    self.every = every
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    path = os.path.join(self.directory, "config.json")
    if resume and os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved != config:
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ValueError(
            f"The checkpoints in {self.directory} belong to another configuration "
            f"(differences: {changed}); resume with the same options, or start over "
            "without --resume."
        )
    elif os.path.exists(self.directory):
      shutil.rmtree(self.directory)
    os.makedirs(self.directory, exist_ok=True)
    _write_json(path, config)

  def _run_dir(self, method: str, seed: int) -> str:
    return os.path.join(self.directory, f"{method}-seed{seed}")

  def kappa(self) -> Optional[tuple]:
    """The saved ``(kappa, source, evidence)``, or ``None``."""
    path = os.path.join(self.directory, "kappa.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      saved = json.load(f)
    return saved["kappa"], saved["source"], saved["evidence"]

  def save_kappa(self, kappa: float, source: str, evidence: dict) -> None:
    _write_json(
        os.path.join(self.directory, "kappa.json"),
        dict(kappa=kappa, source=source, evidence=evidence),
    )

  def finished(self, method: str, seed: int) -> Optional[dict]:
    """The record of a finished run, or ``None``."""
    path = os.path.join(self._run_dir(method, seed), "record.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def finish(self, method: str, seed: int, record: dict) -> None:
    """Saves the record of a finished run and drops its state checkpoints."""
    _write_json(os.path.join(self._run_dir(method, seed), "record.json"), record)
    shutil.rmtree(os.path.join(self._run_dir(method, seed), "state"), ignore_errors=True)

  def _manager(self, method: str, seed: int):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    return ocp, ocp.CheckpointManager(
        os.path.join(self._run_dir(method, seed), "state"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1),
    )

  def restore(self, method: str, seed: int, target: Any) -> Optional[tuple[Any, dict]]:
    """``(state, meta)`` of the last checkpoint of a run, or ``None``.

    ``target`` is a state of the same structure (the freshly built one).
    """
    ocp, manager = self._manager(method, seed)
    with manager:
      step = manager.latest_step()
      if step is None:
        return None
      abstract = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
      )
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore(),
      ))
    return restored["state"], restored["meta"]

  def save(self, method: str, seed: int, epoch: int, state: Any, meta: dict) -> None:
    """Saves the state after ``epoch`` epochs (blocking until written)."""
    ocp, manager = self._manager(method, seed)
    with manager:
      manager.save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
      ))
      manager.wait_until_finished()


def _write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically (a crash leaves the old file or none)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f)
  os.replace(tmp, path)


class _Budget:
  """Counts the epochs trained in this invocation against ``stop_after``."""

  def __init__(self, stop_after: Optional[int]):
    self.stop_after = stop_after
    self.epochs = 0

  def spend(self) -> None:
    self.epochs += 1

  def used_up(self) -> bool:
    return self.stop_after is not None and self.epochs >= self.stop_after

  def stop(self, where: str) -> Stopped:
    return Stopped(f"stopped after {self.epochs} epochs in this run ({where}); "
                   "continue with --resume")


def run_one(
    cfg: Config,
    prepared: _Prepared,
    method: str,
    seed: int,
    kappa: Optional[float] = None,
    progress: bool = True,
    max_trace_points: int = 2000,
    checkpoints: Optional[Checkpoints] = None,
    budget: Optional[_Budget] = None,
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
  state, step, evaluate = build(cfg, prepared, method, seed, kappa)
  n_train, n_val = len(prepared.data.x_train), len(prepared.data.x_val)
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  record = {k: [] for k in (
      "epoch", "train_loss", "train_ce", "val_loss", "val_acc", "test_loss",
      "test_acc", "lr", "hypergradient",
  )}
  lr_trace, first_epoch, elapsed, diverged = [], 0, 0.0, False
  if checkpoints is not None:
    restored = checkpoints.restore(method, seed, state)
    if restored is not None:
      state, meta = restored
      first_epoch, record, lr_trace = meta["epoch"], meta["record"], meta["lr_trace"]
      elapsed, diverged = meta["time_s"], meta["diverged"]
      rng.bit_generator.state = meta["rng"]
  bar = tqdm(
      total=cfg.epochs * spe, initial=first_epoch * spe,
      desc=f"{method} seed {seed}", disable=not progress, leave=False,
      mininterval=1.0,
  )
  start = time.perf_counter() - elapsed
  for epoch in range(first_epoch, cfg.epochs):
    if diverged:
      break
    perm = rng.permutation(n_train)
    epoch_metrics = []
    for i in range(spe):
      idx = jnp.asarray(perm[i * cfg.batch_size : (i + 1) * cfg.batch_size])
      vidx = jnp.asarray(rng.integers(0, n_val, cfg.val_batch_size))
      t = epoch * spe + i
      state, metrics = step(state, prepared.device, idx, vidx, jax.random.fold_in(key, t))
      epoch_metrics.append(metrics)
      if bar.update() or i == spe - 1:
        bar.set_postfix(lr=f"{float(metrics['lr']):.3g}", loss=f"{float(metrics['loss']):.3f}")
    stacked = jax.tree.map(lambda *xs: np.asarray(jnp.stack(xs)), *epoch_metrics)
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
    if checkpoints is not None and not last and (
        stop or (epoch + 1) % checkpoints.every == 0
    ):
      checkpoints.save(method, seed, epoch + 1, state, dict(
          epoch=epoch + 1, record=record, lr_trace=lr_trace, diverged=diverged,
          time_s=time.perf_counter() - start, rng=rng.bit_generator.state,
      ))
    if stop and not last:
      bar.close()
      raise budget.stop(f"{method} seed {seed} at epoch {epoch + 1}")
  bar.close()
  steps, lrs = _subsample(lr_trace, max_trace_points)
  record.update(
      method=method, seed=seed, diverged=diverged, steps_per_epoch=spe,
      lr_trace_step=steps, lr_trace=lrs, time_s=time.perf_counter() - start,
  )
  if checkpoints is not None:
    checkpoints.finish(method, seed, record)
  return record


def select_kappa(cfg: Config, prepared: _Prepared) -> tuple[float, str, dict]:
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
  idx = np.stack([
      rng.permutation(n_train)[: cfg.batch_size] for _ in range(steps)
  ])
  vidx = rng.integers(0, n_val, (steps, cfg.val_batch_size))
  keys = jax.random.split(jax.random.key(10_000), steps)
  model = cifar_models.make(cfg.model, data.num_classes, cfg.width, 0)
  model_def, model_state = nnx.split(model)

  def prefix(model_state, data, idx, vidx, keys, kappa):
    model = nnx.merge(model_def, model_state)
    tx = mo.marthe(INNERS[cfg.inner], cfg.eta0, hyper_lr_step=kappa)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    opt_def, opt_state = nnx.split(optimizer)
    step = make_train_step(
        (model_def, opt_def), cfg, True, data_mean, data_std, None, jit=False
    )

    def body(state, xs):
      state, metrics = step(state, data, *xs)
      return state, metrics["loss"]

    _, losses = jax.lax.scan(
        body, (nnx.state(model), opt_state), (idx, vidx, keys)
    )
    return losses

  data_mean, data_std = data.mean, data.std
  run = jax.tree_util.Partial(
      prefix, model_state, prepared.device, jnp.asarray(idx), jnp.asarray(vidx),
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
  budget = _Budget(stop_after_epochs)
  data = load_data(cfg)
  prepared = _Prepared(cfg, data)
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
      config=dataclasses.asdict(cfg), kappa=kappa, kappa_source=kappa_source,
      kappa_selection=evidence,
      steps_per_epoch=prepared.spe, backend=jax.default_backend(), methods={},
  )
  for method in cfg.methods:
    records = [
        run_one(cfg, prepared, method, seed, kappa, progress,
                checkpoints=checkpoints, budget=budget)
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
  prepared = _Prepared(cfg, data)
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


COLORS = {
    "staircase": "tab:blue", "exponential": "tab:orange", "sgdr": "tab:green",
    "hd": "tab:purple", "rtho": "tab:brown", "marthe": "tab:red",
}


def plot(results: dict, path: str, title: Optional[str] = None) -> None:
  """The paper's figure 3/4 layout: accuracy, validation loss, schedules.

  Left: test accuracy (%) per epoch, mean and standard deviation over seeds;
  centre: the objective ``E`` (validation loss); right: the learning rate of
  the first seed of each method, per step (x axis in epochs).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for method, res in results["methods"].items():
    runs = res["runs"]
    color = COLORS.get(method)
    n = min(len(r["epoch"]) for r in runs)
    epochs = np.arange(1, n + 1)
    for ax, key, scale in ((axes[0], "test_acc", 100.0), (axes[1], "val_loss", 1.0)):
      values = scale * np.array([r[key][:n] for r in runs])
      mean, std = values.mean(0), values.std(0)
      ax.plot(epochs, mean, label=method, color=color)
      ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
    first = runs[0]
    axes[2].plot(
        np.asarray(first["lr_trace_step"]) / first["steps_per_epoch"],
        first["lr_trace"], label=method, color=color,
    )
  axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title="Accuracy")
  axes[1].set(xlabel="epoch", ylabel="validation loss", title="Objective E")
  axes[1].set_yscale("log")
  axes[2].set(xlabel="epoch", ylabel="learning rate", title="Schedule (seed 0)")
  axes[2].set_yscale("log")
  axes[0].legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_json(results: dict, path: str) -> None:
  """Writes ``results`` (NaN and infinity as JSON null)."""

  def clean(x):
    if isinstance(x, float) and not math.isfinite(x):
      return None
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [clean(v) for v in x]
    return x

  with open(path, "w") as f:
    json.dump(clean(results), f, indent=1)
