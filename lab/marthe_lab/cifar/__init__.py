# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Section 6 of the paper: learning-rate schedules for VGG-11 and ResNet-18 on CIFAR.

The setting of the paper: batch 128, 200 epochs, training loss ``L`` = cross
entropy + weight decay ``5e-4`` (``0.5 * 5e-4 * ||w||^2`` on every parameter,
as PyTorch's ``weight_decay=5e-4``), objective ``E`` = the unregularised cross
entropy on a validation split carved from the training set (5000 images, the
same split for every method and seed), 5 seeds. VGG-11-BN on CIFAR-10 with
SGD-momentum 0.9 and ``eta_0 = 0.1``; ResNet-18 on CIFAR-100 with Adam and
``eta_0 = 3e-4``. Methods (:data:`METHODS`, each an entry of the registry
:data:`marthe_lab.methods.METHODS` over the inner optimizer; the schedules
are ``'plain'`` with an Optax schedule as its learning rate):

* ``staircase``: ``eta`` times 0.1 every 60 epochs
  (``optax.piecewise_constant_schedule``);
* ``exponential``: times 0.99 per epoch (``optax.exponential_decay``);
* ``sgdr``: cosine restarts with ``T_0 = 10`` epochs and ``T_mult = 2``
  (``optax.sgdr_schedule``);
* ``hd`` (``beta = 1e-6``), ``rtho`` (``beta = 1e-8``) and ``marthe``
  (adaptive ``mu`` and ``beta``; step size ``kappa``).

All three online methods descend the validation objective: each step passes
``val_grads``, the gradient of ``E`` on a random validation minibatch (same
size as the training batch, no augmentation, BatchNorm in inference mode).
The training step is the lab's one step, :func:`marthe_lab.loop.make_step`
(``stateful=True``: the params are the pure ``nnx.Param`` state, the model
state the BatchNorm statistics), under ``jax.jit`` (the :class:`State`
donated); training images are augmented on the device (random crop with
padding 4, horizontal flip).

Per epoch the run records the training loss, validation loss and accuracy,
test loss and accuracy, and the learning rate; per step, a subsampled trace of
the learning rate. :func:`plot` draws the paper's figures 3-4 (accuracy,
validation loss, one schedule per method).

Long runs checkpoint and resume (:class:`Checkpoints`, with Orbax): every few
epochs the run's :class:`State` (params, BatchNorm statistics, optimizer
state, step count), the data order's random generator and
the records so far are saved; a resumed run continues from the last
checkpoint and gives the same results as an uninterrupted one.

The package, by concern:

* :mod:`~marthe_lab.cifar.data`: the CIFAR pickles, a synthetic stand-in,
  augmentation and normalisation;
* :mod:`~marthe_lab.cifar.models`: VGG and ResNet in Flax NNX;
* :mod:`~marthe_lab.cifar.config`: :class:`Config`, :func:`preset`, the
  methods (:class:`Method`, :data:`METHODS`, the schedules) and
  :func:`make_optimizer`;
* :mod:`~marthe_lab.cifar.step`: :class:`State`, the training step, the
  evaluation and the prepared data;
* :mod:`~marthe_lab.cifar.checkpoints`: :class:`Checkpoints` and the epoch
  budget;
* :mod:`~marthe_lab.cifar.runner`: :func:`run_one`, :func:`select_kappa`,
  :func:`run`, :func:`time_steps`;
* :mod:`~marthe_lab.cifar.results`: :func:`plot` and :func:`save_json`.
"""

# pylint: disable=g-importing-member
from marthe_lab.cifar.checkpoints import Budget, Checkpoints, Stopped
from marthe_lab.cifar.config import (
  EXPERIMENTS,
  METHODS,
  ONLINE,
  Config,
  Method,
  exponential_schedule,
  load_data,
  make_optimizer,
  preset,
  sgdr_schedule,
  staircase_schedule,
  steps_per_epoch,
)
from marthe_lab.cifar.results import COLORS, plot, save_json
from marthe_lab.cifar.runner import run, run_one, select_kappa, summarize, time_steps
from marthe_lab.cifar.step import (
  Prepared,
  State,
  build,
  initial_state,
  make_batches,
  make_evaluate,
  make_losses,
  make_one_step,
  make_train_step,
  split,
)
