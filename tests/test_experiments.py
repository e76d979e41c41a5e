# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Tests of marthe_lab: data, training runs, the two experiments."""

import json
import os
import random

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marthe_lab import data
from marthe_lab import loop
from marthe_lab import report
from marthe_lab import schedules
from marthe_lab import figure1
from marthe_lab import toy_functions
from marthe_lab import train


# ---------------------------------------------------------------- data


def test_digits_split_shapes_disjoint_and_deterministic():
  d = data.digits()
  assert (d.x_train.shape, d.x_val.shape, d.x_test.shape) == ((1000, 64), (300, 64), (497, 64))
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  assert d.num_classes == 10
  assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
  # The three sets partition the 1,797 examples (as multisets of rows).
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  ours = np.concatenate([d.x_train, d.x_val, d.x_test]) * 16
  ours = np.concatenate([ours, np.concatenate([d.y_train, d.y_val, d.y_test])[:, None]], 1)
  theirs = np.concatenate([x, y[:, None]], 1)
  np.testing.assert_array_equal(
    np.unique(ours, axis=0, return_counts=True)[1], np.unique(theirs, axis=0, return_counts=True)[1]
  )
  again = data.digits()
  for a, b in zip(d[1:7], again[1:7]):
    np.testing.assert_array_equal(a, b)
  other = data.digits(seed=1)
  assert not np.array_equal(d.y_train, other.y_train)


def test_mnist1d_generated_offline_split_and_rng_untouched(monkeypatch):
  import requests

  def no_network(*args, **kwargs):
    raise AssertionError("mnist1d must not download")

  monkeypatch.setattr(requests, "get", no_network)
  np.random.seed(123)
  random.seed(123)
  expected_np, expected_py = np.random.rand(), random.random()
  np.random.seed(123)
  random.seed(123)
  d = data.mnist1d()
  assert (np.random.rand(), random.random()) == (expected_np, expected_py)
  assert (d.x_train.shape, d.x_val.shape, d.x_test.shape) == ((3500, 40), (500, 40), (1000, 40))
  assert d.num_classes == 10
  assert set(np.unique(d.y_test)) == set(range(10))
  again = data.mnist1d()
  np.testing.assert_array_equal(d.x_val, again.x_val)
  np.testing.assert_array_equal(d.y_train, again.y_train)


def test_split_rejects_too_many_examples():
  with pytest.raises(ValueError, match="cannot take"):
    data.digits(n_val=1000, n_test=797)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
  a = (np.arange(2 * 3 * 4) % 200).astype(dtype).reshape(2, 3, 4)
  path = str(tmp_path / f"a-idx3-ubyte{suffix}")
  data.write_idx(path, a)
  with open(path, "rb") as f:
    assert (f.read(2) == b"\x1f\x8b") == bool(suffix)
  b = data.read_idx(path)
  assert b.dtype == a.dtype
  np.testing.assert_array_equal(a, b)


def test_idx_rejects_malformed(tmp_path):
  bad = tmp_path / "bad"
  bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
  with pytest.raises(ValueError, match="magic"):
    data.read_idx(str(bad))
  short = tmp_path / "short"
  short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
  with pytest.raises(ValueError, match="announces"):
    data.read_idx(str(short))


