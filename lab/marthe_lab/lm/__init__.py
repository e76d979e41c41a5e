# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""A character-level transformer language model in Flax NNX, on text that ships with Python.

The corpus is CPython's own ``pydoc_data.topics`` (the text of ``help()``'s
topics: about 465k characters of English technical prose with code samples,
103 distinct characters on Python 3.11), so nothing is downloaded. It is split
into contiguous train / validation / test blocks (:func:`split_corpus`), and
batches are windows at random offsets of a block (:func:`windows`).

The model (:class:`Transformer`) is a decoder-only transformer: token and
learned position embeddings, pre-LayerNorm blocks of causal multi-head
self-attention and a GELU MLP, a final LayerNorm and an unembedding (tied to
the token embedding by default). :data:`PRESETS` gives its sizes, the batch
and the horizon: ``tiny`` (CI), ``fast`` (the whole benchmark in minutes on
two CPU cores) and ``gpu``.

A training run (:func:`train`) is one ``jax.jit`` program over the
``nnx.split`` state of the model, on the lab's one step and loop
(:func:`marthe_lab.loop.make_step` with ``stateful=True``,
:func:`marthe_lab.loop.scan`): each step rebuilds the model with
``nnx.merge``, takes the training gradient (the ``value_fn`` closure merges
the same dropout streams, so it reuses the step's masks), the gradient of
``E`` on a fresh validation window batch for the methods that read it, and
calls the Optax update with exactly what the method needs. Runs are
``jax.vmap``-ed over seeds.

The benchmark of learning-rate methods on this transformer has one protocol
for every method: the same seeds (``w_0``, training windows, validation windows), the same horizon ``Config.steps`` and, wherever a method
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

The package, by concern:

* :mod:`~marthe_lab.lm.corpus`: the corpus, its blocks and windows;
* :mod:`~marthe_lab.lm.model`: :class:`Config`, :data:`PRESETS`, the
  :class:`Transformer`, its parameter groups and loss;
* :mod:`~marthe_lab.lm.runs`: one training run (:func:`train`) and the
  evaluation (:func:`block_loss`);
* :mod:`~marthe_lab.lm.methods`: :class:`Method` and :data:`METHODS` (each
  row an entry of the registry :data:`marthe_lab.methods.METHODS` with its
  settings);
* :mod:`~marthe_lab.lm.bench`: :class:`Runner`, :func:`run_method`,
  :func:`run_benchmark`;
* :mod:`~marthe_lab.lm.results`: summaries, the table and the figures.
"""

# pylint: disable=g-importing-member
from marthe_lab.lm.bench import (
  Prepared,
  Runner,
  prepare,
  run_benchmark,
  run_method,
  run_one,
  run_rows,
)
from marthe_lab.lm.corpus import (
  LN2,
  Corpus,
  pydoc_corpus,
  pydoc_text,
  random_starts,
  split_corpus,
  tiling_starts,
  windows,
)
from marthe_lab.lm.methods import METHODS, Method, warmup_cosine
from marthe_lab.lm.model import (
  PRESETS,
  Block,
  Config,
  Transformer,
  group_labels,
  group_of,
  groups,
  loss,
  train_loss,
)
from marthe_lab.lm.results import (
  TABLE_HEADER,
  Result,
  Run,
  Timing,
  bits,
  plot,
  summarize,
  table_rows,
)
from marthe_lab.lm.runs import Data, Inputs, Trace, block_loss, graphdef, seed_inputs, train
