# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The decoder-only transformer in Flax NNX, its presets, parameter groups and loss."""

from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax


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
  "tiny": Config(
    layers=1,
    width=32,
    heads=2,
    context=16,
    batch=8,
    val_batch=8,
    steps=24,
    warmup=4,
    peaks=(1e-3, 1e-2),
    eval_every=8,
    curve_windows=16,
    select_steps=8,
    seeds=2,
  ),
  # The whole benchmark in minutes on two CPU cores.
  "fast": Config(),
  # For an accelerator: 6 layers of width 256, context 256, 5000 steps.
  "gpu": Config(
    layers=6,
    width=256,
    heads=8,
    context=256,
    dropout=0.1,
    batch=64,
    val_batch=64,
    steps=5000,
    warmup=250,
    peaks=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    eval_every=250,
    curve_windows=512,
    select_steps=1000,
  ),
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
