# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The learning-rate-free comparison: models, optimizer wrappers, the tiny preset."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from marthe_lab import choose
from marthe_lab import data as data_lib
from marthe_lab import loop
from marthe_lab import lr_free
from marthe_lab import methods
from marthe_lab import models
from marthe_lab import schedules
from marthe_lab import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = lr_free.TrainConfig(steps=4, batch_size=8, val_batch_size=8, hidden=(8,))


def _arrays(n=24, d=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(3 * n, d)).astype(np.float32)
  y = (np.argmax(x[:, :classes], axis=1)).astype(np.int32)
  parts = [(x[i * n : (i + 1) * n], y[i * n : (i + 1) * n]) for i in range(3)]
  return lr_free.Arrays(*(jnp.asarray(a) for p in parts for a in p))


def _conv1d_same_reference(x, kernel, bias, stride):
  """NumPy cross-correlation with XLA's SAME padding (extra pad on the right)."""
  n, width, c_in = x.shape
  k, _, c_out = kernel.shape
  out_w = -(-width // stride)
  pad = max((out_w - 1) * stride + k - width, 0)
  xp = np.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
  out = np.zeros((n, out_w, c_out))
  for i in range(out_w):
    window = xp[:, i * stride : i * stride + k, :]
    out[:, i, :] = np.einsum("nkc,kco->no", window, kernel)
  return out + bias


def test_cnn1d_shapes_and_numpy_reference():
  params = lr_free.init_cnn1d(jax.random.key(1), 40, 10)
  chex.assert_trees_all_equal_shapes(
    params,
    [
      {"kernel": jnp.zeros((5, 1, 32)), "bias": jnp.zeros(32)},
      {"kernel": jnp.zeros((5, 32, 32)), "bias": jnp.zeros(32)},
      {"kernel": jnp.zeros((320, 10)), "bias": jnp.zeros(10)},
    ],
  )
  # Nonzero biases, so that the bias and ReLU placement is checked too.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
  x = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32)
  h = x[..., None].astype(np.float64)
  for layer in params[:-1]:
    h = np.maximum(
      _conv1d_same_reference(
        h, np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64), 2
      ),
      0.0,
    )
  expected = h.reshape(3, -1) @ np.asarray(params[-1]["kernel"]) + np.asarray(params[-1]["bias"])
  np.testing.assert_allclose(
    lr_free.cnn1d_apply(params, jnp.asarray(x)), expected, rtol=2e-4, atol=2e-4
  )


def test_inputs_are_the_section5_inputs():
  """Same w_0 and minibatches as the section-5 runs (train.py) at each seed."""
  arrays = _arrays()
  config = CONFIG._replace(steps=7)
  mlp = lr_free.seed_inputs("mlp", arrays, config, jnp.int32(3), 3)
  chex.assert_trees_all_equal(mlp, train_lib.seed_inputs(jnp.int32(3), arrays, config, 3))
  chex.assert_shape(mlp.val_batches, (7, 8))
  cnn = lr_free.seed_inputs("cnn1d", arrays, config, jnp.int32(3), 3)
  chex.assert_trees_all_equal(cnn.batches, mlp.batches)
  chex.assert_trees_all_equal(cnn.val_batches, mlp.val_batches)
  chex.assert_trees_all_equal(cnn.params, lr_free.init_cnn1d(train_lib.seed_keys(3)[0], 6, 3))
  both = lr_free.make_inputs(arrays, jnp.arange(2), model="mlp", config=config, num_classes=3)
  chex.assert_trees_all_equal(
    jax.tree.map(lambda a: a[1], both), train_lib.seed_inputs(jnp.int32(1), arrays, config, 3)
  )


