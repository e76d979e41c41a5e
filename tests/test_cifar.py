# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""CIFAR pickles, augmentation, models, schedules and the benchmark's smoke run."""

import importlib.util
import json
import os
import pickle

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marthe_lab import cifar
from marthe_lab.cifar import data as cifar_data
from marthe_lab.cifar import models as cifar_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, data, labels, label_key, extra=None):
  """One batch in the archives' format: a pickled dict with bytes keys."""
  batch = {b"batch_label": b"test", b"data": data, label_key: list(labels)}
  batch.update(extra or {})
  with open(path, "wb") as f:
    pickle.dump(batch, f, protocol=2)


def _images(rng, n):
  return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  train = []
  for i in range(1, 6):
    data, labels = _images(rng, 4), rng.integers(0, 10, 4)
    _write(folder / f"data_batch_{i}", data, labels, b"labels")
    train.append((data, labels))
  test = (_images(rng, 3), rng.integers(0, 10, 3))
  _write(folder / "test_batch", *test, b"labels")
  return tmp_path, train, test


@pytest.fixture
def cifar100_dir(tmp_path):
  rng = np.random.default_rng(1)
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  train = (_images(rng, 12), rng.integers(0, 100, 12))
  test = (_images(rng, 5), rng.integers(0, 100, 5))
  for name, (data, fine) in (("train", train), ("test", test)):
    coarse = {b"coarse_labels": list(fine // 5)}
    _write(folder / name, data, fine, b"fine_labels", coarse)
  return tmp_path, train, test


def _as_nhwc(data):
  """The documented layout: 1024 red, 1024 green, 1024 blue, row-major."""
  out = np.zeros((len(data), 32, 32, 3), np.uint8)
  for ch in range(3):
    for r in range(32):
      out[:, r, :, ch] = data[:, ch * 1024 + r * 32 : ch * 1024 + r * 32 + 32]
  return out


def test_read_batch_layout(cifar10_dir):
  root, train, _ = cifar10_dir
  x, y = cifar_data.read_batch(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), b"labels")
  assert x.dtype == np.uint8 and y.dtype == np.int32
  np.testing.assert_array_equal(x, _as_nhwc(train[0][0]))
  np.testing.assert_array_equal(y, train[0][1])


def test_load_cifar10(cifar10_dir):
  root, train, test = cifar10_dir
  data = cifar_data.load("cifar10", str(root), num_val=5)
  assert data.num_classes == 10
  chex.assert_shape(data.x_train, (15, 32, 32, 3))
  chex.assert_shape(data.x_val, (5, 32, 32, 3))
  chex.assert_shape(data.x_test, (3, 32, 32, 3))
  np.testing.assert_array_equal(data.x_test, _as_nhwc(test[0]))
  np.testing.assert_array_equal(data.y_test, test[1])
  # Train and validation split the 20 training images, labels attached.
  all_x = _as_nhwc(np.concatenate([d for d, _ in train]))
  all_y = np.concatenate([labels for _, labels in train])
  got_x = np.concatenate([data.x_train, data.x_val])
  got_y = np.concatenate([data.y_train, data.y_val])
  order = lambda x: np.lexsort(x.reshape(len(x), -1)[:, :8].T)
  np.testing.assert_array_equal(got_x[order(got_x)], all_x[order(all_x)])
  np.testing.assert_array_equal(got_y[order(got_x)], all_y[order(all_x)])
  # The split is fixed by split_seed, not by anything else.
  again = cifar_data.load("cifar10", str(root), num_val=5)
  np.testing.assert_array_equal(again.y_val, data.y_val)


def test_load_cifar100_fine_labels(cifar100_dir, monkeypatch):
  root, train, test = cifar100_dir
  # Through the environment variable, pointing at the folder itself.
  monkeypatch.setenv(cifar_data.ENV_VAR, str(root / "cifar-100-python"))
  data = cifar_data.load("cifar100", num_val=2)
  assert data.num_classes == 100
  chex.assert_shape(data.x_train, (10, 32, 32, 3))
  np.testing.assert_array_equal(data.y_test, test[1])
  np.testing.assert_array_equal(data.x_test, _as_nhwc(test[0]))
  assert sorted(np.concatenate([data.y_train, data.y_val])) == sorted(train[1])


def test_loader_errors(tmp_path, monkeypatch):
  monkeypatch.delenv(cifar_data.ENV_VAR, raising=False)
  with pytest.raises(FileNotFoundError, match="MARTHE_CIFAR_DIR"):
    cifar_data.load("cifar10")
  with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
    cifar_data.load("cifar10", str(tmp_path))
  with pytest.raises(ValueError, match="name must be"):
    cifar_data.find_dir("mnist", str(tmp_path))
  _write(tmp_path / "bad", _images(np.random.default_rng(0), 2), [0, 1], b"labels")
  with pytest.raises(ValueError, match="fine_labels"):
    cifar_data.read_batch(str(tmp_path / "bad"), b"fine_labels")


def test_augment_shapes_determinism_and_crops():
  images = jnp.asarray(np.random.default_rng(0).integers(1, 256, (16, 32, 32, 3), dtype=np.uint8))
  key = jax.random.key(3)
  out = cifar_data.augment(key, images)
  chex.assert_shape(out, images.shape)
  assert out.dtype == images.dtype
  chex.assert_trees_all_equal(out, jax.jit(cifar_data.augment)(key, images))
  assert not np.array_equal(out, cifar_data.augment(jax.random.key(4), images))
  # Each output is a 32x32 crop of the zero-padded image, possibly flipped.
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
  flips = 0
  for i in range(len(images)):
    matches = [
      (dy, dx, flip)
      for dy in range(9)
      for dx in range(9)
      for flip in (False, True)
      if np.array_equal(
        np.asarray(out[i]),
        (
          padded[i, dy : dy + 32, dx : dx + 32][:, ::-1]
          if flip
          else padded[i, dy : dy + 32, dx : dx + 32]
        ),
      )
    ]
    assert len(matches) == 1, matches
    flips += matches[0][2]
  assert 0 < flips < len(images)


def test_normalize():
  x = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
  y = cifar_data.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y[0, 0, 0], [2.0, 1.0, 0.5])


