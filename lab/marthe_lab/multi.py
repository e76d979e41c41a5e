# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Several hyperparameters on the section-5 digits task (the several-hyperparameters row).

The same protocol as :mod:`~marthe_lab.schedules` (splits, MLP,
SGD with minibatches of 100, ``T`` steps from ``eta_0``, ``E`` = validation
cross-entropy, seeds vmapped): constant ``eta_0``; full MARTHE on the single
learning rate; and full MARTHE tuning one learning rate per layer and the
weight decay together (:func:`marthe_optax.marthe_multi`), each MARTHE over
the same ``kappa`` grid (one ``kappa`` for every hyperparameter).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax as mo
from marthe_lab import train as train_lib

WEIGHT_DECAY_0 = 1e-4


def per_layer_labels(params):
  """Group ``layer{i}`` for every leaf of the MLP's ``i``-th layer."""
  return [jax.tree.map(lambda _, i=i: f"layer{i}", layer) for i, layer in enumerate(params)]


def multi_inner(learning_rate, weight_decay):
  """SGD with per-layer learning rates and a weight decay, for ``mo.marthe_multi``."""
  return optax.chain(
    optax.add_decayed_weights(weight_decay),
    mo.per_group(optax.sgd, per_layer_labels)(learning_rate=learning_rate),
  )


def multi_hyperparams(config: train_lib.TrainConfig) -> dict:
  """The initial hyperparameters: ``eta_0`` for every layer and :data:`WEIGHT_DECAY_0`."""
  layers = len(config.hidden) + 1
  return {
    "learning_rate": {f"layer{i}": config.learning_rate for i in range(layers)},
    "weight_decay": WEIGHT_DECAY_0,
  }


class MultiResult(NamedTuple):
  kappas: np.ndarray  # [G]
  constant: train_lib.RunResult  # [S]
  single: train_lib.RunResult  # [G * S], kappa-major
  multi: train_lib.RunResult  # [G * S], kappa-major
  best_kappa: float  # the multi run's best kappa by mean validation accuracy
  final_hyperparams: dict  # per-layer learning rates and weight decay there, [S]


def _run_kwargs(which, arrays, config, inputs, seed, kappa):
  """The :func:`~marthe_lab.train.train` arguments of ``which`` (``'single'`` or ``'multi'``) at seed ``seed``."""
  row = jax.tree.map(lambda a: a[seed], inputs)
  if which == "single":  # mo.marthe(optax.sgd, eta_0, hyper_lr_step=kappa)
    return dict(method="marthe", arrays=arrays, config=config, inputs=row, value=kappa)
  return dict(
    method="marthe_multi",
    arrays=arrays,
    config=config,
    inputs=row,
    value=kappa,
    inner=multi_inner,
    learning_rate=multi_hyperparams(config),
  )


@functools.partial(jax.jit, static_argnames=("config", "which"))
def _run(arrays, config, inputs, seeds, kappas, which):
  return jax.vmap(lambda s, k: train_lib.train(**_run_kwargs(which, arrays, config, inputs, s, k)))(
    seeds, kappas
  )


@functools.partial(jax.jit, static_argnames=("config",))
def _final_hyperparams(arrays, config, inputs, seeds, kappas):
  """The per-layer learning rates and weight decay at the end of each run."""
  return jax.vmap(
    lambda s, k: (
      train_lib.fit(**_run_kwargs("multi", arrays, config, inputs, s, k)).opt_state.hyperparams
    )
  )(seeds, kappas)


def run(
  dataset, config: train_lib.TrainConfig, num_seeds: int, kappas, progress=None
) -> MultiResult:
  """Constant, single-learning-rate MARTHE and per-layer + weight-decay MARTHE.

  Args:
    dataset: a :class:`~marthe_lab.data.Dataset`.
    config: the inner problem.
    num_seeds: seeds ``0 .. num_seeds - 1`` (vmapped).
    kappas: the grid of ``hyper_lr_step`` values, shared by both MARTHEs.
    progress: called with a short label after each phase.

  Returns:
    A :class:`MultiResult`.
  """
  tick = progress or (lambda _: None)
  arrays = train_lib.Arrays.from_dataset(dataset)
  seeds = jnp.arange(num_seeds)
  inputs = train_lib.make_inputs(seeds, arrays, config, dataset.num_classes)
  kappas = np.asarray(kappas, np.float32)
  grid_seeds = jnp.tile(seeds, len(kappas))
  grid_kappas = jnp.repeat(jnp.asarray(kappas), num_seeds)
  to_np = lambda tree: jax.tree.map(np.asarray, tree)
  constant = to_np(_run(arrays, config, inputs, seeds, jnp.zeros(num_seeds), "single"))
  tick("constant")
  single = to_np(_run(arrays, config, inputs, grid_seeds, grid_kappas, "single"))
  tick("MARTHE")
  multi = to_np(_run(arrays, config, inputs, grid_seeds, grid_kappas, "multi"))
  tick("MARTHE per-layer + wd")
  val = multi.val_accuracy.reshape(len(kappas), num_seeds).mean(axis=1)
  best = float(kappas[int(np.nanargmax(np.where(np.isfinite(val), val, -1)))])
  hyper = to_np(_final_hyperparams(arrays, config, inputs, seeds, jnp.full(num_seeds, best)))
  tick("final hyperparameters")
  return MultiResult(kappas, constant, single, multi, best, hyper)
