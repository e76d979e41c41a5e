# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Flax NNX and Linen training loops driving MARTHE (marthe_optax/flax.py).

One small MLP with BatchNorm and Dropout, trained a few steps with MARTHE
(SGD-momentum inner, weight-decayed training loss, validation objective in
inference mode), three ways: a pure-JAX reference (explicit params, batch
statistics and dropout keys), Flax NNX through ``nnx.Optimizer``, and Flax
Linen through a ``TrainState``. All three must agree to float32 round-off,
which pins down the semantics: the closure uses train-mode BatchNorm on the
step's batch and the step's dropout key, and the running statistics and the
random stream advance once per step.
"""

import functools
import os

import chex
import flax.linen as nn
from flax import nnx
from flax.training.train_state import OVERWRITE_WITH_GRADIENT
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
import marthe_optax.flax as mof

IN, HIDDEN, CLASSES = 6, 16, 3
RATE = 0.5  # dropout
MOMENTUM, EPS = 0.99, 1e-5  # BatchNorm defaults of both nnx and linen
WD = 5e-4
STEPS = 5
ETA0 = 0.05


def make_tx():
  return mo.marthe(
    functools.partial(optax.sgd, momentum=0.9),
    learning_rate=ETA0,
    hyper_lr_step=1e-2,
    hyper_lr=1e-3,
  )


def make_data():
  keys = jax.random.split(jax.random.key(42), 2 * STEPS)
  batches = []
  for t in range(STEPS):
    kx, kv = jax.random.split(keys[t])
    x = jax.random.normal(kx, (16, IN))
    y = jnp.argmax(x[:, :CLASSES], axis=1)
    xv = jax.random.normal(kv, (8, IN))
    yv = jnp.argmax(xv[:, :CLASSES], axis=1)
    batches.append((x, y, xv, yv))
  return batches


def weight_decay(params):
  return 0.5 * WD * sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


def ce(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# ----------------------------------------------------------- the pure-JAX model


def ref_apply(params, stats, x, *, train, key=None):
  """Returns (logits, new_stats); the same layers as the Flax models below."""
  h = x @ params["l1"]["kernel"] + params["l1"]["bias"]
  if train:
    mean = h.mean(0)
    var = jnp.maximum(0.0, (h**2).mean(0) - mean**2)
    new_stats = {
      "mean": MOMENTUM * stats["mean"] + (1 - MOMENTUM) * mean,
      "var": MOMENTUM * stats["var"] + (1 - MOMENTUM) * var,
    }
  else:
    mean, var, new_stats = stats["mean"], stats["var"], stats
  h = (h - mean) * (jax.lax.rsqrt(var + EPS) * params["bn"]["scale"])
  h = jax.nn.relu(h + params["bn"]["bias"])
  if train:
    keep = jax.random.bernoulli(key, 1.0 - RATE, h.shape)
    h = jax.lax.select(keep, h / (1.0 - RATE), jnp.zeros_like(h))
  return h @ params["l2"]["kernel"] + params["l2"]["bias"], new_stats


def ref_train(params, stats, base_key, batches):
  """MARTHE on the reference model; returns per-step records."""
  tx = make_tx()
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, t, batch):
    x, y, xv, yv = batch
    key = jax.random.fold_in(base_key, t)

    def loss(p):
      logits, new_stats = ref_apply(p, stats, x, train=True, key=key)
      return ce(logits, y) + weight_decay(p), new_stats

    (value, new_stats), g = jax.value_and_grad(loss, has_aux=True)(params)
    val_grads = jax.grad(lambda p: ce(ref_apply(p, stats, xv, train=False)[0], yv))(params)
    updates, opt_state = tx.update(
      g, opt_state, params, value_fn=lambda p: loss(p)[0], val_grads=val_grads
    )
    return optax.apply_updates(params, updates), new_stats, opt_state, value

  records = []
  for t, batch in enumerate(batches):
    params, stats, opt_state, value = step(params, stats, opt_state, t, batch)
    records.append(
      dict(
        params=params,
        stats=stats,
        loss=value,
        lr=optax.tree.get(opt_state, "learning_rate"),
        h=optax.tree.get(opt_state, "hypergradient"),
      )
    )
  return records


# ------------------------------------------------------------------ Flax NNX


class NNXMLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
    self.bn = nnx.BatchNorm(HIDDEN, rngs=rngs)
    self.do = nnx.Dropout(RATE, rngs=rngs)
    self.l2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

  def __call__(self, x, *, train: bool):
    h = self.bn(self.l1(x), use_running_average=not train)
    h = self.do(jax.nn.relu(h), deterministic=not train)
    return self.l2(h)


def nnx_train_loss(model, x, y):
  return ce(model(x, train=True), y) + weight_decay(nnx.state(model, nnx.Param))


def nnx_objective(model, x, y):
  return ce(model(x, train=False), y)


@nnx.jit
def nnx_step(model, optimizer, x, y, xv, yv):
  return mof.nnx_train_step(
    optimizer,
    model,
    nnx_train_loss,
    (x, y),
    objective_fn=nnx_objective,
    objective_args=(xv, yv),
  ).loss


def nnx_setup():
  model = NNXMLP(nnx.Rngs(params=0, dropout=1))
  # Make the running statistics non-trivial so that eval mode differs.
  model.bn.mean[...] = jnp.linspace(-0.1, 0.1, HIDDEN)
  model.bn.var[...] = jnp.linspace(0.5, 1.5, HIDDEN)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))["bn"]
  base_key = model.do.rngs.key[...]
  return model, params, stats, base_key


def assert_trees_close(actual, expected, rtol=2e-5, atol=2e-6):
  chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


def test_nnx_loop_matches_pure_jax_reference():
  model, params, stats, base_key = nnx_setup()
  batches = make_data()
  expected = ref_train(params, stats, base_key, batches)
  optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
  for t, (x, y, xv, yv) in enumerate(batches):
    loss = nnx_step(model, optimizer, x, y, xv, yv)
    ref = expected[t]
    assert_trees_close(loss, ref["loss"])
    assert_trees_close(nnx.to_pure_dict(nnx.state(model, nnx.Param)), ref["params"])
    # The running statistics advance exactly once per step ...
    assert_trees_close(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))["bn"], ref["stats"])
    # ... and so does the dropout stream (one key per step).
    assert int(model.do.rngs.count[...]) == t + 1
    hp = mof.hyperparams(optimizer)
    np.testing.assert_allclose(hp["learning_rate"], ref["lr"], rtol=2e-5)
    np.testing.assert_allclose(hp["hypergradient/learning_rate"], ref["h"], rtol=1e-4, atol=1e-7)
  assert int(optimizer.step[...]) == STEPS
  # The learning rate did move, so the comparison covers the whole update.
  assert abs(mof.hyperparams(optimizer)["learning_rate"] - ETA0) > 1e-4


def test_nnx_value_fn_is_the_loss_of_the_step():
  model, _, _, _ = nnx_setup()
  x, y, _, _ = make_data()[0]
  stats_before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  out = mof.nnx_value_and_grad(nnx_train_loss, model, x, y)
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  # value_fn(w_t) is the loss whose gradient was returned, with the same
  # dropout mask and train-mode batch statistics ...
  assert_trees_close(out.value_fn(params), out.value, rtol=1e-6, atol=0)
  assert_trees_close(nnx.as_pure(jax.grad(out.value_fn)(params)), nnx.as_pure(out.grads))
  # ... even though the model's own streams and statistics have moved on:
  # a fresh forward pass now draws another dropout mask.
  assert int(model.do.rngs.count[...]) == 1
  fresh = nnx_train_loss(model, x, y)
  assert abs(float(fresh) - float(out.value)) > 1e-4
  stats_after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  assert not np.allclose(stats_after["bn"]["mean"], stats_before["bn"]["mean"])
  # The closure writes nothing back into the model.
  out.value_fn(params)
  assert int(model.do.rngs.count[...]) == 2
  # update_state=False leaves the model untouched.
  mof.nnx_value_and_grad(nnx_train_loss, model, x, y, update_state=False)
  assert int(model.do.rngs.count[...]) == 2
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), stats_after)


def test_nnx_value_fn_snapshot_before_forward():
  model, _, _, _ = nnx_setup()
  x, y, _, _ = make_data()[0]
  value_fn = mof.nnx_value_fn(nnx_train_loss, model, x, y)
  loss = nnx_train_loss(model, x, y)  # advances the dropout stream
  assert_trees_close(value_fn(nnx.as_pure(nnx.state(model, nnx.Param))), loss, rtol=1e-6, atol=0)


def test_nnx_hypergradient_finite_and_hessian_used():
  model, _, _, _ = nnx_setup()
  optimizer = nnx.Optimizer(
    model,
    mo.marthe(optax.sgd, 0.05, hyper_lr_step=0.0, mu=1.0),
    wrt=nnx.Param,
  )
  for x, y, xv, yv in make_data()[:3]:
    nnx_step(model, optimizer, x, y, xv, yv)
  hp = mof.hyperparams(optimizer)
  h = hp["hypergradient/learning_rate"]
  assert np.isfinite(h) and h != 0.0
  pure = nnx.as_pure(optimizer.opt_state)
  assert int(optax.tree.get(pure, "nonfinite_count")) == 0
  chex.assert_tree_all_finite(pure.tangent.unseal())


def test_nnx_optimizer_state_accessors():
  model, _, _, _ = nnx_setup()
  optimizer = nnx.Optimizer(model, mo.marthe(optax.adam, 3e-4, hyper_lr_step=1e-8), wrt=nnx.Param)
  # nnx.Optimizer wraps every leaf of the optimizer state in an OptArray
  # variable: optax.tree.get finds the field and returns the variable ...
  lr = optax.tree.get(optimizer.opt_state, "learning_rate")
  assert isinstance(lr, nnx.OptArray)
  np.testing.assert_allclose(lr[...], 3e-4, rtol=1e-6)
  # ... nnx.as_pure gives the arrays, and Adam's own `mu` stays sealed away.
  pure = nnx.as_pure(optimizer.opt_state)
  for name, value in (("learning_rate", 3e-4), ("mu", 0.0), ("hyper_lr", 0.0)):
    got = optax.tree.get(pure, name)
    chex.assert_shape(got, ())
    np.testing.assert_allclose(got, value, rtol=1e-6)
  hp = mof.hyperparams(optimizer)
  assert hp == mo.hyperparam_log(optimizer)
  assert {
    "learning_rate",
    "hyper_lr/learning_rate",
    "mu/learning_rate",
    "hypergradient/learning_rate",
    "safeguard_count",
  } <= set(hp)
  assert all(isinstance(v, (float, int)) for v in hp.values())
  # A plain Optax state holds no MARTHE state.
  plain = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  with pytest.raises(ValueError, match="exactly one MARTHE state"):
    mof.hyperparams(plain)


def test_nnx_hd_needs_no_value_fn():
  model, _, _, _ = nnx_setup()
  optimizer = nnx.Optimizer(model, mo.hd(optax.sgd, 0.05, hyper_lr=1e-3), wrt=nnx.Param)
  x, y, _, _ = make_data()[0]
  for _ in range(2):
    grads = nnx.grad(nnx_train_loss)(model, x, y)
    optimizer.update(model, grads)
  assert mof.hyperparams(optimizer)["learning_rate"] != 0.05


# --------------------------------------------------------------- Flax Linen


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool, dropout_key=None):
    h = nn.Dense(HIDDEN, name="l1")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=EPS, name="bn")(h)
    h = nn.Dropout(RATE, deterministic=not train)(jax.nn.relu(h), rng=dropout_key)
    return nn.Dense(CLASSES, name="l2")(h)


class LinenState(mof.MartheTrainState):
  batch_stats: dict


@jax.jit
def linen_step(state, base_key, x, y, xv, yv):
  key = jax.random.fold_in(base_key, state.step)

  def loss(params, batch_stats):
    logits, updates = state.apply_fn(
      {"params": params, "batch_stats": batch_stats},
      x,
      train=True,
      dropout_key=key,
      mutable=["batch_stats"],
    )
    return ce(logits, y) + weight_decay(params), updates["batch_stats"]

  def objective(params):
    return ce(
      state.apply_fn({"params": params, "batch_stats": state.batch_stats}, xv, train=False),
      yv,
    )

  out = mof.value_and_grad(loss, state.params, state.batch_stats, has_aux=True)
  state = state.apply_gradients(
    grads=out.grads,
    value_fn=out.value_fn,
    val_grads=jax.grad(objective)(state.params),
    batch_stats=out.aux,
  )
  return state, out.value


def test_linen_loop_matches_pure_jax_reference():
  _, params, stats, base_key = nnx_setup()
  batches = make_data()
  expected = ref_train(params, stats, base_key, batches)
  model = LinenMLP()
  variables = model.init(jax.random.key(0), batches[0][0], train=False)
  chex.assert_trees_all_equal_shapes(variables["params"], params)
  state = LinenState.create(
    apply_fn=model.apply,
    params=params,
    tx=make_tx(),
    batch_stats={"bn": stats},
  )
  for t, (x, y, xv, yv) in enumerate(batches):
    state, loss = linen_step(state, base_key, x, y, xv, yv)
    ref = expected[t]
    assert_trees_close(loss, ref["loss"])
    assert_trees_close(state.params, ref["params"])
    assert_trees_close(state.batch_stats["bn"], ref["stats"])
    np.testing.assert_allclose(
      optax.tree.get(state.opt_state, "learning_rate"), ref["lr"], rtol=2e-5
    )
  assert int(state.step) == STEPS
  assert abs(mof.hyperparams(state)["learning_rate"] - ETA0) > 1e-4


def test_apply_gradients_forwards_and_replaces():
  seen = {}

  def update(updates, state, params=None, **extra):
    seen.update(extra)
    return updates, state

  tx = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  state = LinenState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=tx, batch_stats={})
  new = mof.apply_gradients(
    state,
    grads={"w": jnp.ones(2)},
    tx_args={"value_fn": "f", "other": 3},
    batch_stats={"m": jnp.zeros(1)},
  )
  assert seen == {"value_fn": "f", "other": 3}
  assert int(new.step) == 1 and "m" in new.batch_stats
  chex.assert_trees_all_close(new.params["w"], jnp.full(2, 2.0))
  seen.clear()
  new.apply_gradients(grads={"w": jnp.ones(2)}, val_grads="g")
  assert seen == {"val_grads": "g"}
  with pytest.raises(ValueError, match="OVERWRITE_WITH_GRADIENT"):
    mof.apply_gradients(state, grads={OVERWRITE_WITH_GRADIENT: {}})


# ------------------------------------------------------------- the notebook


def test_flax_nnx_notebook_runs(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  path = os.path.join(os.path.dirname(__file__), "..", "notebooks", "flax_nnx.ipynb")
  nb = nbformat.read(path, as_version=4)
  # Colab-ready, with saved outputs.
  install = nb.cells[1].source
  assert "%pip install" in install and "find_spec" in install
  assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
  # Runs on its tiny preset (60 steps).
  monkeypatch.setenv("MARTHE_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nbclient.NotebookClient(
    nb,
    timeout=600,
    kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  ).execute()
  text, images = [], 0
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      assert output.get("output_type") != "error", output
      text.append(output.get("text", ""))
      images += "image/png" in output.get("data", {})
  text = "".join(text)
  assert "selected kappa" in text and "step   59" in text and images == 1