def test_synthetic_data():
  data = cifar_data.synthetic(64, 16, 32, num_classes=5)
  chex.assert_shape(data.x_train, (64, 32, 32, 3))
  assert data.x_train.dtype == np.uint8
  assert set(np.unique(data.y_train)) <= set(range(5))
  chex.assert_shape(data.x_test, (32, 32, 32, 3))


@pytest.mark.parametrize(
  "name,classes,count",
  [("vgg11", 10, 9_231_114), ("resnet18", 100, 11_220_132)],
)
def test_model_sizes(name, classes, count):
  # The paper's models at full width (the usual CIFAR parameter counts).
  model = nnx.eval_shape(lambda: cifar_models.make(name, classes))
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert sum(int(np.prod(p.shape)) for p in params) == count


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_models_output_shapes(name):
  # Abstract evaluation only (no compilation): full-width shapes.
  model = nnx.eval_shape(lambda: cifar_models.make(name, 7))
  graphdef, state = nnx.split(model)
  for train in (False, True):
    out = jax.eval_shape(
      lambda s, x: nnx.merge(graphdef, s)(x, train=train),
      state,
      jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
    )
    chex.assert_shape(out, (2, 7))


def test_batchnorm_modes():
  model = cifar_models.make("vgg-mini", 7, width=0.0625)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  chex.assert_shape(model(x, train=False), (4, 7))
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), before)
  model(x, train=True)  # updates every running average
  after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
  assert all(jax.tree.leaves(changed))


def test_fixed_schedules():
  cfg = cifar.preset("paper")
  spe = 10
  lr = lambda method, step: float(cifar.make_optimizer(cfg, method, spe, None)[1](step))
  assert lr("staircase", 60 * spe - 1) == pytest.approx(0.1)
  assert lr("staircase", 60 * spe) == pytest.approx(0.01)
  assert lr("staircase", 180 * spe) == pytest.approx(1e-4)
  assert lr("exponential", 5 * spe + 3) == pytest.approx(0.1 * 0.99**5)
  # SGDR: restarts after 10, then 10 + 20 epochs; cosine in between.
  assert lr("sgdr", 0) == pytest.approx(0.1)
  assert lr("sgdr", 5 * spe) == pytest.approx(0.05)
  assert lr("sgdr", 10 * spe) == pytest.approx(0.1)
  assert lr("sgdr", 20 * spe) == pytest.approx(0.05)
  assert lr("sgdr", 30 * spe) == pytest.approx(0.1)
  assert lr("sgdr", 30 * spe - 1) < 1e-3


