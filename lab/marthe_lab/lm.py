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
``nnx.split`` state of the model: a ``lax.scan`` over the steps, each step
rebuilding the model with ``nnx.merge``, taking the training gradient and the
``value_fn`` closure with :func:`marthe_optax.flax.nnx_value_and_grad`
(dropout, if any, follows its closure semantics: ``value_fn`` reuses the
step's masks), the gradient of ``E`` on a fresh validation window batch for
the methods that read it, and calling the Optax update. Runs are
``jax.vmap``-ed over seeds. The methods and the benchmark are in
:mod:`marthe_lab.lm_bench`.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import marthe_optax.flax as mof

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# The corpus.


class Corpus(NamedTuple):
  """A character corpus split into contiguous blocks.

  Attributes:
    vocab: the distinct characters of the whole text, sorted; token ``i`` is
      ``vocab[i]``.
    train: the first block, as ``int32`` token ids.
    val: the block after it.
    test: the last block.
  """

  vocab: str
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  def encode(self, text: str) -> np.ndarray:
    """Token ids of ``text`` (every character must be in :attr:`vocab`)."""
    index = {c: i for i, c in enumerate(self.vocab)}
    return np.asarray([index[c] for c in text], np.int32)

  def decode(self, tokens: Any) -> str:
    """The text of token ids."""
    return "".join(self.vocab[int(i)] for i in np.asarray(tokens).ravel())


def split_corpus(text: str, fractions: tuple = (0.8, 0.1, 0.1)) -> Corpus:
  """``text`` as token ids, cut into contiguous train / validation / test blocks.

  Args:
    text: the corpus.
    fractions: the three blocks' shares of the text, in order, summing to 1;
      each block is rounded down to whole characters and the test block takes
      the rest.

  Returns:
    A :class:`Corpus`; the vocabulary is the text's distinct characters.

  Raises:
    ValueError: on fractions that are not three positive numbers summing to 1.

  Examples:
    >>> c = split_corpus("abcdefghij", (0.6, 0.2, 0.2))
    >>> c.decode(c.train), c.decode(c.val), c.decode(c.test)
    ('abcdef', 'gh', 'ij')
  """
  if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
    raise ValueError(f"fractions must be 3 positive shares summing to 1; got {fractions}.")
  vocab = "".join(sorted(set(text)))
  lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
  lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
  tokens = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
  a = int(len(text) * fractions[0])
  b = a + int(len(text) * fractions[1])
  return Corpus(vocab, tokens[:a], tokens[a:b], tokens[b:])


def pydoc_text() -> str:
  """The ``pydoc_data.topics`` texts, joined in sorted topic order."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return "".join(topics.topics[k] for k in sorted(topics.topics))


def pydoc_corpus(fractions: tuple = (0.8, 0.1, 0.1)) -> Corpus:
  """:func:`split_corpus` of :func:`pydoc_text` (it depends on the Python version)."""
  return split_corpus(pydoc_text(), fractions)


def windows(block: jax.Array, starts: jax.Array, context: int) -> tuple[jax.Array, jax.Array]:
  """Inputs ``block[s : s + context]`` and next-character targets ``block[s + 1 : s + context + 1]``.

  Args:
    block: token ids ``[n]``.
    starts: window offsets, any shape, each in ``[0, n - context - 1]``.
    context: the window length.

  Returns:
    ``(inputs, targets)``, each of shape ``starts.shape + (context,)``.

  Examples:
    >>> x, y = windows(jnp.arange(10), jnp.array([0, 5]), 3)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
  """
  idx = starts[..., None] + jnp.arange(context)
  return block[idx], block[idx + 1]


def random_starts(key: jax.Array, n: int, context: int, shape: tuple) -> jax.Array:
  """Uniform window offsets in ``[0, n - context - 1]`` (every window fits)."""
  if n < context + 1:
    raise ValueError(f"A block of {n} tokens has no window of {context} + 1.")
  return jax.random.randint(key, shape, 0, n - context, jnp.int32)


def tiling_starts(n: int, context: int, max_windows: Optional[int] = None) -> np.ndarray:
  """Offsets of non-overlapping windows covering a block of ``n`` tokens.

  With ``max_windows``, an evenly spaced subset of them.

  Examples:
    >>> tiling_starts(10, 3).tolist()
    [0, 3, 6]
  """
  starts = np.arange(0, n - context, context, dtype=np.int32)
  if max_windows is not None and len(starts) > max_windows:
    starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
  return starts


# ----------------------------------------------------------------------------
# The model.


class Config(NamedTuple):
  """A model, its data and its training horizon (hashable: a static argument).

  Attributes:
    layers, width, heads: the transformer's depth, width and attention heads.
    context: the window length.
    dropout: the dropout rate (0 disables it).
    tie: whether the unembedding is the token embedding's transpose.
    batch: training windows per step.
    val_batch: validation windows per step (the batch on which ``E`` is taken).
    steps: the horizon ``T``.
    learning_rate: ``eta_0``, for every method that takes a learning rate.
    warmup: warm-up steps of the warm-up + cosine schedule.
    peaks: the grid of peak rates of the warm-up + cosine schedule.
    eval_every: steps between two points of the validation curve.
    curve_windows: validation windows of each point of the curve.
    select_steps: prefix length of the hyper-learning-rate selection.
    seeds: the number of seeds.
  """

  layers: int = 2
  width: int = 32
  heads: int = 2
  context: int = 32
  dropout: float = 0.0
  tie: bool = True
  batch: int = 16
  val_batch: int = 16
  steps: int = 400
  learning_rate: float = 1e-3
  warmup: int = 40
  peaks: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
  eval_every: int = 40
  curve_windows: int = 64
  select_steps: int = 100
  seeds: int = 3


PRESETS = {
    # A smoke test of the whole pipeline (numbers meaningless).
    "tiny": Config(layers=1, width=32, heads=2, context=16, batch=8,
                   val_batch=8, steps=24, warmup=4, peaks=(1e-3, 1e-2),
                   eval_every=8, curve_windows=16, select_steps=8, seeds=2),
    # The whole benchmark in minutes on two CPU cores.
    "fast": Config(),
    # For an accelerator: 6 layers of width 256, context 256, 5000 steps.
    "gpu": Config(layers=6, width=256, heads=8, context=256, dropout=0.1,
                  batch=64, val_batch=64, steps=5000, warmup=250,
                  peaks=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2), eval_every=250,
                  curve_windows=512, select_steps=1000),
}


class Block(nnx.Module):
  """Pre-LayerNorm block: causal self-attention, then a GELU MLP, each residual."""

  def __init__(self, config: Config, rngs: nnx.Rngs):
    d = config.width
    self.heads = config.heads
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.proj = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.fc = nnx.Linear(d, 4 * d, rngs=rngs)
    self.out = nnx.Linear(4 * d, d, rngs=rngs)
    self.drop = nnx.Dropout(config.dropout, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(self.ln1(x)).reshape(b, t, self.heads, 3 * d // self.heads), 3, -1)
    a = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(b, t, d)
    x = x + self.drop(self.proj(a), deterministic=not train)
    h = self.out(jax.nn.gelu(self.fc(self.ln2(x))))
    return x + self.drop(h, deterministic=not train)


class Transformer(nnx.Module):
  """A decoder-only transformer over ``vocab_size`` tokens.

  Examples:
    >>> from flax import nnx
    >>> model = Transformer(10, PRESETS["tiny"], nnx.Rngs(0))
    >>> model(jnp.zeros((2, 16), jnp.int32)).shape
    (2, 16, 10)
  """

  def __init__(self, vocab_size: int, config: Config, rngs: nnx.Rngs):
    d = config.width
    if d % config.heads:
      raise ValueError(f"width {d} is not a multiple of heads {config.heads}.")
    init = nnx.initializers.normal(0.02)  # GPT-2's: the tied logits start small
    self.tok = nnx.Embed(vocab_size, d, embedding_init=init, rngs=rngs)
    self.pos = nnx.Embed(config.context, d, embedding_init=init, rngs=rngs)
    self.drop = nnx.Dropout(config.dropout, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs) for _ in range(config.layers)])
    self.ln_f = nnx.LayerNorm(d, rngs=rngs)
    self.head = None if config.tie else nnx.Linear(d, vocab_size, use_bias=False, rngs=rngs)

  def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits ``[..., t, vocab]`` of the next token at each of the ``t`` positions."""
    x = self.tok(tokens) + self.pos(jnp.arange(tokens.shape[-1]))
    x = self.drop(x, deterministic=not train)
    for block in self.blocks:
      x = block(x, train=train)
    x = self.ln_f(x)
    return self.tok.attend(x) if self.head is None else self.head(x)


def group_of(path: tuple) -> str:
  """The parameter group of a state path: ``'embed'``, ``'block<i>'`` or ``'head'``."""
  keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
  if keys[0] in ("tok", "pos"):
    return "embed"
  if keys[0] == "blocks":
    return f"block{int(keys[1])}"
  return "head"


def groups(config: Config) -> list[str]:
  """The parameter groups of the model: ``'embed'``, ``'block0'``, ..., ``'head'``."""
  return ["embed"] + [f"block{i}" for i in range(config.layers)] + ["head"]


def group_labels(params: Any) -> Any:
  """The tree of :func:`group_of` labels of ``params`` (per-layer learning rates)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: group_of(p), params)


def loss(model: nnx.Module, x: jax.Array, y: jax.Array, *, train: bool = False) -> jax.Array:
  """Mean next-character cross-entropy in nats."""
  return optax.softmax_cross_entropy_with_integer_labels(model(x, train=train), y).mean()


def train_loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
  """:func:`loss` in training mode (dropout on): ``L_t``."""
  return loss(model, x, y, train=True)


# ----------------------------------------------------------------------------
# Training runs.


class Data(NamedTuple):
  """The corpus blocks on the device and the fixed evaluation windows."""

  train: jax.Array
  val: jax.Array
  test: jax.Array
  curve_starts: jax.Array  # validation windows of the curve
  val_starts: jax.Array  # every non-overlapping validation window
  test_starts: jax.Array  # every non-overlapping test window

  @classmethod
  def from_corpus(cls, corpus: Corpus, config: Config) -> "Data":
    c = config.context
    return cls(*map(jnp.asarray, (
        corpus.train, corpus.val, corpus.test,
        tiling_starts(len(corpus.val), c, config.curve_windows),
        tiling_starts(len(corpus.val), c), tiling_starts(len(corpus.test), c))))


class Inputs(NamedTuple):
  """One seed's initial model state and window offsets (the same for every method)."""

  params: Any  # the pure nnx.State of the nnx.Param variables
  rest: Any  # the pure state of everything else (random streams)
  starts: jax.Array  # [steps, batch] training windows
  val_starts: jax.Array  # [steps, val_batch] validation windows for E


@functools.lru_cache(maxsize=None)
def graphdef(vocab_size: int, config: Config) -> Any:
  """The model's static structure (the same for every seed)."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(vocab_size, config, nnx.Rngs(0))))[0]


def seed_inputs(seed: jax.Array, vocab_size: int, data: Data, config: Config) -> Inputs:
  """``w_0``, the dropout stream and the window offsets of ``seed``."""
  kp, kd, k1, k2 = jax.random.split(jax.random.key(seed), 4)
  model = Transformer(vocab_size, config, nnx.Rngs(params=kp, dropout=kd))
  _, params, rest = nnx.split(model, nnx.Param, ...)
  starts = random_starts(k1, data.train.shape[0], config.context, (config.steps, config.batch))
  vstarts = random_starts(k2, data.val.shape[0], config.context, (config.steps, config.val_batch))
  return Inputs(nnx.as_pure(params), nnx.as_pure(rest), starts, vstarts)


def block_loss(gdef: Any, params: Any, rest: Any, block: jax.Array, starts: jax.Array,
               context: int, chunk: int = 256) -> jax.Array:
  """Mean cross-entropy (nats) of the model over the windows ``starts`` of ``block``."""
  model = nnx.merge(gdef, params, rest, copy=True)
  pad = -len(starts) % chunk
  s = jnp.concatenate([starts, jnp.full(pad, starts[0])]).reshape(-1, chunk)
  weight = jnp.concatenate([jnp.ones(len(starts)), jnp.zeros(pad)]).reshape(-1, chunk)
  def one(_, sw):
    x, y = windows(block, sw[0], context)
    ce = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean(-1)
    return None, jnp.sum(ce * sw[1])
  return jnp.sum(jax.lax.scan(one, None, (s, weight))[1]) / len(starts)


class Trace(NamedTuple):
  """What a run records along the way (leading axis: steps, or curve points)."""

  learning_rate: jax.Array  # [steps] or [steps, K]: the rate the step used
  train_loss: jax.Array  # [steps] L_t(w_t), nats
  objective: jax.Array  # [steps] E(w_t) on the step's validation batch (nan if unused)
  curve: jax.Array  # [steps // eval_every + 1] validation loss on the curve windows


def train(
    gdef: Any,
    tx: optax.GradientTransformationExtraArgs,
    data: Data,
    config: Config,
    inputs: Inputs,
    *,
    feed: str = "none",
    read_lr: Callable[[Any, jax.Array], jax.Array] = lambda s, t: jnp.nan,
    eval_params: Optional[Callable[[Any, Any], Any]] = None,
    steps: Optional[int] = None,
) -> tuple[Any, Any, Trace]:
  """``steps`` (default ``config.steps``) steps of ``tx`` from one seed's inputs.

  Args:
    gdef: :func:`graphdef`.
    tx: the optimizer.
    data: the corpus and evaluation windows.
    config: the configuration.
    inputs: the seed's :class:`Inputs`.
    feed: what ``tx.update`` receives besides the gradient: ``'none'``;
      ``'objective'``: ``value_fn`` (the training loss closure) and
      ``val_grads`` (the gradient of ``E``, the validation loss of the step's
      fresh validation window batch, in inference mode); ``'objective+value'``:
      also ``value=`` the training loss ``L_t(w_t)``.
    read_lr: ``read_lr(opt_state, t)``, the rate step ``t`` used (read after it).
    eval_params: the params to evaluate, ``eval_params(opt_state, params)``
      (schedule-free's average), or ``None``.
    steps: a shorter horizon (the selection's prefix).

  Returns:
    ``(params, opt_state, trace)``: the evaluation params, the final state and
    the :class:`Trace` (its curve is empty for a shorter horizon).
  """
  steps = config.steps if steps is None else steps
  ctx, every = config.context, config.eval_every
  evaluate = lambda p, s: p if eval_params is None else eval_params(s, p)

  def step(carry, xs):
    params, rest, opt_state = carry
    t, s, vs = xs
    model = nnx.merge(gdef, params, rest, copy=True)
    extra, objective = {}, jnp.nan
    if feed.startswith("objective"):
      val = mof.nnx_value_and_grad(loss, model, *windows(data.val, vs, ctx), update_state=False)
      extra = dict(val_grads=nnx.as_pure(val.grads))
      objective = val.value
    out = mof.nnx_value_and_grad(train_loss, model, *windows(data.train, s, ctx))
    if feed.startswith("objective"):
      extra["value_fn"] = out.value_fn
    if feed == "objective+value":
      extra["value"] = out.value
    updates, opt_state = tx.update(nnx.as_pure(out.grads), opt_state, params, **extra)
    params = optax.apply_updates(params, updates)
    rest = nnx.as_pure(nnx.split(model, nnx.Param, ...)[2])
    return (params, rest, opt_state), (read_lr(opt_state, t), out.value, objective)

  def curve_point(params, rest, opt_state):
    return block_loss(gdef, evaluate(params, opt_state), rest, data.val, data.curve_starts, ctx)

  carry = (inputs.params, inputs.rest, tx.init(inputs.params))
  xs = (jnp.arange(steps), inputs.starts[:steps], inputs.val_starts[:steps])
  if steps == config.steps and steps % every == 0:
    def chunk(carry, xs):
      carry, out = jax.lax.scan(step, carry, xs)
      return carry, (out, curve_point(*carry))
    fold = lambda a: a.reshape((steps // every, every) + a.shape[1:])
    carry, (outs, curve) = jax.lax.scan(chunk, carry, jax.tree.map(fold, xs))
    outs = jax.tree.map(lambda a: a.reshape((steps,) + a.shape[2:]), outs)
    first = block_loss(gdef, inputs.params, inputs.rest, data.val, data.curve_starts, ctx)
    curve = jnp.concatenate([first[None], curve])
  else:
    carry, outs = jax.lax.scan(step, carry, xs)
    curve = jnp.zeros([0])
  params, _, opt_state = carry
  return evaluate(params, opt_state), opt_state, Trace(*outs, curve)
