# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE against fixed schedules and the learning-rate-free optimizers of Optax.

One protocol for every method, on the section-5 setting of
:mod:`marthe_lab.train` (the presets of
:mod:`marthe_lab.schedules`): the same data splits
(scikit-learn's digits and MNIST-1D), the same initial weights and minibatch
progression per seed (:func:`seed_inputs`), minibatches of
``TrainConfig.batch_size``, horizon ``TrainConfig.steps``, ``eta_0 =
TrainConfig.learning_rate`` wherever a method takes a learning rate and, for
methods that read a validation signal, the same validation minibatch at every
step. Three tasks: the MLP on digits, the MLP on MNIST-1D and a small 1-D CNN
on MNIST-1D (:func:`init_cnn1d`).

The methods (:data:`METHODS`):

* fixed schedules of SGD: constant, cosine decay, SGDR, and the best
  constant in hindsight: every rate of :data:`BEST_CONSTANT_GRID` trained
  for every seed, the one with the best mean final validation accuracy
  reported (all those runs count in its time);
* hypergradient schedules of SGD, all with ``E`` the validation loss: HD and
  RTHO with a fixed hyper-learning rate ``beta``, and MARTHE (adaptive ``mu``
  and ``beta``) with the step size ``kappa``. ``beta`` and ``kappa`` are
  chosen the same way, per seed, by the paper's procedure with the verdict of
  :func:`marthe_optax.selection.select_hyper_lr_step`: the candidates of its
  default grid ``1, 0.1, ..., 1e-9`` train over the whole horizon, largest
  first, until one does not diverge (no validation score is looked at; all
  those runs count in the method's time); and MARTHE's knob-free mode,
  ``marthe(sgd, eta_0)`` with nothing else set, also with
  ``first_order=True`` and ``first_order=False`` explicitly, fed
  ``val_grads`` of the validation minibatch and ``value=`` the training
  minibatch loss (its divergence safeguard), and ``value_fn`` only where it
  forms a Hessian-vector product;
* on the MNIST-1D CNN only (:attr:`Method.tasks`): Adam at a constant
  ``1e-3`` and knob-free MARTHE over ``optax.adam`` from ``eta_0 = 1e-3``
  (Optax's default ``eps_root = 0``);
* learning-rate-free optimizers of ``optax.contrib`` at their defaults:
  ``prodigy``, ``dadapt_adamw``, ``dog``, ``mechanize(sgd(1.0))``,
  ``schedule_free_sgd`` (evaluated at
  ``optax.contrib.schedule_free_eval_params``; at ``eta_0`` and at its
  default ``learning_rate=1``) and SGD chained with ``reduce_on_plateau``
  fed the validation minibatch loss through ``value=``.

Each method reports, over seeds, its final validation and test accuracy, the
hyperparameters its user had to set (:attr:`Method.user_set`), its divergence
safeguard events where it counts them, its wall time
against constant SGD measured in the same process, and its learning-rate (or
effective step) trajectory where the method exposes one.
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
from marthe_optax import selection
from marthe_lab import data as data_lib
from marthe_lab import models
from marthe_lab import report
from marthe_lab import train as train_lib

TrainConfig = train_lib.TrainConfig
Arrays = train_lib.Arrays

# The 1-D CNN: two SAME-padded stride-2 convolutions and a dense head.
CNN_CHANNELS = (32, 32)
CNN_KERNEL = 5
CNN_STRIDE = 2


# ----------------------------------------------------------------------------
# Models.


class Model(NamedTuple):
  """A classifier: ``init(key, in_dim, num_classes)`` and ``apply(params, x)``."""

  name: str
  init: Callable[[jax.Array, int, int], Any]
  apply: Callable[[Any, jax.Array], jax.Array]


def init_cnn1d(
    key: jax.Array,
    length: int,
    num_classes: int,
    channels: Sequence[int] = CNN_CHANNELS,
    kernel: int = CNN_KERNEL,
    stride: int = CNN_STRIDE,
) -> list:
  """LeCun-normal kernels and zero biases of the 1-D CNN.

  Args:
    key: a PRNG key.
    length: the signal length (40 for MNIST-1D); one input channel.
    num_classes: the number of logits.
    channels: the output channels of each convolution.
    kernel: the convolution width.
    stride: the convolution stride (SAME padding: the length is divided by
      ``stride``, rounded up, at each layer).

  Returns:
    A list of ``{'kernel', 'bias'}`` dicts: ``[kernel, c_in, c_out]``
    convolution kernels, then the ``[features, num_classes]`` dense head.

  Examples:
    >>> import jax
    >>> p = init_cnn1d(jax.random.key(0), 40, 10)
    >>> [layer['kernel'].shape for layer in p]
    [(5, 1, 32), (5, 32, 32), (320, 10)]
  """
  init = jax.nn.initializers.lecun_normal()
  keys = jax.random.split(key, len(channels) + 1)
  params, c_in, n = [], 1, length
  for k, c in zip(keys, channels):
    params.append({
        "kernel": init(k, (kernel, c_in, c), jnp.float32),
        "bias": jnp.zeros(c, jnp.float32),
    })
    c_in, n = c, -(-n // stride)
  params.append({
      "kernel": init(keys[-1], (n * c_in, num_classes), jnp.float32),
      "bias": jnp.zeros(num_classes, jnp.float32),
  })
  return params


def conv1d_same(h: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """1-D cross-correlation with SAME padding, as XLA's ``conv_general_dilated``.

  Written as patches times a matrix (im2col): on CPU, under ``jax.vmap`` over
  seeds, this runs about ten times faster than ``lax.conv_general_dilated``
  for these small signals, with the same numbers.

  Args:
    h: ``[batch, width, c_in]`` signals.
    kernel: ``[k, c_in, c_out]`` kernel.
    stride: the stride; the output width is ``ceil(width / stride)`` and the
      padding is split as XLA's SAME does (the extra column on the right).

  Returns:
    ``[batch, ceil(width / stride), c_out]``.
  """
  k, c_in, c_out = kernel.shape
  width = h.shape[1]
  out_w = -(-width // stride)
  pad = max((out_w - 1) * stride + k - width, 0)
  hp = jnp.pad(h, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
  span = stride * (out_w - 1) + 1
  cols = jnp.stack([hp[:, i:i + span:stride, :] for i in range(k)], axis=2)
  return cols.reshape(h.shape[0], out_w, k * c_in) @ kernel.reshape(
      k * c_in, c_out)


def cnn1d_apply(params: list, x: jax.Array, stride: int = CNN_STRIDE) -> jax.Array:
  """Logits of signals ``x`` of shape ``[batch, length]`` (ReLU after each conv)."""
  h = x[..., None]
  for layer in params[:-1]:
    h = jax.nn.relu(conv1d_same(h, layer["kernel"], stride) + layer["bias"])
  h = h.reshape(h.shape[0], -1)
  return h @ params[-1]["kernel"] + params[-1]["bias"]


def get_model(name: str, config: TrainConfig) -> Model:
  """``'mlp'`` (section 5's MLP, widths ``config.hidden``) or ``'cnn1d'``."""
  if name == "mlp":
    return Model(
        "mlp",
        lambda key, d, k: models.init_mlp(key, d, config.hidden, k),
        models.mlp_apply,
    )
  if name == "cnn1d":
    return Model("cnn1d", init_cnn1d, cnn1d_apply)
  raise ValueError(f"Unknown model {name!r}; use 'mlp' or 'cnn1d'.")


def cross_entropy(apply: Callable, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of ``apply(params, x)`` against ``y``."""
  return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def accuracy(apply: Callable, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  """Fraction classified correctly; non-finite logits count as wrong."""
  logits = apply(params, x)
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return jnp.mean((jnp.argmax(logits, -1) == y) & finite)


# ----------------------------------------------------------------------------
# Methods.


def cosine_schedule(config: TrainConfig) -> optax.Schedule:
  """Cosine decay from ``eta_0`` to 0 over the horizon."""
  return optax.cosine_decay_schedule(config.learning_rate, config.steps)


def sgdr_periods(steps: int, cycles: int = 3, mult: int = 2) -> list[int]:
  """SGDR cycle lengths ``T0, mult T0, mult**2 T0, ...`` that cover ``steps``.

  ``T0 = ceil(steps / (1 + mult + ... + mult**(cycles-1)))``: with the
  defaults (``T_mult = 2`` as in the paper's section 6) three cycles of
  ``T0, 2 T0, 4 T0`` fill the horizon (the last one may run past it).

  Examples:
    >>> sgdr_periods(512)
    [74, 148, 296]
  """
  t0 = max(1, math.ceil(steps / sum(mult**i for i in range(cycles))))
  return [t0 * mult**i for i in range(cycles)]


def sgdr_schedule(config: TrainConfig) -> optax.Schedule:
  """``optax.sgdr_schedule``: cosine cycles from ``eta_0`` with warm restarts."""
  lr = config.learning_rate
  return optax.sgdr_schedule([
      dict(init_value=lr, peak_value=lr, warmup_steps=0, decay_steps=d,
           end_value=0.0)
      for d in sgdr_periods(config.steps)
  ])


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
  """``ceil(n_train / batch_size)``: reduce_on_plateau's accumulation size."""
  return max(1, -(-n_train // config.batch_size))


def _nan(*_):
  return jnp.asarray(jnp.nan, jnp.float32)


def _get(state, name):
  return jnp.asarray(optax.tree.get(state, name), jnp.float32)


def _dog_lr(state, t, config):
  """DoG's step ``max_dist / sqrt(sum ||g||^2 + eps)`` (eps = 1e-8, its default)."""
  del t, config
  return _get(state, "max_dist") / jnp.sqrt(_get(state, "sum_sq_norm_grads") + 1e-8)


class Method(NamedTuple):
  """One competitor, as the benchmark runs it.

  Attributes:
    name: a short key.
    label: the name shown in tables and plots.
    family: ``'schedule'`` (SGD with a fixed schedule), ``'hypergradient'``
      (HD / RTHO / MARTHE) or ``'lr-free'`` (``optax.contrib``).
    build: ``build(config, hyper, n_train) -> GradientTransformation``;
      ``hyper`` is the selected ``beta`` or ``kappa``, or a value of
      :attr:`grid` (ignored otherwise).
    feed: what the update receives besides the gradient: ``'none'``,
      ``'objective'`` (``value_fn`` and ``val_grads`` of a validation
      minibatch), ``'objective_value'`` (``val_grads`` of a validation
      minibatch, ``value=`` the training minibatch loss ``L_t(w_t)`` and,
      if :attr:`needs_value_fn`, ``value_fn``) or ``'value'`` (``value=``
      the validation minibatch loss).
    lr: ``lr(state, t, config)``, the learning rate (or effective step) used
      at step ``t``, read after the update; ``nan`` if not exposed.
    user_set: the hyperparameters the user has to set: arguments without a
      library default, and defaults this benchmark changed. The value that
      :func:`~marthe_optax.selection.select_hyper_lr_step` picks is not
      counted (the procedure picks it, on its default grid and divergence
      test, over the whole horizon: nothing more to set).
    selects: ``'beta'`` or ``'kappa'`` when chosen by
      :func:`~marthe_optax.selection.select_hyper_lr_step`, the name of the
      hyperparameter that :attr:`grid` holds, else ``None``.
    eval_params: ``eval_params(state, params)``: the params to evaluate
      (schedule-free's averaged sequence); ``None`` for the params themselves.
    notes: a short remark for the report.
    grid: values of ``hyper`` that are all trained, for every seed, and
      chosen in hindsight: the value with the best mean (over seeds) final
      validation accuracy is reported (:func:`best_in_hindsight`); every run
      counts in the method's time. ``None`` otherwise.
    tasks: the keys of :data:`TASKS` the method runs on; ``None`` for all.
    needs_value_fn: whether the ``'objective_value'`` feed passes
      ``value_fn`` (a method whose tangent forms a Hessian-vector product);
      a first-order method gets only ``val_grads`` and ``value``.
  """

  name: str
  label: str
  family: str
  build: Callable[[TrainConfig, jax.Array, int], optax.GradientTransformation]
  feed: str
  lr: Callable[[Any, jax.Array, TrainConfig], jax.Array]
  user_set: tuple
  selects: Optional[str] = None
  eval_params: Optional[Callable[[Any, Any], Any]] = None
  notes: str = ""
  grid: Optional[tuple] = None
  tasks: Optional[tuple] = None
  needs_value_fn: bool = True


def _sched_lr(make):
  return lambda state, t, config: jnp.asarray(make(config)(t), jnp.float32)


def _const_lr(state, t, config):
  del state, t
  return jnp.asarray(config.learning_rate, jnp.float32)


def _state_lr(state, t, config):
  del t, config
  return _get(state, "learning_rate")


def _sf_eval(state, params):
  return optax.contrib.schedule_free_eval_params(state, params)


def _adam_lr(state, t, config):
  del state, t, config
  return jnp.asarray(ADAM_LEARNING_RATE, jnp.float32)


# Constant SGD "in hindsight": half-decades from 1e-3 to 10, wide enough that
# the largest rates diverge on every task.
BEST_CONSTANT_GRID = tuple(
    float(f"{v:.3g}") for v in 10.0 ** np.arange(-3.0, 1.01, 0.5))

# Whether knob-free MARTHE at its default (``first_order=None``) forms a
# Hessian-vector product, so that the benchmark must pass ``value_fn``: the
# default tangent is first order, so it does not.
KNOB_FREE_NEEDS_VALUE_FN = False

# The Adam inner of the CNN rows: Optax's usual 1e-3 (eps_root = 0, the
# default).
ADAM_LEARNING_RATE = 1e-3


METHODS = {
    m.name: m
    for m in (
        Method(
            "sgd", "SGD constant", "schedule",
            lambda c, h, n: optax.sgd(c.learning_rate), "none", _const_lr,
            ("learning_rate",),
        ),
        Method(
            "cosine", "SGD cosine", "schedule",
            lambda c, h, n: optax.sgd(cosine_schedule(c)), "none",
            _sched_lr(cosine_schedule), ("learning_rate", "decay_steps"),
        ),
        Method(
            "sgdr", "SGD SGDR", "schedule",
            lambda c, h, n: optax.sgd(sgdr_schedule(c)), "none",
            _sched_lr(sgdr_schedule), ("learning_rate", "T0", "T_mult"),
            notes="3 cycles T0, 2T0, 4T0 covering T",
        ),
        Method(
            "sgd_best", "SGD best constant (hindsight)", "schedule",
            lambda c, h, n: optax.inject_hyperparams(optax.sgd)(
                learning_rate=h),
            "none", _state_lr, ("learning_rate grid",), selects="lr",
            grid=BEST_CONSTANT_GRID,
            notes="every rate of the grid trained; best mean validation "
            "accuracy reported",
        ),
        Method(
            "hd", "HD", "hypergradient",
            lambda c, h, n: mo.hd(optax.sgd, c.learning_rate, hyper_lr=h),
            "objective",
            _state_lr, ("learning_rate",), selects="beta",
            notes="fixed beta from select_hyper_lr_step",
        ),
        Method(
            "rtho", "RTHO", "hypergradient",
            lambda c, h, n: mo.rtho(optax.sgd, c.learning_rate, hyper_lr=h),
            "objective",
            _state_lr, ("learning_rate",), selects="beta",
            notes="fixed beta from select_hyper_lr_step",
        ),
        Method(
            "marthe", "MARTHE", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, c.learning_rate,
                                      hyper_lr_step=h),
            "objective", _state_lr, ("learning_rate",),
            selects="kappa", notes="adaptive mu and beta, kappa selected",
        ),
        Method(
            "marthe_kf", "MARTHE knob-free (SGD)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate),
            "objective_value", _state_lr, ("learning_rate",),
            needs_value_fn=KNOB_FREE_NEEDS_VALUE_FN,
            notes="package defaults; value = training loss",
        ),
        Method(
            "marthe_kf_first_order", "MARTHE knob-free first-order (SGD)",
            "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate,
                                      first_order=True),
            "objective_value", _state_lr, ("learning_rate",),
            needs_value_fn=False,
            notes="first_order=True: no Hessian-vector product, no value_fn",
        ),
        Method(
            "marthe_kf_full", "MARTHE knob-free full (SGD)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.sgd, learning_rate=c.learning_rate,
                                      first_order=False),
            "objective_value", _state_lr, ("learning_rate",),
            notes="first_order=False: the tangent's Hessian-vector product",
        ),
        Method(
            "adam", "Adam constant 1e-3", "schedule",
            lambda c, h, n: optax.adam(ADAM_LEARNING_RATE), "none", _adam_lr,
            ("learning_rate",), tasks=("mnist1d-cnn",),
            notes="reference of the knob-free Adam row",
        ),
        Method(
            "marthe_kf_adam", "MARTHE knob-free (Adam)", "hypergradient",
            lambda c, h, n: mo.marthe(optax.adam,
                                      learning_rate=ADAM_LEARNING_RATE),
            "objective_value", _state_lr, ("learning_rate",),
            tasks=("mnist1d-cnn",), needs_value_fn=KNOB_FREE_NEEDS_VALUE_FN,
            notes="eta_0 = 1e-3, Optax's default eps_root = 0",
        ),
        Method(
            "prodigy", "Prodigy", "lr-free",
            lambda c, h, n: optax.contrib.prodigy(), "none",
            lambda s, t, c: _get(s, "estim_lr"), (),
            notes="Adam-type; step = d * lr (lr = 1)",
        ),
        Method(
            "dadapt", "D-Adapt AdamW", "lr-free",
            lambda c, h, n: optax.contrib.dadapt_adamw(), "none",
            lambda s, t, c: _get(s, "estim_lr"), (),
            notes="Adam-type; step = d * lr (lr = 1)",
        ),
        Method(
            "dog", "DoG", "lr-free",
            lambda c, h, n: optax.contrib.dog(), "none", _dog_lr, (),
            notes="no iterate averaging",
        ),
        Method(
            "mechanic", "Mechanic(SGD)", "lr-free",
            lambda c, h, n: optax.contrib.mechanize(optax.sgd(1.0)), "none",
            lambda s, t, c: jnp.sum(_get(s, "s")), ("base_learning_rate",),
            notes="base SGD lr 1.0 as its docs advise; step = sum(s)",
        ),
        Method(
            "schedule_free", "Schedule-free SGD", "lr-free",
            lambda c, h, n: optax.contrib.schedule_free_sgd(c.learning_rate),
            "none", _nan, ("learning_rate",), eval_params=_sf_eval,
            notes="lr = eta_0; evaluated at schedule_free_eval_params",
        ),
        Method(
            "schedule_free_default", "Schedule-free SGD (lr=1 default)",
            "lr-free",
            lambda c, h, n: optax.contrib.schedule_free_sgd(), "none", _nan, (),
            eval_params=_sf_eval,
            notes="all defaults; evaluated at schedule_free_eval_params",
        ),
        Method(
            "plateau", "SGD + reduce_on_plateau", "lr-free",
            lambda c, h, n: optax.chain(
                optax.sgd(c.learning_rate),
                optax.contrib.reduce_on_plateau(
                    accumulation_size=steps_per_epoch(c, n)),
            ),
            "value",
            lambda s, t, c: c.learning_rate * _get(s, "scale"),
            ("learning_rate", "accumulation_size"),
            notes="fed the validation minibatch loss, averaged per epoch",
        ),
    )
}


# ----------------------------------------------------------------------------
# Training runs.

RunInputs = train_lib.RunInputs


def seed_inputs(
    model: str,
    arrays: Arrays,
    config: TrainConfig,
    seed: jax.Array,
    num_classes: int = 10,
) -> RunInputs:
  """``w_0`` and the minibatch progressions of ``seed``.

  Exactly :func:`marthe_lab.train.seed_inputs` (the section-5
  experiment's ``w_0`` and minibatches at the same seed); for the CNN,
  ``w_0`` is drawn by :func:`init_cnn1d` from the same key.
  """
  inputs = train_lib.seed_inputs(seed, arrays, config, num_classes)
  if model == "mlp":
    return inputs
  net = get_model(model, config)
  params = net.init(train_lib.seed_keys(seed)[0], arrays.x_train.shape[1],
                    num_classes)
  return inputs._replace(params=params)


@functools.partial(jax.jit, static_argnames=("model", "config", "num_classes"))
def make_inputs(
    arrays: Arrays,
    seeds: jax.Array,
    *,
    model: str,
    config: TrainConfig,
    num_classes: int = 10,
) -> RunInputs:
  """:func:`seed_inputs` of every seed (leading axis ``S``; once per task)."""
  return jax.vmap(
      lambda s: seed_inputs(model, arrays, config, s, num_classes))(seeds)


def train_step(
    method: Method,
    tx: optax.GradientTransformationExtraArgs,
    loss: Callable[[Any, jax.Array, jax.Array], jax.Array],
    config: TrainConfig,
    params: Any,
    state: Any,
    t: jax.Array,
    batch: tuple[jax.Array, jax.Array],
    val_batch: tuple[jax.Array, jax.Array],
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """One step of ``method``, fed what it reads (see :attr:`Method.feed`).

  Args:
    method: the method.
    tx: its transformation (``method.build(...)`` with extra-args support).
    loss: ``loss(params, x, y) -> scalar``.
    config: the inner problem.
    params: the current params ``w_t``.
    state: the optimizer state.
    t: the step index.
    batch: the training minibatch ``(x, y)``.
    val_batch: the validation minibatch ``(x, y)``.

  Returns:
    ``(params, state, lr, value)``: the new params and state, the learning
    rate (or effective step) of this step, and ``L_t(w_t)``.
  """
  xb, yb = batch
  value, grads = jax.value_and_grad(loss)(params, xb, yb)
  if method.feed == "objective":
    extra = dict(value_fn=lambda p: loss(p, xb, yb),
                 val_grads=jax.grad(loss)(params, *val_batch))
  elif method.feed == "objective_value":
    extra = dict(val_grads=jax.grad(loss)(params, *val_batch), value=value)
    if method.needs_value_fn:
      extra["value_fn"] = lambda p: loss(p, xb, yb)
  elif method.feed == "value":
    extra = dict(value=loss(params, *val_batch))
  else:
    extra = {}
  updates, state = tx.update(grads, state, params, **extra)
  params = optax.apply_updates(params, updates)
  return params, state, method.lr(state, t, config), value


def evaluation_params(method: Method, state: Any, params: Any) -> Any:
  """The params at which ``method`` is evaluated (schedule-free: its average)."""
  return params if method.eval_params is None else method.eval_params(state, params)


def fit(
    method: Method,
    model: Model,
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    hyper: jax.Array,
) -> tuple[Any, Any, jax.Array, jax.Array]:
  """``config.steps`` steps of ``method`` (``lax.scan``) from one seed's inputs.

  Args:
    method: the method.
    model: the model.
    arrays: the data.
    config: the inner problem.
    inputs: one seed's :class:`RunInputs` (``w_0`` and minibatch indices).
    hyper: the ``beta`` / ``kappa`` of the hypergradient methods (ignored by
      the others).

  Returns:
    ``(params, state, learning_rates, train_losses)`` after the last step;
    the last two have shape ``[steps]``.
  """
  x_tr, y_tr, x_val, y_val = arrays[:4]
  loss = functools.partial(cross_entropy, model.apply)
  tx = optax.with_extra_args_support(
      method.build(config, hyper, int(x_tr.shape[0])))

  def step(carry, xs):
    t, idx, vidx = xs
    val_batch = (x_val, y_val) if vidx.shape[0] == 0 else (
        x_val[vidx], y_val[vidx])
    params, state, lr, value = train_step(
        method, tx, loss, config, *carry, t, (x_tr[idx], y_tr[idx]), val_batch)
    return (params, state), (lr, value)

  (params, state), (lrs, losses) = jax.lax.scan(
      step, (inputs.params, tx.init(inputs.params)),
      (jnp.arange(config.steps), inputs.batches[:config.steps],
       inputs.val_batches[:config.steps]))
  return params, state, lrs, losses


class Run(NamedTuple):
  """One run's results (arrays with leading axes when vmapped).

  Attributes:
    learning_rate: ``[steps]`` learning rate / effective step per step
      (``nan`` where the method exposes none).
    train_loss: ``[steps]`` minibatch training loss ``L_t(w_t)``.
    initial_val_loss: validation loss at ``w_0``.
    val_loss: final validation loss (whole set, at the evaluation params).
    val_accuracy: final validation accuracy.
    test_loss: final test loss.
    test_accuracy: final test accuracy.
    diverged: a non-finite training loss, or a final validation loss that is
      non-finite or above the initial one.
    safeguard_count: the ``'safeguard_count'`` of the final optimizer state
      (MARTHE's knob-free mode: divergence safeguard events); ``nan`` where
      the state has none.
    nonfinite_count: the same for ``'nonfinite_count'`` (steps whose
      hypergradient was not finite).
    repaired_count: the same for ``'repaired_count'`` (steps where NaN
      tangent entries at a finite primal were set to their limit 0).
  """

  learning_rate: jax.Array
  train_loss: jax.Array
  initial_val_loss: jax.Array
  val_loss: jax.Array
  val_accuracy: jax.Array
  test_loss: jax.Array
  test_accuracy: jax.Array
  diverged: jax.Array
  safeguard_count: jax.Array
  nonfinite_count: jax.Array
  repaired_count: jax.Array


def _count(state: Any, name: str) -> jax.Array:
  """``optax.tree.get(state, name)`` as a float; ``nan`` when absent."""
  value = optax.tree.get(state, name)
  return jnp.asarray(jnp.nan if value is None else value, jnp.float32)


def train(
    method: Method,
    model: Model,
    arrays: Arrays,
    config: TrainConfig,
    inputs: RunInputs,
    hyper: jax.Array,
) -> Run:
  """One run (:func:`fit`), evaluated at the method's evaluation params.

  The arguments are those of :func:`fit`.

  Returns:
    A :class:`Run`.
  """
  _, _, x_val, y_val, x_te, y_te = arrays
  loss = functools.partial(cross_entropy, model.apply)
  acc = functools.partial(accuracy, model.apply)
  params, state, lrs, losses = fit(method, model, arrays, config, inputs, hyper)
  params = evaluation_params(method, state, params)
  initial_val_loss = loss(inputs.params, x_val, y_val)
  val_loss = loss(params, x_val, y_val)
  diverged = (~jnp.all(jnp.isfinite(losses)) | ~jnp.isfinite(val_loss)
              | (val_loss > initial_val_loss))
  return Run(
      learning_rate=lrs,
      train_loss=losses,
      initial_val_loss=initial_val_loss,
      val_loss=val_loss,
      val_accuracy=acc(params, x_val, y_val),
      test_loss=loss(params, x_te, y_te),
      test_accuracy=acc(params, x_te, y_te),
      diverged=diverged,
      safeguard_count=_count(state, "safeguard_count"),
      nonfinite_count=_count(state, "nonfinite_count"),
      repaired_count=_count(state, "repaired_count"),
  )


def get_method(method: "str | Method") -> Method:
  """``METHODS[method]``, or ``method`` itself if it is a :class:`Method`."""
  return method if isinstance(method, Method) else METHODS[method]


@functools.partial(jax.jit, static_argnames=("method", "model", "config"))
def run_rows(
    arrays: Arrays,
    inputs: RunInputs,
    hypers: jax.Array,
    *,
    method: "str | Method",
    model: str,
    config: TrainConfig,
) -> Run:
  """:func:`train` vmapped over rows ``(inputs[i], hypers[i])``.

  One compiled program per method; the rows are the seeds (for the
  hypergradient methods ``hypers`` holds one candidate of the selection,
  the same in every row; for a method with a :attr:`Method.grid`, one value
  of the grid). ``method`` is a key of :data:`METHODS` or a :class:`Method`
  (hashable: its fields are strings, tuples and functions).
  """
  m, net = get_method(method), get_model(model, config)
  return jax.vmap(lambda i, h: train(m, net, arrays, config, i, h))(
      inputs, hypers)


def candidates() -> np.ndarray:
  """The selection's candidates: its default decimated grid 1, 0.1, ..., 1e-9."""
  return selection.decimated_grid(1.0, 10)


def _curve(curves: jax.Array, log_grid: jax.Array, value: jax.Array) -> jax.Array:
  return curves[jnp.argmin(jnp.abs(log_grid - jnp.log(value)))]


def select_index(
    curves: np.ndarray, grid: np.ndarray
) -> tuple[Optional[selection.HyperLrSelection], int]:
  """The paper's selection on one seed's whole-horizon runs.

  :func:`marthe_optax.selection.select_hyper_lr_step` over ``grid``, whose
  ``run`` returns the training-loss curve already computed for the
  candidate: the largest value whose minibatch training loss stays finite
  and below twice its first value over the whole horizon.

  Args:
    curves: ``[len(grid), steps]`` training losses, one row per candidate.
    grid: the candidates (decreasing).

  Returns:
    The selection and the index of the selected candidate; ``(None, i)``
    with ``i`` the smallest candidate when every candidate diverged.
  """
  log_grid = jnp.log(jnp.asarray(grid, jnp.float32))
  run = jax.tree_util.Partial(_curve, jnp.asarray(curves), log_grid)
  try:
    chosen = selection.select_hyper_lr_step(run, candidates=grid)
  except ValueError:  # every candidate diverged
    return None, int(np.argmin(grid))
  return chosen, int(np.argmin(np.abs(np.log(grid) - np.log(chosen.value))))


def best_in_hindsight(val_accuracy: np.ndarray) -> int:
  """The index of the grid value with the best mean final validation accuracy.

  Args:
    val_accuracy: ``[len(grid), S]`` final validation accuracies, one row
      per grid value (``nan`` counts as the worst).

  Returns:
    The row whose mean over seeds is the largest; ties go to the first such
    row (the smallest learning rate of an increasing grid).

  Examples:
    >>> import numpy as np
    >>> best_in_hindsight(np.array([[0.5, 0.7], [0.8, 0.6], [0.9, np.nan]]))
    1
  """
  mean = np.mean(np.asarray(val_accuracy, np.float64), axis=-1)
  return int(np.argmax(np.where(np.isnan(mean), -np.inf, mean)))


# ----------------------------------------------------------------------------
# The benchmark.


class Task(NamedTuple):
  """A dataset and a model."""

  name: str
  dataset: str  # 'digits' or 'mnist1d'
  model: str  # 'mlp' or 'cnn1d'


TASKS = {
    t.name: t
    for t in (
        Task("digits-mlp", "digits", "mlp"),
        Task("mnist1d-mlp", "mnist1d", "mlp"),
        Task("mnist1d-cnn", "mnist1d", "cnn1d"),
    )
}


class Timing(NamedTuple):
  """Wall-clock seconds of one method on one task (all seeds together).

  Attributes:
    compile_s: compiling the vmapped program.
    run_s: executing it (median of ``run_samples``): the seeds' runs, and for
      the hypergradient methods every candidate the selection tried, for
      every seed.
    select_s: reading the selection off the candidates' loss curves.
    runs_per_seed: training runs per seed (1, or the candidates tried).
    reference_s: constant SGD's run time, measured right before (median).
    run_samples: every timed execution.
  """

  compile_s: float
  run_s: float
  select_s: float
  runs_per_seed: int
  reference_s: float
  run_samples: tuple = ()

  @property
  def total_s(self) -> float:
    return self.compile_s + self.run_s + self.select_s


class MethodResult(NamedTuple):
  """What one method produced on one task.

  Attributes:
    method: its key in :data:`METHODS`.
    run: the reported :class:`Run` per seed (NumPy, leading axis ``S``): for
      the hypergradient methods, each seed's run at its selected value.
    timing: the :class:`Timing`.
    selected: ``[S]`` selected ``beta`` / ``kappa`` (``nan`` where every
      candidate diverged), or ``None``.
    candidate_diverged: ``[S, C]`` the selection's divergence verdicts
      (``False`` for candidates below every seed's first survivor, which
      were not run; for a :attr:`Method.grid`, :attr:`Run.diverged` of every
      value), or ``None``.
    grid: the ``C`` candidates or grid values, or ``None``.
    candidate_val_accuracy: ``[S, C]`` final validation accuracy of every
      grid value (methods with a :attr:`Method.grid`), or ``None``.
  """

  method: str
  run: Run
  timing: Timing
  selected: Optional[np.ndarray]
  candidate_diverged: Optional[np.ndarray]
  grid: Optional[np.ndarray] = None
  candidate_val_accuracy: Optional[np.ndarray] = None


class Prepared(NamedTuple):
  """A task ready to run: its data and every seed's inputs."""

  task: Task
  dataset: data_lib.Dataset
  arrays: Arrays
  inputs: RunInputs  # leading axis S
  setup_s: float


def prepare(task: Task, config: TrainConfig, seeds: Sequence[int]) -> Prepared:
  """Loads the data and draws every seed's ``w_0`` and minibatches."""
  t0 = time.perf_counter()
  dataset = data_lib.load(task.dataset)
  arrays = Arrays.from_dataset(dataset)
  inputs = jax.block_until_ready(make_inputs(
      arrays, jnp.asarray(seeds, jnp.int32), model=task.model, config=config,
      num_classes=dataset.num_classes))
  return Prepared(task, dataset, arrays, inputs, time.perf_counter() - t0)


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


def _diverged(curves: np.ndarray, growth: float = 2.0) -> np.ndarray:
  """:func:`marthe_optax.selection.divergence` (default growth) in NumPy."""
  with np.errstate(invalid="ignore"):
    grew = np.any(curves > growth * curves[..., :1], axis=-1)
  return ~np.all(np.isfinite(curves), axis=-1) | grew


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
  :func:`select_index`: the same value as evaluating all candidates, and the
  winner's run is the trained model). Every run counts in the method's time.

  Attributes:
    method: the key in :data:`METHODS` (or the :class:`Method`'s name).
    spec: the :class:`Method`.
    grid: the values of ``hyper`` it may run (``[0]`` for plain methods).
    compile_s: seconds spent compiling.
  """

  def __init__(self, method: "str | Method", prepared: Prepared,
               config: TrainConfig, chunk: Optional[int] = None):
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
    self.hypers = [jax.device_put(np.full(size, v, np.float32))
                   for v in self.grid]
    t0 = time.perf_counter()
    self.compiled = run_rows.lower(
        self.arrays, self.parts[0], self.hypers[0], method=method,
        model=prepared.task.model, config=config).compile()
    self.task = prepared.task.name
    self.compile_s = time.perf_counter() - t0

  def execute(self) -> Run:
    """The runs, ``[tried, S, ...]``: every value of a :attr:`Method.grid`;
    candidates in decreasing order until every seed has a survivor; or one
    "candidate" for plain methods."""
    runs = []
    for hyper in self.hypers:
      runs.append(_execute(self.compiled, self.arrays, self.parts, hyper,
                           self.n_seeds))
      if self.spec.grid is not None:
        continue
      if not self.spec.selects:
        break
      curves = np.stack([r.train_loss for r in runs])  # [tried, S, steps]
      if not _diverged(curves).all(axis=0).any():  # every seed has a survivor
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
  while len(samples) < max(1, repeats) and (
      not samples or sum(samples) < min_timing_s):
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
    i = best_in_hindsight(run.val_accuracy)
    selected = np.full(n_seeds, grid[i])
    diverged = np.asarray(run.diverged).T  # [S, C]
    candidate_val = np.asarray(run.val_accuracy).T
    run = jax.tree.map(lambda a: a[i], run)
    select_s = time.perf_counter() - t0
  elif m.selects:
    t0 = time.perf_counter()
    picks, selected, diverged = [], [], []
    for s in range(n_seeds):
      chosen, i = select_index(run.train_loss[:, s], grid[:tried])
      picks.append(i)
      selected.append(np.nan if chosen is None else chosen.value)
      verdict = (np.ones(tried, bool) if chosen is None
                 else np.asarray(chosen.diverged))
      # Candidates below the first survivor of every seed were not needed.
      diverged.append(np.concatenate([verdict, np.zeros(len(grid) - tried,
                                                        bool)]))
    run = jax.tree.map(lambda a: a[np.asarray(picks), np.arange(n_seeds)], run)
    selected, diverged = np.asarray(selected), np.stack(diverged)
    select_s = time.perf_counter() - t0
  else:
    run = jax.tree.map(lambda a: a[0], run)
  return MethodResult(
      method=runner.method,
      run=run,
      timing=Timing(runner.compile_s, run_s, select_s, tried, ref_s,
                    tuple(samples)),
      selected=selected,
      candidate_diverged=diverged,
      grid=grid if m.selects else None,
      candidate_val_accuracy=candidate_val,
  )


def n_params(model: str, dataset: data_lib.Dataset, config: TrainConfig) -> int:
  """The number of trainable parameters of ``model`` on ``dataset``."""
  shapes = jax.eval_shape(
      lambda k: get_model(model, config).init(
          k, dataset.x_train.shape[1], dataset.num_classes),
      jax.random.key(0))
  return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


def summarize(result: MethodResult, sgd: Timing) -> dict:
  """JSON-ready summary of one method, times as ratios to constant SGD.

  ``time.total_ratio`` is everything the method cost on this task
  (compilation, all its training runs, the selection) over the same for
  constant SGD; ``time.run_ratio`` is the execution time of one training run
  over one SGD run (for the hypergradient methods the selection's runs are
  divided by the number of candidates tried). SGD's run time is the one
  measured next to the method's (:attr:`Timing.reference_s`).
  """
  m, r, t = get_method(result.method), result.run, result.timing
  lr = r.learning_rate
  has_lr = bool(np.isfinite(lr).any())
  stat = lambda a: dict(mean=float(np.mean(a)), std=float(np.std(a)),
                        per_seed=np.asarray(a, np.float64))
  return dict(
      method=m.name,
      label=m.label,
      family=m.family,
      notes=m.notes,
      user_set=list(m.user_set),
      n_user_set=len(m.user_set),
      selects=m.selects,
      selected=result.selected,
      candidates=result.grid,
      candidate_diverged=result.candidate_diverged,
      candidate_val_accuracy=result.candidate_val_accuracy,
      val_accuracy=stat(r.val_accuracy),
      test_accuracy=stat(r.test_accuracy),
      val_loss=stat(r.val_loss),
      test_loss=stat(r.test_loss),
      diverged=int(np.sum(r.diverged)),
      seeds=int(len(r.val_accuracy)),
      safeguard_count=_counts(r.safeguard_count),
      nonfinite_count=_counts(r.nonfinite_count),
      repaired_count=_counts(r.repaired_count),
      time=dict(
          compile_s=t.compile_s, run_s=t.run_s, select_s=t.select_s,
          total_s=t.total_s, runs_per_seed=t.runs_per_seed,
          reference_s=t.reference_s, run_samples=list(t.run_samples),
          run_ratio=(t.run_s / t.runs_per_seed) / t.reference_s,
          total_ratio=t.total_s / (sgd.compile_s + t.reference_s),
      ),
      learning_rate=dict(
          exposed=has_lr,
          mean=np.nanmean(lr, axis=0) if has_lr else None,
          seed0=lr[0] if has_lr else None,
          final_mean=float(np.nanmean(lr[:, -1])) if has_lr else None,
          max_mean=float(np.nanmean(np.nanmax(lr, axis=1))) if has_lr else None,
      ),
      train_loss_mean=np.mean(r.train_loss, axis=0),
  )


def _counts(values: np.ndarray) -> Optional[list]:
  """Per-seed event counts as ints; ``None`` where the state has none."""
  values = np.asarray(values, np.float64)
  if not np.all(np.isfinite(values)):
    return None
  return [int(v) for v in values]


TABLE_HEADER = (
    "task", "method", "val acc %", "test acc %", "# set", "selected",
    "time x SGD", "run x SGD", "diverged", "safeguards", "final lr",
)


def _selected_text(summary: dict) -> str:
  sel = summary["selected"]
  if sel is None:
    return "-"
  vals = sorted({v for v in sel if v is not None})
  text = "/".join(report.format_value(v) for v in vals) or "none"
  return f"{summary['selects']}={text}"


def table_rows(tasks: dict) -> list[list[str]]:
  """Rows of the results table, one per (task, method)."""
  rows = []
  for task_name, task in tasks.items():
    for s in task["methods"]:
      final = s["learning_rate"]["final_mean"]
      rows.append([
          task_name, s["label"],
          report.mean_std(s["val_accuracy"]["per_seed"]),
          report.mean_std(s["test_accuracy"]["per_seed"]),
          str(s["n_user_set"]), _selected_text(s),
          f"{s['time']['total_ratio']:.2f}", f"{s['time']['run_ratio']:.2f}",
          f"{s['diverged']}/{s['seeds']}",
          "-" if s["safeguard_count"] is None else str(
              sum(s["safeguard_count"])),
          "-" if final is None or not math.isfinite(final) else f"{final:.2e}",
      ])
  return rows


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
      m for m in methods
      if m != "sgd" and (METHODS[m].tasks is None or task in METHODS[m].tasks)
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


# ----------------------------------------------------------------------------
# Figures.

_MARKERS = {"schedule": "s", "hypergradient": "o", "lr-free": "^"}


def plot_accuracy_vs_time(tasks: dict, path: str) -> None:
  """One panel per task: test accuracy (mean ± std over seeds) against the
  whole run's wall time (selection and compilation included) over constant
  SGD's, log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top

  names = list(tasks)
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4),
                           squeeze=False)
  cmap = plt.get_cmap("tab20")
  for ax, name in zip(axes[0], names):
    for i, s in enumerate(tasks[name]["methods"]):
      acc = 100 * np.asarray(s["test_accuracy"]["per_seed"])
      ax.errorbar(
          s["time"]["total_ratio"], acc.mean(), yerr=acc.std(),
          marker=_MARKERS[s["family"]], color=cmap(i % 20), ms=7, capsize=3,
          ls="none", label=s["label"])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("wall time / constant SGD (selection + compile + run)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(f"{name} ({tasks[name]['n_params']:,} params)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_schedules(tasks: dict, path: str) -> None:
  """One panel per task: the mean (over seeds) learning rate or effective
  step of every method that exposes one, log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(tasks)
  fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.0),
                           squeeze=False)
  cmap = plt.get_cmap("tab20")
  for ax, name in zip(axes[0], names):
    for i, s in enumerate(tasks[name]["methods"]):
      lr = s["learning_rate"]["mean"]
      if lr is None:
        continue
      lr = np.asarray(lr, np.float64)
      ax.plot(np.where(lr > 0, lr, np.nan), color=cmap(i % 20), lw=1.2,
              ls="--" if s["family"] == "lr-free" else "-", label=s["label"])
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-4)  # the cosine and SGDR tails go on to 0
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate / effective step (mean over seeds)")
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3, which="both")
  axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