def test_sgdr_periods_and_schedules():
  assert lr_free.sgdr_periods(512) == [74, 148, 296]
  assert sum(lr_free.sgdr_periods(12)[:2]) < 12 <= sum(lr_free.sgdr_periods(12))
  config = lr_free.TrainConfig(steps=14, learning_rate=0.1)
  sgdr = lr_free.sgdr_schedule(config)
  t0 = lr_free.sgdr_periods(14)[0]
  np.testing.assert_allclose(sgdr(0), 0.1, rtol=1e-6)
  np.testing.assert_allclose(sgdr(t0), 0.1, rtol=1e-6)  # a warm restart
  assert sgdr(t0 - 1) < 0.1
  cos = lr_free.cosine_schedule(config)
  np.testing.assert_allclose([cos(0), cos(14)], [0.1, 0.0], atol=1e-7)
  # reduce_on_plateau's accumulation size: the full batches of an epoch.
  assert data_lib.steps_per_epoch(1000, 100) == 10
  assert data_lib.steps_per_epoch(3501, 100) == 35
  with pytest.raises(ValueError, match="exceeds"):
    data_lib.steps_per_epoch(50, 100)
  plateau = lr_free.METHODS["plateau"]
  assert plateau.value(config, 0.0, 3501) == 35


def test_user_set_counts():
  counts = {name: len(m.user_set) for name, m in lr_free.METHODS.items()}
  assert counts == {
    "sgd": 1,
    "cosine": 2,
    "sgdr": 3,
    "hd": 1,
    "rtho": 1,
    "marthe": 1,
    "prodigy": 0,
    "dadapt": 0,
    "dog": 0,
    "mechanic": 1,
    "schedule_free": 1,
    "schedule_free_default": 0,
    "plateau": 2,
    "sgd_best": 1,
    "marthe_kf": 1,
    "marthe_kf_first_order": 1,
    "marthe_kf_full": 1,
    "adam": 1,
    "marthe_kf_adam": 1,
  }
  selects = {n: m.selects for n, m in lr_free.METHODS.items() if m.selects}
  assert selects == {"hd": "beta", "rtho": "beta", "marthe": "kappa", "sgd_best": "lr"}
  grids = {n: m.grid for n, m in lr_free.METHODS.items() if m.grid}
  assert list(grids) == ["sgd_best"]
  np.testing.assert_allclose(grids["sgd_best"], 10.0 ** np.arange(-3, 1.01, 0.5), rtol=1e-3)
  tasks = {n: m.tasks for n, m in lr_free.METHODS.items() if m.tasks}
  assert tasks == {"adam": ("mnist1d-cnn",), "marthe_kf_adam": ("mnist1d-cnn",)}
  # The knob-free rows are fed value= (their safeguard) and value_fn only
  # where the tangent forms a Hessian-vector product.
  feeds = {n: ("value_fn" in m.needs) for n, m in lr_free.METHODS.items() if "value" in m.needs}
  assert feeds == {
    "marthe_kf": False,
    "marthe_kf_first_order": False,
    "marthe_kf_full": True,
    "marthe_kf_adam": False,
  }
  assert {
    n: m.registry.name for n, m in lr_free.METHODS.items() if m.family == "hypergradient"
  } == {
    "hd": "hd",
    "rtho": "rtho",
    "marthe": "marthe",
    "marthe_kf": "knob_free",
    "marthe_kf_first_order": "knob_free_first_order",
    "marthe_kf_full": "knob_free_full",
    "marthe_kf_adam": "knob_free",
  }


def test_task_methods_restricts_the_cnn_only_rows():
  everything = list(lr_free.METHODS)
  for task in ("digits-mlp", "mnist1d-mlp"):
    names = lr_free.task_methods(task, everything)
    assert names == [n for n in everything if n not in ("adam", "marthe_kf_adam")]
  assert lr_free.task_methods("mnist1d-cnn", everything) == everything
  assert lr_free.task_methods("mnist1d-cnn", ["adam", "sgd"]) == ["sgd", "adam"]


