# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Tests of the lab's base: the step builder, the loop, the method registry."""

import doctest
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from marthe_optax import selection
from marthe_lab import choose
from marthe_lab import loop
from marthe_lab import methods
from marthe_lab import models

NET = models.mlp(3, (4,), 2)


def _loss(params, batch):
  return models.cross_entropy(NET.apply, params, *batch)


def _data(seed, steps=5, batch=6):
  kx, ky, kv, kw = jax.random.split(jax.random.key(seed), 4)
  xs = jax.random.normal(kx, (steps, batch, 3))
  ys = jax.random.randint(ky, (steps, batch), 0, 2)
  return xs, ys, jax.random.normal(kv, (batch, 3)), jax.random.randint(kw, (batch,), 0, 2)


def _spy(seen):
  """A transformation that records the extra arguments it receives."""

  def update(updates, state, params=None, **extra):
    seen.append(extra)
    return optax.tree.scale(-0.1, updates), state

  return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


@pytest.mark.parametrize("name", sorted(methods.METHODS))
@pytest.mark.parametrize("validation", [True, False])
def test_step_passes_exactly_the_extra_args_the_method_needs(name, validation):
  needs = methods.get(name).needs
  params = NET.init(jax.random.key(0))
  xs, ys, xv, yv = _data(0)
  batch, val = (xs[0], ys[0]), ((xv, yv) if validation else None)
  seen = []
  step = loop.make_step(_spy(seen), _loss, needs)
  _, _, _, out = step(params, optax.EmptyState(), batch, val)
  expected = {"val_value": "value"}
  names = {expected.get(n, n) for n in needs if validation or n not in ("val_grads", "val_value")}
  assert set(seen[0]) == names
  extra = seen[0]
  value = _loss(params, batch)
  np.testing.assert_allclose(out.value, value, rtol=1e-6)
  if "value_fn" in extra:
    np.testing.assert_allclose(extra["value_fn"](params), value, rtol=1e-6)
  if "val_grads" in extra:
    chex.assert_trees_all_close(extra["val_grads"], jax.grad(_loss)(params, val), rtol=1e-6)
  if "value" in extra:
    want = _loss(params, val) if "val_value" in needs else value
    np.testing.assert_allclose(extra["value"], want, rtol=1e-6)
  if validation and ({"val_grads", "val_value"} & set(needs)):
    np.testing.assert_allclose(out.objective, _loss(params, val), rtol=1e-6)
  else:
    assert np.isnan(out.objective)


def test_step_forwards_extra_arguments_and_uses_the_objective():
  params = NET.init(jax.random.key(0))
  xs, ys, xv, yv = _data(1)
  seen = []
  objective = lambda p, b: 3.0 * _loss(p, b)
  step = loop.make_step(_spy(seen), _loss, ("val_grads",), objective=objective)
  step(params, optax.EmptyState(), (xs[0], ys[0]), (xv, yv), hint=7)
  assert seen[0]["hint"] == 7
  chex.assert_trees_all_close(
    seen[0]["val_grads"], jax.grad(objective)(params, (xv, yv)), rtol=1e-6
  )


def test_step_rejects_unknown_extra_args():
  with pytest.raises(ValueError, match="val_grad"):
    loop.make_step(optax.sgd(0.1), _loss, ("val_grad",))


def test_registry_errors_on_unknown_names():
  with pytest.raises(ValueError, match="'nope'.*marthe"):
    methods.get("nope")
  with pytest.raises(ValueError, match="'lion'.*adam"):
    methods.get_inner("lion")
  assert methods.get(methods.METHODS["hd"]) is methods.METHODS["hd"]


