# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""What the benchmarks and notebooks share (needs the ``experiments`` extra).

* :mod:`~marthe_lab.data`: digits, MNIST-1D (generated
  offline) and MNIST from IDX files; no downloads.
* :mod:`~marthe_lab.models`: the section-5 MLP in plain JAX.
* :mod:`~marthe_lab.train`: whole training runs as ``lax.scan``,
  vmapped over seeds and hyperparameters.
* :mod:`~marthe_lab.schedules`: section 5 (LRS-OPT against
  HD, RTHO and MARTHE; figure 2).
* :mod:`~marthe_lab.toy_functions`: section 3 (Beale and
  Bukin; figure 1).
* :mod:`~marthe_lab.lm`: a character-level transformer language model in
  Flax NNX on ``pydoc_data.topics`` (shipped with Python), and learning-rate
  methods over AdamW on it (needs the ``flax`` extra).
* :mod:`~marthe_lab.lr_free`, :mod:`~marthe_lab.cifar`: MARTHE against the
  learning-rate-free optimizers of Optax, and section 6 on CIFAR.
* :mod:`~marthe_lab.report`: JSON and tables.

Submodules are imported on use, so ``import marthe_lab`` stays
cheap.
"""