@pytest.mark.parametrize("name", list(lr_free.METHODS))
def test_each_wrapper_is_finite_on_a_few_steps(name):
  """Each optimizer, fed as the benchmark feeds it, for a few eager steps."""
  method = lr_free.METHODS[name]
  arrays = _arrays()
  model = lr_free.get_model("mlp", CONFIG, 6, 3)
  loss = lambda p, b: models.cross_entropy(model.apply, p, *b)
  params = model.init(jax.random.key(0))
  tx = method.build(CONFIG, 1e-3, 24)
  step = loop.make_step(tx, loss, method.needs)
  state = tx.init(params)
  lrs, values = [], []
  for t in range(4):
    idx = jnp.arange(8 * t, 8 * t + 8) % 24
    params, state, _, out = step(
      params,
      state,
      (arrays.x_train[idx], arrays.y_train[idx]),
      (arrays.x_val[idx], arrays.y_val[idx]),
    )
    lrs.append(float(method.read_lr(state, jnp.int32(t), CONFIG, 1e-3)))
    values.append(float(out.value))
  chex.assert_tree_all_finite(params)
  chex.assert_tree_all_finite(
    [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  )
  assert np.all(np.isfinite(values))
  lrs = np.asarray(lrs)
  if name in ("schedule_free", "schedule_free_default"):
    assert np.all(np.isnan(lrs))  # exposes no learning rate
  else:
    assert np.all(np.isfinite(lrs)) and np.all(lrs >= 0), lrs
  if name == "sgd":
    np.testing.assert_allclose(lrs, CONFIG.learning_rate)
  if name == "cosine":
    np.testing.assert_allclose(
      lrs, [lr_free.cosine_schedule(CONFIG)(t) for t in range(4)], rtol=1e-6
    )
  if name == "plateau":
    np.testing.assert_allclose(lrs, CONFIG.learning_rate * float(optax.tree.get(state, "scale")))
  if name in ("prodigy", "dadapt", "dog", "mechanic") or name.startswith("marthe_kf"):
    assert np.all(lrs > 0), lrs
  if name == "sgd_best":  # the traced grid value
    np.testing.assert_allclose(lrs, 1e-3, rtol=1e-6)
  if name == "adam":
    np.testing.assert_allclose(lrs, 1e-3, rtol=1e-6)


def test_schedule_free_is_evaluated_at_its_eval_params():
  arrays = _arrays()
  model = lr_free.get_model("mlp", CONFIG, 6, 3)
  inputs = lr_free.make_inputs(arrays, jnp.arange(2), model="mlp", config=CONFIG, num_classes=3)
  runs = lr_free.run_rows(
    arrays, inputs, jnp.zeros(2), method="schedule_free", model="mlp", config=CONFIG
  )
  method = lr_free.METHODS["schedule_free"]
  loss = lambda p: models.cross_entropy(model.apply, p, arrays.x_val, arrays.y_val)
  for i in range(2):
    one = jax.tree.map(lambda x: x[i], inputs)
    params, state, _, _ = jax.jit(lambda b: lr_free.fit(method, model, arrays, CONFIG, b, 0.0))(one)
    averaged = optax.contrib.schedule_free_eval_params(state, params)
    chex.assert_trees_all_close(method.evaluation_params(state, params), averaged)
    np.testing.assert_allclose(runs.val_loss[i], loss(averaged), rtol=1e-5)
    # The averaged params are not the last iterate, and give another loss.
    assert optax.tree.norm(optax.tree.sub(averaged, params)) > 1e-4
    assert abs(float(loss(params)) - float(runs.val_loss[i])) > 1e-6
  plain = lr_free.METHODS["sgd"]
  assert plain.evaluation_params(None, inputs.params) is inputs.params


def test_select_index_takes_the_largest_value_that_does_not_diverge():
  grid = lr_free.candidates()
  np.testing.assert_allclose(grid, 10.0 ** -np.arange(10))
  curves = np.ones((10, 5))
  curves[0, 2] = np.nan  # 1: non-finite
  curves[1, 3] = 2.5  # 0.1: more than twice the first loss
  curves[2:, -1] = 0.5  # 0.01 and below: fine
  chosen, i = choose.select_from_curves(curves, grid)
  assert i == 2 and chosen.value == pytest.approx(1e-2)
  np.testing.assert_array_equal(chosen.diverged, [True, True] + [False] * 8)
  chosen, i = choose.select_from_curves(np.full((10, 5), np.inf), grid)
  assert chosen is None and i == 9


def _prepared(arrays, n_seeds, model="mlp", config=CONFIG):
  inputs = lr_free.make_inputs(
    arrays, jnp.arange(n_seeds), model=model, config=config, num_classes=3
  )
  return lr_free.Prepared(lr_free.Task("toy", "toy", model), None, arrays, inputs, 0.0)


def test_best_in_hindsight_takes_the_best_mean_validation_accuracy():
  val = np.array([[0.5, 0.9], [0.8, 0.7], [0.6, 0.6], [np.nan, 1.0]])
  assert choose.best_in_hindsight(val) == 1  # means 0.7, 0.75, 0.6, nan
  assert choose.best_in_hindsight(val[[0, 2]]) == 0
  # Ties go to the first row (the smaller rate of an increasing grid).
  assert choose.best_in_hindsight(np.array([[0.5, 0.7], [0.6, 0.6]])) == 0
  assert choose.best_in_hindsight(np.full((3, 2), np.nan)) == 0


def test_best_constant_row_reports_the_best_validation_grid_value():
  """Every grid rate runs for every seed; the reported run is the one of the
  rate with the best mean validation accuracy, and is constant SGD there."""
  arrays = _arrays()
  config = CONFIG._replace(steps=12)
  prepared = _prepared(arrays, 3, config=config)
  runner = lr_free.Runner("sgd_best", prepared, config)
  grid = np.asarray(lr_free.BEST_CONSTANT_GRID)
  np.testing.assert_allclose(runner.grid, grid)
  result = lr_free.run_method(runner)
  assert result.timing.runs_per_seed == len(grid)
  val = result.candidate_val_accuracy  # [S, C]
  assert val.shape == result.candidate_diverged.shape == (3, len(grid))
  i = int(np.argmax(val.mean(0)))
  assert len(set(val.mean(0).round(6))) > 1  # the choice is not a tie
  np.testing.assert_allclose(result.selected, grid[i])
  np.testing.assert_allclose(result.run.val_accuracy, val[:, i])
  np.testing.assert_allclose(result.run.learning_rate, grid[i], rtol=1e-6)
  # The same numbers as plain constant SGD at that rate, and at every other
  # rate of the grid the mean validation accuracy is no better.
  for j in (i, 0, len(grid) - 1):
    plain = lr_free.run_rows(
      arrays,
      prepared.inputs,
      jnp.zeros(3),
      method="sgd",
      model="mlp",
      config=config._replace(learning_rate=float(grid[j])),
    )
    np.testing.assert_allclose(plain.val_accuracy, val[:, j], atol=1e-6)
    np.testing.assert_array_equal(plain.diverged, result.candidate_diverged[:, j])
    if j == i:
      np.testing.assert_allclose(plain.test_accuracy, result.run.test_accuracy, atol=1e-6)
    assert plain.val_accuracy.mean() <= val[:, i].mean() + 1e-7
  # The grid is wide enough to diverge at its top on this problem.
  assert result.candidate_diverged[:, -1].all()


def test_knob_free_value_fn_feed_matches_the_package_default():
  """The default's feed passes value_fn exactly when the default needs it."""
  tx = mo.marthe(optax.sgd, learning_rate=0.1)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  grads = {"w": jnp.full(3, 0.5)}
  kwargs = dict(val_grads=grads, value=jnp.float32(1.0))
  if "value_fn" in methods.get("knob_free").needs:
    with pytest.raises(ValueError):
      tx.update(grads, state, params, **kwargs)
  else:
    tx.update(grads, state, params, **kwargs)
  # Explicit first-order never needs it.
  tx = mo.marthe(optax.sgd, learning_rate=0.1, first_order=True)
  tx.update(grads, tx.init(params), params, **kwargs)


@pytest.mark.parametrize("name", ["adam", "marthe_kf_adam"])
def test_cnn_only_rows_run_on_the_cnn(name):
  arrays = _arrays()
  config = CONFIG._replace(steps=6)
  prepared = _prepared(arrays, 2, model="cnn1d", config=config)
  runner = lr_free.Runner(name, prepared, config)
  result = lr_free.run_method(runner)
  run = result.run
  assert np.all(np.isfinite(run.train_loss)) and not run.diverged.any()
  lr = np.asarray(run.learning_rate)
  if name == "adam":
    np.testing.assert_allclose(lr, 1e-3, rtol=1e-6)
  else:
    # eta_0 = 1e-3 in the state; the tangent of Adam's sqrt at zero second
    # moments is handled by the core, so the rate stays finite and positive.
    assert np.all(np.isfinite(lr)) and np.all(lr > 0)


def test_train_flags_divergence():
  arrays = _arrays()
  model = lr_free.get_model("mlp", CONFIG, 6, 3)
  inputs = lr_free.seed_inputs("mlp", arrays, CONFIG, jnp.int32(0), 3)
  sgd = lr_free.METHODS["sgd"]
  for lr, expected in ((1e4, True), (CONFIG.learning_rate, False)):
    config = CONFIG._replace(learning_rate=lr)
    run = jax.jit(lambda i, c=config: lr_free.train(sgd, model, arrays, c, i, 0.0))(inputs)
    assert bool(run.diverged) == expected, lr
  assert run.learning_rate.shape == run.train_loss.shape == (CONFIG.steps,)


def test_tiny_preset_end_to_end(tmp_path):
  """benchmarks/lr_free.py --preset tiny: the table, the JSON and the figures."""
  env = dict(os.environ)
  # Unoptimised XLA code compiles twice as fast; the tiny MLP does not care.
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "benchmarks", "lr_free.py"),
      "--preset",
      "tiny",
      "--out",
      str(tmp_path),
      "--no-progress",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "lr_free.json") as f:
    result = json.load(f)
  assert result["preset"] == "tiny"
  config = schedules.PRESETS["tiny"].config
  steps, n_seeds = config.steps, schedules.PRESETS["tiny"].seeds
  assert result["config"]["steps"] == steps
  assert result["config"]["seeds"] == n_seeds
  assert list(result["tasks"]) == ["digits-mlp"]
  task = result["tasks"]["digits-mlp"]
  sizes = (64, *config.hidden, 10)
  assert task["n_params"] == sum(a * b + b for a, b in zip(sizes, sizes[1:]))
  methods = {m["method"]: m for m in task["methods"]}
  assert list(methods) == lr_free.task_methods("digits-mlp", list(lr_free.METHODS))
  assert "adam" not in methods and "marthe_kf" in methods
  assert methods["sgd"]["time"]["run_ratio"] == 1.0
  assert methods["sgd"]["time"]["total_ratio"] == 1.0
  grid = list(lr_free.candidates())
  for name, m in methods.items():
    spec = lr_free.METHODS[name]
    assert m["label"] == spec.label and m["n_user_set"] == len(spec.user_set)
    assert m["seeds"] == n_seeds
    for key in ("val_accuracy", "test_accuracy"):
      acc = np.asarray(m[key]["per_seed"], float)
      assert acc.shape == (n_seeds,) and np.all((acc >= 0) & (acc <= 1))
      np.testing.assert_allclose(m[key]["mean"], acc.mean(), rtol=1e-5)
    t = m["time"]
    assert t["run_s"] > 0 and t["compile_s"] > 0
    np.testing.assert_allclose(t["total_s"], t["compile_s"] + t["run_s"] + t["select_s"], rtol=1e-4)
    lr = m["learning_rate"]
    if name.startswith("schedule_free"):
      assert not lr["exposed"] and lr["mean"] is None
    else:
      assert lr["exposed"] and len(lr["mean"]) == steps == len(lr["seed0"])
    counts = m["safeguard_count"]
    if name.startswith("marthe_kf"):  # counted in the state, per seed
      assert len(counts) == n_seeds and all(c >= 0 for c in counts)
      assert len(m["nonfinite_count"]) == n_seeds
    elif not name.startswith(("hd", "rtho", "marthe")):
      assert counts is None and m["nonfinite_count"] is None
    if spec.grid is not None:
      # Every grid value ran for every seed; the best mean validation
      # accuracy was kept, the same value for every seed.
      np.testing.assert_allclose(m["candidates"], spec.grid, rtol=1e-6)
      assert t["runs_per_seed"] == len(spec.grid)
      val = np.asarray(m["candidate_val_accuracy"], float)  # [S, C]
      i = int(np.argmax(val.mean(0)))
      np.testing.assert_allclose(m["selected"], [spec.grid[i]] * n_seeds, rtol=1e-6)
      np.testing.assert_allclose(m["val_accuracy"]["per_seed"], val[:, i], rtol=1e-5)
      np.testing.assert_allclose(lr["mean"], spec.grid[i], rtol=1e-5)
    elif spec.selects:
      # Candidates ran largest first until every seed had a survivor; each
      # seed kept its largest candidate that did not diverge.
      assert m["selects"] == spec.selects
      np.testing.assert_allclose(m["candidates"], grid, rtol=1e-6)
      tried, last = t["runs_per_seed"], []
      for value, diverged in zip(m["selected"], m["candidate_diverged"]):
        assert len(diverged) == len(grid) and not any(diverged[tried:])
        if value is None:  # every candidate diverged
          assert all(diverged)
          last.append(len(grid))
          continue
        i = int(np.argmin(np.abs(np.log(grid) - np.log(value))))
        assert not diverged[i] and all(diverged[:i])
        last.append(i + 1)
      assert tried == max(last)
    else:
      assert m["selected"] is None and t["runs_per_seed"] == 1
  np.testing.assert_allclose(
    methods["sgd"]["learning_rate"]["mean"], config.learning_rate, rtol=1e-6
  )
  # The table: printed and written, one row per method.
  with open(tmp_path / "lr_free.md") as f:
    table = f.read()
  assert "time x SGD" in table.splitlines()[0]
  assert len(table.strip().splitlines()) == 2 + len(methods)
  for m in methods.values():
    assert f"| digits-mlp | {m['label']} " in table
    assert f"| digits-mlp | {m['label']} " in proc.stdout
  for name in ("lr_free.png", "lr_free_schedules.png"):
    with open(tmp_path / name, "rb") as f:
      head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(tmp_path / name) > 20_000


