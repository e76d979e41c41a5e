# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Saving and resuming training with Orbax, bit for bit.

Each case trains ``N + M`` steps without interruption, and separately ``N``
steps, saves the params and the optimizer state with an Orbax
``CheckpointManager``, restores them into a fresh, process-like target (a new
transformation and ``jax.eval_shape(tx.init, params)``, or an abstract
``nnx.Optimizer``), and trains ``M`` more steps with a newly compiled step.
The two runs must agree exactly: params, learning rate and the whole state.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo

ocp = pytest.importorskip("orbax.checkpoint")

N, M = 6, 5
DIM, HIDDEN, CLASSES = 8, 16, 3


def _data():
  kx, kt = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (96, DIM))
  y = jnp.argmax(x @ jax.random.normal(kt, (DIM, CLASSES)), axis=-1)
  return x[:64], y[:64], x[64:], y[64:]


def _params():
  k1, k2 = jax.random.split(jax.random.key(1))
  return {
    "w1": jax.random.normal(k1, (DIM, HIDDEN)) / DIM**0.5,
    "b1": jnp.zeros(HIDDEN),
    "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / HIDDEN**0.5,
    "b2": jnp.zeros(CLASSES),
  }


def _loss(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = hidden @ params["w2"] + params["b2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _batch(t):
  """The minibatch indices of step ``t``: a function of ``t`` alone."""
  k_train, k_val = jax.random.split(jax.random.fold_in(jax.random.key(2), t))
  return jax.random.randint(k_train, (16,), 0, 64), jax.random.randint(k_val, (16,), 0, 32)


def _make_step(tx):
  x_train, y_train, x_val, y_val = _data()

  @jax.jit
  def step(params, state, t):
    i, j = _batch(t)
    value, grads = jax.value_and_grad(_loss)(params, x_train[i], y_train[i])
    updates, state = tx.update(
      grads,
      state,
      params,
      value_fn=lambda p: _loss(p, x_train[i], y_train[i]),
      val_grads=jax.grad(_loss)(params, x_val[j], y_val[j]),
      value=value,
    )
    return optax.apply_updates(params, updates), state

  return step


def _train(step, params, state, start, steps):
  for t in range(start, start + steps):
    params, state = step(params, state, t)
  return params, state


def _host(x):
  """A NumPy copy of an array leaf (the raw bits of a typed random key)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)


def _assert_bitwise_equal(resumed, uninterrupted):
  leaves_a, tree_a = jax.tree.flatten(resumed)
  leaves_b, tree_b = jax.tree.flatten(uninterrupted)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(_host(a), _host(b))


def _report(name, resumed, uninterrupted, lr_resumed, lr_uninterrupted):
  diff = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted))
  )
  print(
    f"\n{name}: {N}+{M} steps resumed vs {N + M} uninterrupted: learning rate "
    f"{lr_resumed!r} vs {lr_uninterrupted!r}; largest |params difference| {diff}"
  )


CASES = {
  # The knob-free default, and the paper's rule (eq. 5, step size kappa).
  "marthe": lambda: mo.marthe(functools.partial(optax.sgd, momentum=0.9), learning_rate=0.05),
  "marthe (kappa, adam)": lambda: mo.marthe(optax.adam, learning_rate=1e-2, hyper_lr_step=1e-4),
  # The step counter drives the schedule: it must be restored too.
  "marthe (schedule)": lambda: mo.marthe(
    optax.sgd,
    learning_rate=0.1,
    schedule=optax.warmup_cosine_decay_schedule(0.1, 1.0, 4, N + M),
  ),
  "marthe_multi": lambda: mo.marthe_multi(
    optax.adamw, {"learning_rate": 1e-2, "weight_decay": 1e-3}
  ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_optax_state_resumes_bit_for_bit(name, tmp_path):
  params = _params()
  tx = CASES[name]()
  step = _make_step(tx)
  full_params, full_state = _train(step, params, tx.init(params), 0, N + M)

  part_params, part_state = _train(step, params, tx.init(params), 0, N)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(N, args=ocp.args.StandardSave({"params": part_params, "opt_state": part_state}))
    manager.wait_until_finished()

  # A fresh start: a new transformation, abstract targets, a new step.
  fresh_tx = CASES[name]()
  target = {
    "params": jax.eval_shape(lambda: params),
    "opt_state": jax.eval_shape(fresh_tx.init, params),
  }
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    assert manager.latest_step() == N
    restored = manager.restore(N, args=ocp.args.StandardRestore(target))
  # The sealed parts come back as Sealed nodes with the inner structure.
  assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(part_state)
  _assert_bitwise_equal(restored, {"params": part_params, "opt_state": part_state})

  resumed_params, resumed_state = _train(
    _make_step(fresh_tx), restored["params"], restored["opt_state"], N, M
  )
  _assert_bitwise_equal(resumed_params, full_params)
  _assert_bitwise_equal(resumed_state, full_state)
  lr = optax.tree.get(resumed_state, "learning_rate")
  lr_full = optax.tree.get(full_state, "learning_rate")
  np.testing.assert_array_equal(lr, lr_full)
  # The rates moved: the comparison is not between two copies of eta_0.
  assert not np.allclose(
    jax.tree.leaves(lr), jax.tree.leaves(optax.tree.get(tx.init(params), "learning_rate"))
  )
  assert int(optax.tree.get(resumed_state, "count")) == N + M
  _report(name, resumed_params, full_params, jax.tree.map(float, lr), jax.tree.map(float, lr_full))


def test_nnx_optimizer_resumes_bit_for_bit(tmp_path):
  nnx = pytest.importorskip("flax.nnx")
  import marthe_optax.flax as mof  # pylint: disable=g-import-not-at-top

  x_train, y_train, x_val, y_val = _data()

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(DIM, HIDDEN, rngs=rngs)
      self.drop = nnx.Dropout(0.1, rngs=rngs)
      self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x, *, train):
      return self.l2(self.drop(jnp.tanh(self.l1(x)), deterministic=not train))

  def make_tx():
    return mo.marthe(functools.partial(optax.sgd, momentum=0.9), learning_rate=0.05)

  def create():
    model = MLP(nnx.Rngs(params=0, dropout=1))
    return model, nnx.Optimizer(model, make_tx(), wrt=nnx.Param)

  def loss(model, x, y, train=True):
    logits = model(x, train=train)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def make_step():
    @nnx.jit
    def step(model, optimizer, t):
      i, j = _batch(t)
      mof.nnx_train_step(
        optimizer,
        model,
        loss,
        (x_train[i], y_train[i]),
        objective_fn=functools.partial(loss, train=False),
        objective_args=(x_val[j], y_val[j]),
      )

    return step

  def train(model, optimizer, start, steps):
    step = make_step()
    for t in range(start, start + steps):
      step(model, optimizer, t)

  def snapshot(model, optimizer):
    return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}

  full_model, full_opt = create()
  train(full_model, full_opt, 0, N + M)

  model, optimizer = create()
  train(model, optimizer, 0, N)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(N, args=ocp.args.StandardSave(snapshot(model, optimizer)))
    manager.wait_until_finished()
  saved = jax.tree.map(jnp.copy, snapshot(model, optimizer))
  del model, optimizer

  # A fresh start: abstract model and optimizer, then the restored state.
  abstract_model, abstract_opt = nnx.eval_shape(create)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(
      N, args=ocp.args.StandardRestore(snapshot(abstract_model, abstract_opt))
    )
  _assert_bitwise_equal(restored, saved)
  model, optimizer = create()
  nnx.update(model, restored["model"])
  nnx.update(optimizer, restored["optimizer"])
  train(model, optimizer, N, M)

  _assert_bitwise_equal(snapshot(model, optimizer), snapshot(full_model, full_opt))
  lr = optax.tree.get(nnx.as_pure(optimizer.opt_state), "learning_rate")
  lr_full = optax.tree.get(nnx.as_pure(full_opt.opt_state), "learning_rate")
  np.testing.assert_array_equal(lr, lr_full)
  assert 0.0 < float(lr) != 0.05 and int(optimizer.step[...]) == N + M
  _report(
    "nnx.Optimizer(mo.marthe)",
    nnx.state(model, nnx.Param),
    nnx.state(full_model, nnx.Param),
    float(lr),
    float(lr_full),
  )