VALUES = {
  "beta": 1e-3,
  "kappa": 1e-6,
  "hyper": methods.Hyper(1e-3, 0.0, 0.5),
  "accumulation_size": 2,
  "schedule": optax.linear_schedule(1.0, 0.5, 10),
  None: None,
}


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_registry_method_builds_trains_and_logs(name):
  m = methods.get(name)
  lr = {"learning_rate": 0.1} if name.endswith("multi") else 0.1
  tx = m.make(methods.INNERS["sgd"], lr, VALUES[m.value])
  xs, ys, xv, yv = _data(2)
  step = jax.jit(loop.make_step(tx, _loss, m.needs))
  params = NET.init(jax.random.key(0))
  state = tx.init(params)
  for t in range(3):
    params, state, _, out = step(params, state, (xs[t], ys[t]), (xv, yv))
  assert np.isfinite(out.value)
  rate = m.learning_rate(state, jnp.int32(2), lr)
  assert rate.dtype == jnp.float32 and rate.shape == ()
  if m.family != "lr-free" or name == "plateau":
    np.testing.assert_allclose(rate, 0.1, rtol=0.5)  # at eta_0, or near it
  elif name.startswith("schedule_free"):
    assert np.isnan(rate)  # no learning rate exposed
  else:
    assert np.isfinite(rate) and rate > 0  # an effective step
  evaluated = m.evaluation_params(state, params)
  chex.assert_trees_all_equal_structs(evaluated, params)
  assert set(methods.counters(state)) == set(methods.COUNTERS)


def test_knob_free_schedule_is_knob_free_on_the_schedule_shape():
  xs, ys, xv, yv = _data(3)
  params0 = NET.init(jax.random.key(0))

  def run(name, value):
    m = methods.get(name)
    tx = m.make(methods.INNERS["sgd"], 0.1, value)
    step = loop.make_step(tx, _loss, m.needs)
    params, state = params0, tx.init(params0)
    for t in range(3):
      params, state, _, _ = step(params, state, (xs[t], ys[t]), (xv, yv))
      if t == 0:
        first = params
    return first, params, state

  # A unit shape is the knob-free mode itself, to the bit.
  _, plain, plain_state = run("knob_free", None)
  _, unit, unit_state = run("knob_free_schedule", optax.constant_schedule(1.0))
  chex.assert_trees_all_equal(unit, plain)
  assert float(methods.stat(unit_state, "learning_rate")) == float(
    methods.stat(plain_state, "learning_rate")
  )
  # A warm-up from 0: the first step does not move the params, the scale is read.
  first, _, state = run("knob_free_schedule", optax.linear_schedule(0.0, 1.0, 3))
  chex.assert_trees_all_equal(first, params0)
  m = methods.get("knob_free_schedule")
  assert m.needs == ("val_grads", "value") and m.value == "schedule"
  assert float(m.learning_rate(state, 2, 0.1)) == float(methods.stat(state, "learning_rate"))


def test_plain_reads_its_schedule():
  schedule = optax.cosine_decay_schedule(1.0, 10)
  m = methods.get("plain")
  assert float(m.learning_rate(None, 5, schedule)) == pytest.approx(float(schedule(5)))
  assert float(m.learning_rate(None, 5, 0.25)) == 0.25


def test_variants_map_grid_values_onto_eq5():
  rtho = methods.Variant("RTHO", "beta", False, 1.0)
  full = methods.Variant("MARTHE", "kappa", True)
  assert rtho.method == "eq5" and full.method == "eq5_adaptive_mu"
  assert rtho.hyper(0.1) == methods.Hyper(0.1, 0.0, 1.0)
  assert full.hyper(0.1) == methods.Hyper(0.0, 0.1, 0.0)


def _run(method, value, params, xs, ys, xv, yv):
  m = methods.get(method)
  tx = m.make(optax.sgd, 0.1, value)
  step = loop.make_step(tx, _loss, m.needs)
  record = lambda x, p, s, out: (methods.stat(s, "learning_rate"), out.value)
  run = loop.scan(
    step, params, tx.init(params), (xs, ys), batches=lambda x: (x, (xv, yv)), record=record
  )
  return run.params, run.records


def test_scan_vmapped_over_seeds_and_grid_values_equals_single_runs():
  seeds = jnp.arange(3)
  betas = jnp.array([1e-3, 1e-2, 1e-1])
  params = jax.vmap(lambda s: NET.init(jax.random.key(s)))(seeds)
  data = jax.vmap(_data)(seeds)
  run = jax.jit(functools.partial(_run, "hd"))
  vmapped = jax.jit(jax.vmap(functools.partial(_run, "hd")))(betas, params, *data)
  for i in range(3):
    row = lambda tree: jax.tree.map(lambda a: a[i], tree)
    chex.assert_trees_all_close(
      row(vmapped), run(betas[i], row(params), *row(data)), rtol=1e-6, atol=1e-7
    )
  # The grid values differ, and so do the runs.
  assert len(set(np.asarray(vmapped[1][0][:, -1]).tolist())) == 3