def _write_mnist(directory, gz, rng):
  images = rng.integers(0, 256, (30, 5, 5), dtype=np.uint8)
  labels = (np.arange(30) % 10).astype(np.uint8)
  test_images = rng.integers(0, 256, (12, 5, 5), dtype=np.uint8)
  test_labels = (np.arange(12) % 10).astype(np.uint8)
  ext = ".gz" if gz else ""
  # One file uses the alternative "train-images.idx3-ubyte" spelling.
  data.write_idx(os.path.join(directory, f"train-images.idx3-ubyte{ext}"), images)
  data.write_idx(os.path.join(directory, f"train-labels-idx1-ubyte{ext}"), labels)
  data.write_idx(os.path.join(directory, f"t10k-images-idx3-ubyte{ext}"), test_images)
  data.write_idx(os.path.join(directory, f"t10k-labels-idx1-ubyte{ext}"), test_labels)
  return images, labels, test_images, test_labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader_on_tiny_files(tmp_path, gz):
  images, labels, test_images, test_labels = _write_mnist(
    str(tmp_path), gz, np.random.default_rng(0)
  )
  d = data.mnist_idx(str(tmp_path), n_train=20, n_val=6)
  assert d.name == "mnist"
  assert (d.x_train.shape, d.x_val.shape, d.x_test.shape) == ((20, 25), (6, 25), (12, 25))
  np.testing.assert_allclose(d.x_test, test_images.reshape(12, 25) / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(d.y_test, test_labels)
  # Train and validation rows are distinct training-file rows with their labels.
  flat = images.reshape(30, 25).astype(np.float32) / 255.0
  rows = {tuple(r): label for r, label in zip(flat, labels)}
  picked = [tuple(r) for r in np.concatenate([d.x_train, d.x_val])]
  assert len(set(picked)) == 26
  assert [rows[r] for r in picked] == list(np.concatenate([d.y_train, d.y_val]))


def test_mnist_idx_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="t10k-images|train-images"):
    data.mnist_idx(str(tmp_path))
  with pytest.raises(ValueError, match="--data"):
    data.load("mnist")


# ---------------------------------------------------------------- training

CONFIG = train.TrainConfig(steps=4, batch_size=20, val_batch_size=10, hidden=(8, 8, 8))


@pytest.fixture(scope="module")
def arrays():
  return train.Arrays.from_dataset(data.digits())


def test_epoch_batches_visit_each_example_once_per_epoch():
  idx = np.asarray(train.epoch_batches(jax.random.key(0), 10, 7, 4))
  assert idx.shape == (7, 4)
  flat = idx.reshape(-1)
  for epoch in range(2):
    assert sorted(flat[10 * epoch : 10 * epoch + 10]) == list(range(10))
  with pytest.raises(ValueError):
    train.epoch_batches(jax.random.key(0), 3, 2, 4)


@pytest.fixture(scope="module")
def inputs2(arrays):
  # Two seeds: every vmapped call below has 2 rows and hits the same compiled
  # programs.
  return train.make_inputs(jnp.arange(2), arrays, CONFIG)


HYPER2 = train.Hyper(jnp.array([1e-3, 1e-2]), jnp.array([0.0, 0.0]), jnp.array([0.9, 0.5]))


def test_vmap_over_seeds_equals_a_python_loop(arrays, inputs2):
  seeds = jnp.arange(2)
  vmapped = train.run_online(arrays, CONFIG, inputs2, seeds, HYPER2, False)
  single = jax.jit(lambda inp, h: train.train("eq5", arrays, CONFIG, inp, h))
  for i in range(2):
    h = jax.tree.map(lambda a: a[i], HYPER2)
    one = single(train.seed_inputs(jnp.int32(i), arrays, CONFIG), h)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], vmapped), one, rtol=2e-5, atol=1e-6)
  # Different seeds: different w_0 and minibatches.
  assert not np.allclose(vmapped.trace.train_loss[0], vmapped.trace.train_loss[1])
  # The seed's inputs are what make_inputs computed.
  chex.assert_trees_all_equal(
    jax.tree.map(lambda a: a[1], inputs2), train.seed_inputs(jnp.int32(1), arrays, CONFIG)
  )


@pytest.mark.parametrize("method, mu", [("hd", 0.0), ("rtho", 1.0)])
def test_family_member_is_exactly_hd_and_rtho(arrays, inputs2, method, mu):
  """The fixed-mu family with a traced mu reproduces mo.hd / mo.rtho."""
  beta = 1e-2
  hyper = train.Hyper(jnp.full(2, beta), jnp.zeros(2), jnp.full(2, mu))
  ours = train.run_online(arrays, CONFIG, inputs2, jnp.arange(2), hyper, False)
  ref = train.train(method, arrays, CONFIG, jax.tree.map(lambda a: a[0], inputs2), beta)
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], ours), ref, rtol=1e-5, atol=1e-7)
  assert float(ours.trace.learning_rate[0, -1]) != CONFIG.learning_rate