def _benchmark_module():
  spec = importlib.util.spec_from_file_location(
    "cifar_benchmark", os.path.join(ROOT, "benchmarks", "cifar.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """The smoke preset run once, uninterrupted: ``(out folder, results)``."""
  out = tmp_path_factory.mktemp("smoke")
  _benchmark_module().main(["--preset", "smoke", "--out", str(out), "--no-progress"])
  with open(out / "cifar.json") as f:
    return out, json.load(f)


def test_smoke_preset_end_to_end(smoke_run):
  tmp_path, results = smoke_run
  assert set(results["methods"]) == {"staircase", "marthe"}
  assert results["kappa_source"] == "flag"
  for method, res in results["methods"].items():
    (run,) = res["runs"]
    assert run["epoch"] == [1, 2]
    for key in ("test_acc", "val_loss", "lr", "train_loss"):
      assert len(run[key]) == 2 and all(np.isfinite(run[key])), (method, key)
    assert len(run["lr_trace"]) == 4
  staircase = results["methods"]["staircase"]["runs"][0]["lr_trace"]
  np.testing.assert_allclose(staircase, [0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  marthe = results["methods"]["marthe"]["runs"][0]["lr_trace"]
  assert marthe[0] == pytest.approx(0.1) and marthe != [marthe[0]] * 4
  assert os.path.getsize(tmp_path / "cifar.png") > 10_000


def test_select_kappa_with_selection_module():
  cfg = cifar.preset(
    "smoke",
    kappa=None,
    selection_steps=6,
    selection_start=1e3,
    selection_num=2,
    selection_factor=1e8,
    selection_chunk=None,
  )
  prepared = cifar.Prepared(cfg, cifar.load_data(cfg))
  kappa, source, evidence = cifar.select_kappa(cfg, prepared)
  assert source == "selection"
  # 1e3 makes eta overflow at once; 1e-5 does not.
  assert evidence["candidates"] == pytest.approx([1e3, 1e-5])
  assert evidence["diverged"] == [True, False]
  assert kappa == pytest.approx(1e-5)
  cfg_flag = cifar.preset("smoke", kappa=3e-4)
  assert cifar.select_kappa(cfg_flag, prepared) == (3e-4, "flag", {})


def _without_times(results):
  results = json.loads(json.dumps(results))
  runs = {
    m: [{k: v for k, v in r.items() if k != "time_s"} for r in res["runs"]]
    for m, res in results["methods"].items()
  }
  return runs, results["kappa"], results["config"]


def test_smoke_preset_resumes_bit_for_bit(smoke_run, tmp_path, capsys):
  _, uninterrupted = smoke_run
  bench = _benchmark_module()
  args = [
    "--preset",
    "smoke",
    "--out",
    str(tmp_path),
    "--no-progress",
    "--methods",
    "marthe,staircase",
  ]
  # 1: one epoch of MARTHE, checkpointed, then stop.
  assert bench.main(args + ["--stop-after-epochs", "1"]) is None
  assert "stopped after 1 epochs" in capsys.readouterr().out
  assert not (tmp_path / "cifar.json").exists()
  ckpt = tmp_path / "checkpoints"
  assert (ckpt / "marthe-seed0" / "state").is_dir()
  # 2: MARTHE continues from its checkpoint and finishes; one staircase epoch.
  assert bench.main(args + ["--resume", "--stop-after-epochs", "2"]) is None
  assert (ckpt / "marthe-seed0" / "record.json").exists()
  assert not (ckpt / "marthe-seed0" / "state").exists()
  assert (ckpt / "staircase-seed0" / "state").is_dir()
  # 3: MARTHE's record is read back; the staircase run finishes.
  resumed = bench.main(args + ["--resume"])
  with open(tmp_path / "cifar.json") as f:
    assert json.load(f) == json.loads(json.dumps(resumed))
  runs, kappa, config = _without_times(resumed)
  runs_ref, kappa_ref, config_ref = _without_times(uninterrupted)
  assert kappa == kappa_ref
  assert {k: v for k, v in config.items() if k != "methods"} == {
    k: v for k, v in config_ref.items() if k != "methods"
  }
  # MARTHE's rate moved in the second epoch (after the checkpoint) and stayed
  # positive: the comparison covers the restored hypergradient state.
  lr_trace = runs["marthe"][0]["lr_trace"]
  assert lr_trace[1] == pytest.approx(0.1) and 0 < lr_trace[3] < lr_trace[2] < 0.1
  for method in ("marthe", "staircase"):
    # Exactly equal: every per-epoch metric and the per-step learning rates.
    assert runs[method] == runs_ref[method], method
  print("marthe lr_trace resumed:      ", runs["marthe"][0]["lr_trace"])
  print("marthe lr_trace uninterrupted:", runs_ref["marthe"][0]["lr_trace"])
  print(
    "marthe test_acc resumed/uninterrupted:",
    runs["marthe"][0]["test_acc"],
    runs_ref["marthe"][0]["test_acc"],
  )


def test_resume_with_other_options_is_refused(tmp_path):
  cfg = cifar.preset("smoke")
  cifar.Checkpoints(str(tmp_path), cfg)
  with pytest.raises(ValueError, match="another configuration.*epochs"):
    cifar.Checkpoints(str(tmp_path), cifar.preset("smoke", epochs=3), resume=True)
  # Without resume the old checkpoints are cleared.
  (tmp_path / "marthe-seed0").mkdir()
  cifar.Checkpoints(str(tmp_path), cifar.preset("smoke", epochs=3))
  assert not (tmp_path / "marthe-seed0").exists()
  with pytest.raises(ValueError, match="checkpoint_dir"):
    cifar.run(cfg, stop_after_epochs=1)