def test_scan_equals_a_python_loop_of_steps_and_records_w_t():
  params = NET.init(jax.random.key(3))
  xs, ys, xv, yv = _data(3)
  tx = methods.get("rtho").make(optax.sgd, 0.1, 1e-2)
  step = loop.make_step(tx, _loss, methods.get("rtho").needs)
  run = loop.scan(
    step,
    params,
    tx.init(params),
    (xs, ys),
    batches=lambda x: (x, (xv, yv)),
    record=lambda x, p, s, out: (p, out.value),
  )
  p, s = params, tx.init(params)
  for t in range(xs.shape[0]):
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[t], run.records[0]), p, rtol=1e-6)
    p, s, _, out = step(p, s, (xs[t], ys[t]), (xv, yv))
    np.testing.assert_allclose(run.records[1][t], out.value, rtol=1e-6)
  chex.assert_trees_all_close(run.params, p, rtol=1e-6)


def test_stateful_step_threads_the_model_state_and_the_aux():
  # The model state counts the training steps; the aux is the loss doubled.
  def loss(w, count, batch):
    value = jnp.sum((w - batch) ** 2)
    return value, (count + 1, 2 * value)

  objective = lambda w, count, batch: jnp.sum((w - batch) ** 2) + count
  tx = methods.get("rtho").make(optax.sgd, 0.1, 0.0)
  step = loop.make_step(
    tx, loss, ("value_fn", "val_grads"), objective=objective, has_aux=True, stateful=True
  )
  w = jnp.zeros(2)
  run = loop.scan(
    step,
    w,
    tx.init(w),
    jnp.ones((4, 2)),
    batches=lambda x: (x, 2 * x),
    model_state=jnp.int32(0),
    record=lambda x, p, s, out: (out.aux, out.objective),
  )
  assert int(run.model_state) == 4
  aux, objective_values = run.records
  np.testing.assert_allclose(aux[0], 4.0)  # 2 * |0 - 1|^2 * 2 coordinates
  # E = |w - 2|^2 + count at w = 0, .2, .36, .488 (beta = 0: eta stays 0.1).
  np.testing.assert_allclose(objective_values, [8.0, 7.48, 7.3792, 7.572288], rtol=1e-5)


def test_run_in_chunks_pads_the_last_call():
  calls = []

  def fn(a):
    calls.append(a.shape[0])
    return 2 * a

  out = loop.run_in_chunks(fn, (jnp.arange(5),), chunk=2, callback=None)
  np.testing.assert_array_equal(out, 2 * np.arange(5))
  assert calls == [2, 2, 2]


def test_select_from_curves_is_the_library_selection():
  rng = np.random.default_rng(0)
  grid = np.array([1e-4, 1e-2, 1e-1, 1.0])  # any order
  curves = np.abs(rng.normal(1.0, 0.1, (4, 20)))
  curves[2:, 10:] *= 5.0  # the two largest diverge
  chosen, i = choose.select_from_curves(curves, grid)
  assert i == 1 and float(chosen.value) == pytest.approx(1e-2)
  ref = selection.select_hyper_lr_step(
    lambda v: jnp.asarray(curves)[jnp.argmin(jnp.abs(jnp.log(jnp.asarray(grid)) - jnp.log(v)))],
    candidates=np.sort(grid)[::-1],
  )
  assert float(ref.value) == pytest.approx(float(chosen.value))
  np.testing.assert_array_equal(choose.diverged(curves), [False, False, True, True])
  np.testing.assert_array_equal(
    choose.diverged(curves), np.asarray(selection.divergence(jnp.asarray(curves)).diverged)
  )
  chosen, i = choose.select_from_curves(curves * np.linspace(1, 9, 20), grid)
  assert chosen is None and i == 0


@pytest.mark.parametrize("module", [models, methods, loop, choose])
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