def test_constant_member_is_plain_sgd(arrays, inputs2):
  zero = train.Hyper(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))
  online = train.run_online(arrays, CONFIG, inputs2, jnp.arange(2), zero, False)
  sgd = train.run_schedule(
    arrays, CONFIG, inputs2, jnp.arange(2), jnp.full((2, CONFIG.steps), CONFIG.learning_rate)
  )
  np.testing.assert_allclose(online.trace.learning_rate, CONFIG.learning_rate)
  np.testing.assert_allclose(sgd.trace.learning_rate, CONFIG.learning_rate)
  chex.assert_trees_all_close(
    (online.val_loss, online.test_accuracy, online.trace.train_loss),
    (sgd.val_loss, sgd.test_accuracy, sgd.trace.train_loss),
    rtol=1e-5,
  )


def test_run_in_chunks_pads_and_matches(arrays, inputs2):
  seeds = np.array([0, 1, 1], np.int32)
  hyper = train.Hyper(
    np.array([1e-3, 1e-2, 1e-1], np.float32),
    np.zeros(3, np.float32),
    np.array([0.9, 0.5, 0.9], np.float32),
  )
  fn = lambda s, h: train.run_online(arrays, CONFIG, inputs2, s, h, False)
  counted = []
  chunked = loop.run_in_chunks(fn, (seeds, hyper), chunk=2, callback=counted.append)
  assert counted == [2, 1]
  first = fn(jnp.arange(2), HYPER2)  # rows 0 and 1
  last = fn(jnp.array([1, 0]), jax.tree.map(lambda a: a[jnp.array([2, 0])], hyper))
  expected = jax.tree.map(lambda a, b: np.concatenate([a, b[:1]]), first, last)
  chex.assert_trees_all_close(chunked, expected, rtol=2e-5, atol=1e-6)


def test_divergence_is_flagged(arrays, inputs2):
  out = train.run_schedule(
    arrays,
    CONFIG,
    inputs2,
    jnp.arange(2),
    jnp.stack([jnp.full(CONFIG.steps, 1e4), jnp.full(CONFIG.steps, 1e-2)]),
  )
  np.testing.assert_array_equal(out.diverged, [True, False])


# ---------------------------------------------------------------- reports


def test_json_helpers_round_nan_and_nested():
  out = report.to_jsonable(
    {"a": np.array([1.23456789, np.nan]), "b": (np.int32(3),), "c": np.float32(np.inf)}
  )
  assert out == {"a": [1.23457, None], "b": [3], "c": None}
  table = report.format_table(["x", "y"], [[1, "long value"]])
  assert table.splitlines()[0].startswith("| x | y")
  assert report.mean_std(np.array([0.5, 0.7])) == "60.0 ± 10.0"
  assert report.format_value(1e-5) == "1e-05"
  assert report.format_value(3.16e-5) == "3.2e-05"


# ---------------------------------------------------------------- experiments


