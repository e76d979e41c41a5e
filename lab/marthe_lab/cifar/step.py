# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The CIFAR training step (Flax NNX), the evaluation, and what every run shares.

:func:`make_train_step` is the lab's one step,
:func:`marthe_lab.loop.make_step` with ``stateful=True`` (the params are the
pure ``nnx.State`` of the ``nnx.Param`` variables, the model state the
BatchNorm statistics), with on-device augmentation, under ``jax.jit`` (the
:class:`State` donated); :func:`make_evaluate` the inference-mode loss and
accuracy; :class:`Prepared` the device copies of a dataset and the compiled
functions, and :func:`build` one method's initial state.
"""

from typing import Any, Callable, NamedTuple, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_lab import loop
from marthe_lab import models
from marthe_lab.cifar import data as cifar_data
from marthe_lab.cifar import models as cifar_models
from marthe_lab.cifar.config import METHODS, Config, make_optimizer, steps_per_epoch


def _training(model, x):
  return model(x, train=True)


def _inference(model, x):
  return model(x, train=False)


class State(NamedTuple):
  """A run's state: what a checkpoint holds.

  Attributes:
    params: the pure ``nnx.State`` of the model's ``nnx.Param`` variables.
    model_state: the pure state of the rest (BatchNorm statistics).
    opt_state: the optimizer's state.
    step: the number of steps done (int32), the schedules' ``t``.
  """

  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array


def split(model: nnx.Module) -> tuple[Any, Any, Any]:
  """``(graphdef, params, model_state)`` of ``model``, the states pure."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.as_pure(params), nnx.as_pure(rest)


def make_losses(graphdef: Any, weight_decay: float):
  """``(loss, objective)`` for :func:`marthe_lab.loop.make_step` (stateful, with aux).

  ``loss(params, model_state, (x, y)) -> (CE + 0.5 wd ||w||^2, (new
  model_state, CE))`` in training mode (the batch statistics updated);
  ``objective(params, model_state, (x, y)) -> CE`` in inference mode
  (running statistics, left unchanged).
  """

  def loss(params, model_state, batch):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    ce = models.cross_entropy(_training, model, *batch)
    penalty = sum(jnp.vdot(p, p) for p in jax.tree.leaves(params))
    new_state = nnx.as_pure(nnx.split(model, nnx.Param, ...)[2])
    return ce + 0.5 * weight_decay * penalty, (new_state, ce)

  def objective(params, model_state, batch):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    return models.cross_entropy(_inference, model, *batch)

  return loss, objective


def make_batches(cfg: Config, data: tuple, mean: Sequence[float], std: Sequence[float]) -> Callable:
  """``batches((idx, vidx, key)) -> (batch, val_batch)``, for :func:`marthe_lab.loop.scan`.

  ``data`` is ``(x_train, y_train, x_val, y_val)`` on the device (uint8
  images); ``idx`` and ``vidx`` index the training and validation
  minibatches, ``key`` draws the augmentation (``cfg.augment``) of the
  training images; both are normalised by ``mean`` and ``std``.
  """
  x_train, y_train, x_val, y_val = data

  def batches(x):
    idx, vidx, key = x
    images = x_train[idx]
    if cfg.augment:
      images = cifar_data.augment(key, images)
    return (
      (cifar_data.normalize(images, mean, std), y_train[idx]),
      (cifar_data.normalize(x_val[vidx], mean, std), y_val[vidx]),
    )

  return batches


def make_one_step(
  graphdef: Any, cfg: Config, method: str, tx: optax.GradientTransformation
) -> loop.Step:
  """:func:`marthe_lab.loop.make_step` of a method (stateful, CE as aux).

  ``method`` is a key of :data:`~marthe_lab.cifar.config.METHODS`: its
  registry method names what ``tx.update`` is fed (HD, RTHO and MARTHE read
  ``val_grads``, the gradient of the validation cross-entropy).
  """
  loss, objective = make_losses(graphdef, cfg.weight_decay)
  return loop.make_step(
    tx, loss, METHODS[method].registry.needs, objective=objective, has_aux=True, stateful=True
  )