def test_knob_free_study_tiny(tmp_path):
  """benchmarks/knob_free_study.py --preset tiny: the sweep's JSON and table."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "benchmarks", "knob_free_study.py"),
      "--preset",
      "tiny",
      "--out",
      str(tmp_path),
      "--no-progress",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "knob_free_study.json") as f:
    result = json.load(f)
  task = result["tasks"]["digits-mlp"]
  assert list(task["references"]) == ["sgd", "prodigy", "sgd_best"]
  best = task["references"]["sgd_best"]
  i = int(np.argmax(best["grid_val_mean"]))
  assert best["selected"] == pytest.approx(best["grid"][i])
  configs = task["configs"]
  keys = [(c["mu"], c["first_order"], c["step_size"]) for c in configs]
  assert keys == [
    (mu, fo, s) for mu in ("smoothed", 1.0) for fo in (True, False) for s in (0.01, 0.1)
  ]
  n_seeds = result["config"]["seeds"]
  for c in configs:
    assert len(c["test_accuracy"]) == len(c["val_accuracy"]) == n_seeds
    assert 0 <= c["diverged"] <= n_seeds
    assert len(c["safeguard_count"]) == n_seeds
    assert all(isinstance(k, int) and k >= 0 for k in c["safeguard_count"])
    np.testing.assert_allclose(c["test_mean"], np.mean(c["test_accuracy"]), rtol=1e-5)
  # The traced step size reaches the update: the two step sizes of a
  # configuration end at different learning rates.
  for a, b in zip(configs[::2], configs[1::2]):
    assert a["final_lr"] != b["final_lr"]
  with open(tmp_path / "knob_free_study.md") as f:
    table = f.read()
  assert table.count("| digits-mlp | MARTHE knob-free (SGD) ") == len(configs)
  with open(tmp_path / "knob_free_study.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