def test_tiny_schedules_preset_end_to_end(tmp_path):
  preset = schedules.PRESETS["tiny"]
  logged = []
  out = schedules.run(preset, str(tmp_path), progress=False, log=logged.append)
  for name in ("results.json", "table.md", "figure2_digits.png"):
    assert (tmp_path / name).stat().st_size > 0
  with open(tmp_path / "results.json") as f:
    js = json.load(f)
  methods = js["datasets"]["digits"]["methods"]
  expected = [m.name for m in schedules.METHODS] + [schedules.SELECTED]
  if train.knob_free_available():
    expected.append(schedules.KNOB_FREE)
  assert list(methods) == expected
  hd = methods["HD"]
  assert hd["grid"] == list(preset.beta_grid)
  assert np.shape(hd["val_accuracy"]) == (len(preset.beta_grid), preset.seeds)
  assert np.shape(hd["trace"]["learning_rate"]) == (
    len(preset.beta_grid),
    preset.seeds,
    preset.config.steps,
  )
  lrs = js["datasets"]["digits"]["lrs_opt"]
  assert np.shape(lrs["schedules"]) == (preset.lrs_opt_seeds, preset.config.steps)
  assert np.shape(lrs["objectives"]) == (preset.lrs_opt_seeds, preset.lrs_opt_steps)
  # Started from the best constant of the candidates, per seed.
  starts = np.asarray(lrs["start_schedules"])
  values = np.asarray(lrs["constant_values"])
  candidates = np.asarray(lrs["constant_candidates"])
  assert values.shape == (preset.lrs_opt_seeds, len(candidates))
  np.testing.assert_allclose(starts[:, 0], candidates[np.argmin(values, 1)], rtol=1e-6)
  np.testing.assert_allclose(starts, starts[:, :1] * np.ones_like(starts))
  outcome = out["results"][0].lrs_opt
  assert np.all(outcome.steps_taken == preset.lrs_opt_steps)  # no tol in tiny
  summary = lrs["summary"]
  assert summary["best_online"]["method"] in methods
  np.testing.assert_allclose(
    summary["ratio"], summary["lrs_opt_val_loss"] / summary["best_online"]["val_loss"], rtol=1e-5
  )
  assert set(js["datasets"]["digits"]["tracking"]) == set(methods)
  assert len(js["datasets"]["digits"]["kappa_selection"]) == preset.seeds
  table = (tmp_path / "table.md").read_text()
  for name in expected + [schedules.LRS_OPT]:
    assert f"| {name} " in table
  assert "mean |log10(eta/eta_LRS-OPT)|" in table and "x the best online" in table
  assert "± " in logged[0] and preset.note in logged[0]
  # Constant eta keeps eta_0; the online methods move it.
  const = np.asarray(out["results"][0].results["constant"].runs.trace.learning_rate)
  np.testing.assert_allclose(const, preset.config.learning_rate)
  hd_lr = np.asarray(out["results"][0].results["HD"].runs.trace.learning_rate)
  assert not np.allclose(hd_lr, preset.config.learning_rate)
  # The selected kappa is the largest grid value whose training loss did not
  # diverge (selection.divergence), and its runs are that grid row's.
  from marthe_optax import selection

  marthe = out["results"][0].results["MARTHE"]
  chosen = out["results"][0].results[schedules.SELECTED]
  for s in range(preset.seeds):
    div = np.asarray(selection.divergence(jnp.asarray(marthe.runs.trace.train_loss[:, s])).diverged)
    expected = marthe.grid[~div].max()
    assert chosen.selected[s] == expected
    i = int(np.flatnonzero(marthe.grid == expected)[0])
    np.testing.assert_array_equal(
      chosen.runs.trace.learning_rate[0, s], marthe.runs.trace.learning_rate[i, s]
    )


def _fake_result(online_rates, lrs_schedules, val_losses, diverged=None):
  """A DatasetResult with one online method over a grid and LRS-OPT."""
  online_rates = np.asarray(online_rates, np.float64)  # [G, S, T]
  g, s, steps = online_rates.shape
  zeros = np.zeros((g, s))
  trace = train.Trace(online_rates, *(np.zeros_like(online_rates),) * 4)
  runs = train.RunResult(
    trace,
    zeros,
    zeros,
    np.asarray(val_losses, np.float64),
    zeros,
    zeros,
    zeros,
    zeros,
    np.zeros((g, s), bool) if diverged is None else diverged,
  )
  grid = schedules.GridResult("M", "beta", np.logspace(-3, -3 + g - 1, g), runs)
  lrs_schedules = np.asarray(lrs_schedules, np.float64)
  n = lrs_schedules.shape[0]
  lrs_runs = jax.tree.map(lambda a: a[:1, :n], runs)
  lrs = schedules.LrsOptOutcome(
    seeds=np.arange(n),
    schedules=lrs_schedules,
    objectives=np.zeros((n, 3)),
    history=np.zeros((n, 1, steps)),
    history_steps=np.zeros(1),
    runs=lrs_runs,
    seconds_per_outer_step=1.0,
    relative_improvement=np.zeros((n, 3)),
    steps_taken=np.full(n, 3),
    converged=np.ones(n, bool),
    final_slope=np.zeros(n),
    start="constant eta_0",
    start_schedules=lrs_schedules,
    start_runs=lrs_runs,
    compile_seconds=0.0,
    nonfinite_count=np.zeros(n, int),
  )
  return schedules.DatasetResult("d", "d", {"M": grid}, lrs, [], {})