def make_train_step(
  graphdef: Any,
  cfg: Config,
  method: str,
  tx: optax.GradientTransformation,
  learning_rate: Any,
  mean: Sequence[float],
  std: Sequence[float],
  jit: bool = True,
) -> Callable:
  """The training step ``(state, data, idx, vidx, key) -> (state, metrics)``.

  Args:
    graphdef: the model's (:func:`split`).
    cfg: the configuration.
    method: a key of :data:`~marthe_lab.cifar.config.METHODS`
      (:func:`make_one_step`); its registry method also reads the learning
      rate.
    tx: the method's transformation, ``learning_rate`` what it was built
      with (:func:`~marthe_lab.cifar.config.make_optimizer`).
    mean, std: the normalisation of the images.
    jit: jit the step with ``state`` donated; without, the pure function.

  Returns:
    The step. ``state`` is a :class:`State`; ``data``, ``idx``, ``vidx`` and
    ``key`` are those of :func:`make_batches`. ``metrics``: ``loss``
    (``L_t(w_t)``), ``ce``, ``lr`` (the rate the step used) and
    ``hypergradient`` (0 for the schedules).
  """
  one_step = make_one_step(graphdef, cfg, method, tx)
  metrics = _metrics(method, learning_rate)

  def step(state, data, idx, vidx, key):
    batch, val_batch = make_batches(cfg, data, mean, std)((idx, vidx, key))
    params, opt_state, model_state, out = one_step(
      state.params, state.opt_state, batch, val_batch, state.model_state
    )
    new = State(params, model_state, opt_state, state.step + 1)
    return new, metrics(opt_state, state.step, out)

  return jax.jit(step, donate_argnums=0) if jit else step


def _metrics(method: str, learning_rate: Any) -> Callable:
  """``(opt_state, t, out) -> metrics`` of a step (:func:`make_train_step`)."""
  registry = METHODS[method].registry

  def metrics(opt_state, t, out):
    hypergradient = optax.tree.get(opt_state, "hypergradient", 0.0)
    return dict(
      loss=out.value,
      ce=out.aux,
      lr=registry.learning_rate(opt_state, t, learning_rate),
      hypergradient=jnp.asarray(hypergradient, jnp.float32),
    )

  return metrics


def make_epoch(
  graphdef: Any,
  cfg: Config,
  method: str,
  tx: optax.GradientTransformation,
  learning_rate: Any,
  mean: Sequence[float],
  std: Sequence[float],
) -> Callable:
  """One epoch of the step as one compiled program (:func:`marthe_lab.loop.scan`).

  The arguments are :func:`make_train_step`'s.

  Returns:
    ``epoch(state, data, idx, vidx, key, t0) -> (state, metrics)``, jitted with
    ``state`` donated: ``idx`` ``[S, batch]`` and ``vidx`` ``[S, val_batch]``
    are the epoch's ``S`` minibatches, step ``t0 + i`` uses
    ``jax.random.fold_in(key, t0 + i)`` (as :func:`make_train_step`'s
    ``key``), and ``metrics`` are :func:`make_train_step`'s, stacked over the
    ``S`` steps.
  """
  one_step = make_one_step(graphdef, cfg, method, tx)
  metrics = _metrics(method, learning_rate)

  def epoch(state, data, idx, vidx, key, t0):
    make = make_batches(cfg, data, mean, std)
    run = loop.scan(
      one_step,
      state.params,
      state.opt_state,
      (idx, vidx, t0 + jnp.arange(idx.shape[0])),
      batches=lambda x: make((x[0], x[1], jax.random.fold_in(key, x[2]))),
      record=lambda x, params, opt_state, out: metrics(opt_state, x[2], out),
      model_state=state.model_state,
    )
    new = State(run.params, run.model_state, run.opt_state, state.step + idx.shape[0])
    return new, run.records

  return jax.jit(epoch, donate_argnums=0)


def make_evaluate(graphdef: Any, mean, std) -> Callable:
  """``evaluate(state, chunks) -> (mean CE, accuracy)`` in inference mode.

  ``graphdef`` is the model's (:func:`split`); ``state`` a :class:`State`.
  """

  @jax.jit
  def chunk_stats(params, model_state, x, y, mask):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    logits = model(cifar_data.normalize(x, mean, std), train=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(correct & mask)

  def evaluate(state, chunks):
    totals = [chunk_stats(state.params, state.model_state, *c) for c in chunks]
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


class Prepared:
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


def initial_state(params: Any, model_state: Any, tx: optax.GradientTransformation) -> State:
  """The :class:`State` at step 0 (``tx.init(params)``)."""
  return State(params, model_state, tx.init(params), jnp.zeros([], jnp.int32))


def build(cfg: Config, prepared: Prepared, method: str, seed: int, kappa, epoch: bool = False):
  """``(state, step, evaluate)`` for one method and seed.

  With ``epoch``, ``step`` is the method's :func:`make_epoch` (one compiled
  program per epoch) instead of its jitted single step.
  """
  data = prepared.data
  model = cifar_models.make(cfg.model, data.num_classes, cfg.width, seed)
  tx, learning_rate = make_optimizer(cfg, method, prepared.spe, kappa)
  graphdef, params, model_state = split(model)
  name = (method, epoch)
  if name not in prepared.steps:
    make = make_epoch if epoch else make_train_step
    prepared.steps[name] = make(graphdef, cfg, method, tx, learning_rate, data.mean, data.std)
  if prepared.evaluate is None:
    prepared.evaluate = make_evaluate(graphdef, data.mean, data.std)
  return (initial_state(params, model_state, tx), prepared.steps[name], prepared.evaluate)
