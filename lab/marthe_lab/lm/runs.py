# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""One training run of the character transformer: a ``lax.scan`` over the steps in one program.

Each step rebuilds the model with ``nnx.merge``, takes the training gradient
and the ``value_fn`` closure with :func:`marthe_optax.flax.nnx_value_and_grad`
(dropout, if any, follows its closure semantics: ``value_fn`` reuses the
step's masks), the gradient of ``E`` on a fresh validation window batch for
the methods that read it, and calls the Optax update.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

from flax import nnx
import jax
import jax.numpy as jnp
import optax

import marthe_optax.flax as mof
from marthe_lab.lm.corpus import Corpus, random_starts, tiling_starts, windows
from marthe_lab.lm.model import Config, Transformer, loss, train_loss


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
