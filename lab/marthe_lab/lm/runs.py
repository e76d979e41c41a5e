# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""One training run of the character transformer: the one step and loop of the lab, in one program.

The step is :func:`marthe_lab.loop.make_step` with ``stateful=True``: the
params are the pure ``nnx.State`` of the ``nnx.Param`` variables, the model
state the rest (the dropout streams). Its loss rebuilds the model with
``nnx.merge`` in training mode and returns the updated streams; ``E`` is the
loss of a fresh validation window batch in inference mode (the streams
untouched), taken for the methods that read it. The ``value_fn`` closure
merges the same streams, so with dropout it reuses the step's masks. The
steps run in :func:`marthe_lab.loop.scan`, chunk by chunk of
``Config.eval_every`` steps inside an outer ``lax.scan`` that evaluates the
validation curve between chunks.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from marthe_lab import loop
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
    return cls(
      *map(
        jnp.asarray,
        (
          corpus.train,
          corpus.val,
          corpus.test,
          tiling_starts(len(corpus.val), c, config.curve_windows),
          tiling_starts(len(corpus.val), c),
          tiling_starts(len(corpus.test), c),
        ),
      )
    )


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


def block_loss(
  gdef: Any,
  params: Any,
  rest: Any,
  block: jax.Array,
  starts: jax.Array,
  context: int,
  chunk: int = 256,
) -> jax.Array:
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
  needs: Sequence[str] = (),
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
    needs: what ``tx.update`` receives besides the gradient (names of
      :data:`marthe_lab.methods.EXTRA_ARGS`, a registry method's ``needs``):
      ``'value_fn'`` (the training loss closure), ``'val_grads'`` (the
      gradient of ``E``, the validation loss of the step's fresh validation
      window batch, in inference mode), ``'value'`` (the training loss
      ``L_t(w_t)``).
    read_lr: ``read_lr(opt_state, t)``, the rate step ``t`` used (read after it).
    eval_params: the params to evaluate, ``eval_params(opt_state, params)``
      (schedule-free's average), or ``None``.
    steps: a shorter horizon (the selection's prefix).

  Returns:
    ``(params, opt_state, trace)``: the evaluation params, the final state and
    the :class:`Trace` (its curve is empty for a shorter horizon).

  Examples:
    >>> import jax, optax
    >>> from marthe_lab import lm
    >>> config = lm.PRESETS["tiny"]
    >>> p = lm.prepare(config, lm.split_corpus("the quick brown fox. " * 200))
    >>> gdef = lm.graphdef(len(p.corpus.vocab), config)
    >>> inputs = jax.tree.map(lambda a: a[0], p.inputs)
    >>> _, _, trace = lm.train(gdef, optax.adamw(1e-2), p.data, config, inputs,
    ...                        steps=3)
    >>> trace.train_loss.shape, trace.curve.shape
    ((3,), (0,))
  """
  steps = config.steps if steps is None else steps
  ctx, every = config.context, config.eval_every
  evaluate = lambda p, s: p if eval_params is None else eval_params(s, p)

  def loss_and_rest(params, rest, batch):
    model = nnx.merge(gdef, params, rest, copy=True)
    value = train_loss(model, *batch)
    return value, nnx.as_pure(nnx.split(model, nnx.Param, ...)[2])

  def objective(params, rest, val_batch):
    return loss(nnx.merge(gdef, params, rest, copy=True), *val_batch)

  step = loop.make_step(tx, loss_and_rest, needs, objective=objective, stateful=True)

  def run(params, opt_state, rest, xs):
    return loop.scan(
      step,
      params,
      opt_state,
      xs,
      model_state=rest,
      batches=lambda x: (windows(data.train, x[1], ctx), windows(data.val, x[2], ctx)),
      record=lambda x, p, s, out: (read_lr(s, x[0]), out.value, out.objective),
    )

  def curve_point(params, rest, opt_state):
    return block_loss(gdef, evaluate(params, opt_state), rest, data.val, data.curve_starts, ctx)

  xs = (jnp.arange(steps), inputs.starts[:steps], inputs.val_starts[:steps])
  params, opt_state = inputs.params, tx.init(inputs.params)
  if steps == config.steps and steps % every == 0:

    def chunk(carry, xs):
      r = run(*carry, xs)
      carry = (r.params, r.opt_state, r.model_state)
      return carry, (r.records, curve_point(r.params, r.model_state, r.opt_state))

    fold = lambda a: a.reshape((steps // every, every) + a.shape[1:])
    (params, opt_state, _), (outs, curve) = jax.lax.scan(
      chunk, (params, opt_state, inputs.rest), jax.tree.map(fold, xs)
    )
    outs = jax.tree.map(lambda a: a.reshape((steps,) + a.shape[2:]), outs)
    first = block_loss(gdef, inputs.params, inputs.rest, data.val, data.curve_starts, ctx)
    curve = jnp.concatenate([first[None], curve])
  else:
    r = run(params, opt_state, inputs.rest, xs)
    params, opt_state, outs, curve = r.params, r.opt_state, r.records, jnp.zeros([0])
  return evaluate(params, opt_state), opt_state, Trace(*outs, curve)
