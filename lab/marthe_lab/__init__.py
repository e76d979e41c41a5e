# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""What the benchmarks and notebooks share (needs the ``experiments`` extra).

* :mod:`~marthe_lab.data`: digits, MNIST-1D (generated
  offline) and MNIST from IDX files; no downloads.
* :mod:`~marthe_lab.models`: the :class:`~marthe_lab.models.Model`
  record, the section-5 MLP and a small CNN in plain JAX, the one
  cross-entropy.
* :mod:`~marthe_lab.methods`: the one registry of learning-rate methods.
* :mod:`~marthe_lab.loop`: the one training step (``make_step``) and the one
  training loop (``scan``, ``lax.scan`` over the steps, vmappable over seeds
  and grid values).
* :mod:`~marthe_lab.choose`: choosing a grid value from trained runs.
* :mod:`~marthe_lab.train`: the section-5 protocol's runs.
* :mod:`~marthe_lab.schedules`: section 5 (LRS-OPT against
  HD, RTHO and MARTHE; figure 2).
* :mod:`~marthe_lab.toy_functions`, :mod:`~marthe_lab.figure1`: section 3 (Beale and
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