def test_tracking_metrics_exact_values():
  t = np.arange(8.0)
  lrs = 0.1 * 10.0 ** (-t / 7)  # 0.1 -> 0.01
  # Seed 0 is LRS-OPT's schedule times 10 (distance 1, correlation 1); seed 1
  # runs it backwards (distance mean |log10 ratio|, correlation -1).
  rates = np.stack([10 * lrs, lrs[::-1]])[None]
  result = _fake_result(rates, np.stack([lrs, lrs]), [[0.5, 0.5]])
  m = schedules.tracking(result)["M"]
  expected = np.mean(np.abs(np.log10(lrs[::-1] / lrs)))
  np.testing.assert_allclose(m["mean_abs_log10"], [1.0, expected], rtol=1e-12)
  np.testing.assert_allclose(m["correlation"], [1.0, -1.0], rtol=1e-12)
  # A constant schedule has no correlation; zero rates count as 1e-8.
  flat = _fake_result(np.zeros((1, 1, 8)), lrs[None], [[0.5]])
  m = schedules.tracking(flat)["M"]
  assert np.isnan(m["correlation"][0])
  np.testing.assert_allclose(m["mean_abs_log10"], np.mean(np.log10(lrs) + 8), rtol=1e-12)
  rows = schedules.tracking_rows(flat)
  assert rows[0][3] == "-"


def test_best_online_skips_diverged_grid_values_and_uses_the_given_seeds():
  losses = np.array([[0.1, 0.9], [0.3, 0.3], [0.2, 0.6]])
  diverged = np.array([[True, False], [False, False], [False, False]])
  result = _fake_result(np.ones((3, 2, 4)), np.ones((2, 4)), losses, diverged)
  assert schedules.best_online(result.results)[:2] == ("M", 1)
  name, i, value = schedules.best_online(result.results, np.array([0]))
  assert (name, i) == ("M", 2) and value == pytest.approx(0.2)


def test_estimate_extrapolates_the_vmapped_lrs_opt_step():
  preset = schedules.PRESETS["tiny"]
  logged = []
  est = schedules.estimate(preset, data.load("digits"), probe_steps=4, log=logged.append)
  parts, per = est["seconds"], est["seconds_per_run_step"]
  steps = preset.config.steps
  np.testing.assert_allclose(parts["total"], sum(v for k, v in parts.items() if k != "total"))
  np.testing.assert_allclose(
    parts["lrs_opt"], preset.lrs_opt_steps * steps * per["lrs_opt_outer_step"]
  )
  # 'best constant' start: 6 candidates x 2 * draws progressions per seed.
  runs = preset.lrs_opt_seeds * 6 * 2 * preset.lrs_opt_draws
  np.testing.assert_allclose(parts["lrs_opt_start"], runs * steps * per["forward_run"])
  np.testing.assert_allclose(est["cpu_seconds"], parts["total"] * est["probe_cpu_per_wall"])
  assert est["probe_cpu_seconds"] > 0 and "CPU-hours" in logged[0]


