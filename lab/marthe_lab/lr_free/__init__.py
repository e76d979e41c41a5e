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
  those runs count in the method's time; the verdicts are read by
  :func:`marthe_lab.choose.select_from_curves`); and MARTHE's knob-free mode,
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

The package, by concern:

* :mod:`~marthe_lab.lr_free.tasks`: the data, the models (the 1-D CNN) and
  every seed's inputs;
* :mod:`~marthe_lab.lr_free.methods`: :class:`Method` and :data:`METHODS`,
  the benchmark's rows, each an entry of the one registry
  :data:`marthe_lab.methods.METHODS`;
* :mod:`~marthe_lab.lr_free.runs`: one run (:func:`fit`: the step builder and
  loop of :mod:`marthe_lab.loop`; :func:`train`), vmapped over seeds
  (:func:`run_rows`);
* :mod:`~marthe_lab.lr_free.runner`: :class:`Runner`, :func:`run_method`,
  :func:`run_benchmark`;
* :mod:`~marthe_lab.lr_free.results`: summaries, the table and the figures.
"""

# pylint: disable=g-importing-member
from marthe_lab.lr_free.methods import (
  ADAM_LEARNING_RATE,
  BEST_CONSTANT_GRID,
  METHODS,
  Method,
  cosine_schedule,
  get_method,
  sgdr_periods,
  sgdr_schedule,
)
from marthe_lab.lr_free.results import (
  TABLE_HEADER,
  MethodResult,
  Timing,
  plot_accuracy_vs_time,
  plot_schedules,
  summarize,
  table_rows,
)
from marthe_lab.lr_free.runner import Runner, run_benchmark, run_method, task_methods
from marthe_lab.lr_free.runs import Run, candidates, fit, run_rows, train
from marthe_lab.lr_free.tasks import (
  CNN_CHANNELS,
  CNN_KERNEL,
  CNN_STRIDE,
  TASKS,
  Arrays,
  Prepared,
  RunInputs,
  Task,
  TrainConfig,
  cnn1d_apply,
  conv1d_same,
  get_model,
  init_cnn1d,
  make_inputs,
  n_params,
  prepare,
  seed_inputs,
)
