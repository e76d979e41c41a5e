# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The CIFAR training step (Flax NNX), the evaluation, and what every run shares.

:func:`make_train_step` is :func:`marthe_optax.flax.nnx_train_step` under
``jax.jit`` (split/merge of the NNX model and optimizer, the state donated),
with on-device augmentation; :func:`make_evaluate` the inference-mode loss
and accuracy; :class:`Prepared` the device copies of a dataset and the
compiled functions, and :func:`build` one method's initial state.
"""

from typing import Any, Callable, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import flax as mof
from marthe_lab import models
from marthe_lab.cifar import data as cifar_data
from marthe_lab.cifar import models as cifar_models
from marthe_lab.cifar.config import ONLINE, Config, make_optimizer, steps_per_epoch


def _training(model, x):
  return model(x, train=True)


def _inference(model, x):
  return model(x, train=False)


def make_losses(weight_decay: float):
  """``(train_loss, objective)`` for :func:`marthe_optax.flax.nnx_train_step`.

  ``train_loss(model, x, y) -> (CE + 0.5 wd ||w||^2, CE)`` in training mode;
  ``objective(model, x, y) -> CE`` in inference mode (running statistics).
  """

  def train_loss(model, x, y):
    ce = models.cross_entropy(_training, model, x, y)
    params = jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param)))
    penalty = sum(jnp.vdot(p, p) for p in params)
    return ce + 0.5 * weight_decay * penalty, ce

  def objective(model, x, y):
    return models.cross_entropy(_inference, model, x, y)

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


def build(cfg: Config, prepared: Prepared, method: str, seed: int, kappa):
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