def test_lrs_opt_warm_starts_from_the_best_online_schedules():
  import dataclasses

  preset = dataclasses.replace(
    schedules.PRESETS["tiny"], lrs_opt_start="best online", lrs_opt_steps=1
  )
  d = data.load("digits")
  arrays = train.Arrays.from_dataset(d)
  inputs = train.make_inputs(jnp.arange(2), arrays, preset.config, d.num_classes)
  steps = preset.config.steps
  # Grid row 1 has the lowest mean validation loss; its rates become the start
  # (a zero rate is floored: log space needs eta > 0).
  rates = np.stack([np.full((2, steps), 0.01), np.linspace(0.0, 0.2, 2 * steps).reshape(2, steps)])
  fake = _fake_result(rates, np.ones((2, steps)), [[0.5, 0.5], [0.2, 0.3]]).results
  outcome = schedules.run_lrs_opt(arrays, inputs, preset, results=fake)
  assert outcome.start == "M beta=1e-02"
  np.testing.assert_allclose(
    outcome.start_schedules, np.maximum(rates[1], schedules.LRS_OPT_FLOOR), rtol=1e-6
  )
  assert np.all(np.isfinite(outcome.objectives)) and outcome.schedules.shape == (2, steps)
  with pytest.raises(ValueError, match="needs the online results"):
    schedules.run_lrs_opt(arrays, inputs, preset)
  with pytest.raises(ValueError, match="lrs_opt_start must be"):
    schedules.run_lrs_opt(arrays, inputs, dataclasses.replace(preset, lrs_opt_start="?"))


def test_benchmark_cli_overrides(tmp_path, monkeypatch):
  import importlib.util

  spec = importlib.util.spec_from_file_location(
    "bench_schedules", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "schedules.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  seen = {}
  monkeypatch.setattr(
    schedules,
    "run",
    lambda preset, out, datasets=None, progress=True: seen.update(
      preset=preset, out=out, datasets=datasets
    ),
  )
  _write_mnist(str(tmp_path), True, np.random.default_rng(1))
  with pytest.raises(ValueError, match="cannot take"):  # 30 < 7000 + 700
    module.main(["--preset", "tiny", "--data", str(tmp_path)])
  assert (
    module.main(
      [
        "--preset",
        "fast",
        "--seeds",
        "1",
        "--datasets",
        "digits",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
      ]
    )
    == 0
  )
  assert seen["preset"].seeds == 1 and seen["preset"].lrs_opt_seeds == 1
  assert seen["preset"].datasets == ("digits",)
  assert "overridden" in seen["preset"].note
  assert seen["out"] == str(tmp_path / "o")


def test_toy_functions_values():
  np.testing.assert_allclose(toy_functions.beale(jnp.array([3.0, 0.5])), 0.0, atol=1e-12)
  eps = toy_functions.BUKIN_EPS
  on_valley = toy_functions.bukin_smoothed(jnp.array([-10.0, -0.1]), eps)
  np.testing.assert_allclose(on_valley, np.sqrt(np.sqrt(eps) + eps), rtol=1e-6)
  assert toy_functions.bukin_smoothed(jnp.array([-10.0, 1.0]), eps) > on_valley


def test_figure1_small_grid(tmp_path):
  result = toy_functions.run_figure1(
    steps=30, beta_grid=np.array([1e-6, 1e3]), kappa_grid=np.array([1e-16, 1e6])
  )
  for name in ("beale", "bukin"):
    for m in toy_functions.METHODS:
      traj = result.runs[name][m.name]
      assert traj.points.shape == (2, 31, 2)
      assert traj.learning_rate.shape == (2, 30)
      # A tiny hyper-learning rate does not diverge; the Beale start with a
      # huge one does.
      assert not traj.diverged[0]
    np.testing.assert_allclose(
      result.constant[name].learning_rate, toy_functions.PROBLEMS[name].learning_rate
    )
  assert result.runs["beale"]["HD"].diverged[1]
  assert result.runs["beale"]["MARTHE"].diverged[1]
  table = figure1.table(result)
  assert "RTHO" in table and "smallest diverging" in table
  report.write_json(str(tmp_path / "f.json"), figure1.to_json(result))
  js = json.loads((tmp_path / "f.json").read_text())
  assert js["problems"]["bukin"]["methods"]["HD"]["grid"] == "beta"
  figure1.plot(result, str(tmp_path / "f.png"))
  assert (tmp_path / "f.png").stat().st_size > 0
