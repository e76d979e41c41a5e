# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The character corpus, the NNX transformer and the language-model benchmark."""

import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
from flax import nnx  # pylint: disable=g-import-not-at-top

import marthe_optax as mo  # pylint: disable=g-import-not-at-top
from marthe_lab import lm  # pylint: disable=g-import-not-at-top


TEXT = "the cat sat on the mat; a dog ran after it!\n" * 3  # 132 characters

# ------------------------------------------------------------------ the corpus


def test_split_is_contiguous_disjoint_and_covers_the_text():
  c = lm.split_corpus(TEXT, (0.8, 0.1, 0.1))
  assert (len(c.train), len(c.val), len(c.test)) == (105, 13, 14)
  # The blocks, in order, are the text: contiguous, disjoint, nothing lost.
  assert c.decode(c.train) + c.decode(c.val) + c.decode(c.test) == TEXT
  assert c.decode(c.train) == TEXT[:105] and c.decode(c.val) == TEXT[105:118]
  for block in (c.train, c.val, c.test):
    assert block.dtype == np.int32


def test_vocabulary_is_the_sorted_distinct_characters():
  c = lm.split_corpus(TEXT)
  assert c.vocab == "\n !;acdefghimnorst"  # sorted by code point
  np.testing.assert_array_equal(c.encode(TEXT[:105]), c.train)
  assert c.encode("tac").tolist() == [c.vocab.index(ch) for ch in "tac"]


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2)])
def test_split_rejects_bad_fractions(fractions):
  with pytest.raises(ValueError, match="fractions"):
    lm.split_corpus(TEXT, fractions)


def test_windows_are_shifted_slices_of_the_block():
  c = lm.split_corpus(TEXT)
  block = jnp.asarray(c.train)
  starts = jnp.array([[0, 5], [100, 3]])
  x, y = lm.windows(block, starts, 7)
  assert x.shape == y.shape == (2, 2, 7)
  assert c.decode(x[0, 1]) == TEXT[5:12] and c.decode(y[0, 1]) == TEXT[6:13]
  # The last possible window ends on the block's last character.
  x, y = lm.windows(block, jnp.array([len(c.train) - 8]), 7)
  assert c.decode(y) == TEXT[98:105]


def test_random_starts_fit_and_cover_the_range():
  starts = lm.random_starts(jax.random.key(0), 20, 7, (4000,))
  assert starts.dtype == jnp.int32
  assert int(starts.min()) == 0 and int(starts.max()) == 20 - 7 - 1
  with pytest.raises(ValueError, match="no window"):
    lm.random_starts(jax.random.key(0), 7, 7, (1,))


def test_tiling_starts_do_not_overlap():
  assert lm.tiling_starts(33, 8).tolist() == [0, 8, 16, 24]  # 24 + 8 + 1 <= 33
  assert lm.tiling_starts(32, 8).tolist() == [0, 8, 16]
  assert lm.tiling_starts(1000, 8, max_windows=3).tolist() == [0, 488, 984]


def test_pydoc_corpus_ships_with_python():
  text = lm.pydoc_text()
  assert len(text) > 100_000
  c = lm.pydoc_corpus()
  assert c.vocab == "".join(sorted(set(text)))
  assert len(c.train) == int(0.8 * len(text)) and len(c.val) == int(0.1 * len(text))
  assert len(c.train) + len(c.val) + len(c.test) == len(text)
  assert c.decode(c.val[:50]) == text[len(c.train) : len(c.train) + 50]


# ------------------------------------------------------------------- the model

CONFIG = lm.PRESETS["tiny"]


@pytest.mark.parametrize("tie", [True, False])
def test_model_shapes_and_groups(tie):
  config = CONFIG._replace(tie=tie, layers=2)
  model = lm.Transformer(11, config, nnx.Rngs(0))
  assert model(jnp.zeros((3, config.context), jnp.int32)).shape == (3, config.context, 11)
  assert model(jnp.zeros((1, 5), jnp.int32)).shape == (1, 5, 11)  # a shorter window
  labels = lm.group_labels(nnx.as_pure(nnx.state(model, nnx.Param)))
  assert sorted(set(jax.tree.leaves(labels))) == ["block0", "block1", "embed", "head"]
  assert labels["tok"]["embedding"] == "embed" and labels["ln_f"]["scale"] == "head"
  assert labels["blocks"][1]["qkv"]["kernel"] == "block1"
  assert ("head" in labels) == (not tie)


def test_width_must_split_into_heads():
  with pytest.raises(ValueError, match="heads"):
    lm.Transformer(11, CONFIG._replace(width=30, heads=4), nnx.Rngs(0))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_model_is_causal(dropout):
  config = CONFIG._replace(layers=2, dropout=dropout)
  model = lm.Transformer(11, config, nnx.Rngs(params=0, dropout=1))
  x = jax.random.randint(jax.random.key(1), (2, config.context), 0, 11)
  k = 9
  x2 = x.at[:, k].set((x[:, k] + 1) % 11)
  before, after = model(x), model(x2)  # inference mode: no dropout
  np.testing.assert_array_equal(before[:, :k], after[:, :k])  # earlier positions unchanged
  assert np.abs(np.asarray(before[:, k:] - after[:, k:])).max(axis=-1).min() > 0
  if dropout:
    assert not np.allclose(model(x, train=True), before)


def test_loss_starts_near_uniform():
  model = lm.Transformer(50, CONFIG, nnx.Rngs(0))
  x = jax.random.randint(jax.random.key(2), (4, CONFIG.context), 0, 50)
  assert abs(float(lm.loss(model, x, x)) - np.log(50)) < 0.05


# ------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def prepared():
  return lm.prepare(CONFIG, lm.split_corpus(TEXT * 4))


def _run(prepared, tx, needs, **kw):
  p = prepared
  gdef = lm.graphdef(len(p.corpus.vocab), CONFIG)
  inputs = jax.tree.map(lambda a: a[0], p.inputs)
  return jax.jit(lambda i: lm.train(gdef, tx, p.data, CONFIG, i, needs=needs, **kw))(inputs)


def test_fed_hypergradient_step_with_zero_rates_is_adamw(prepared):
  """HD with beta = 0 fed the objective follows AdamW exactly (same windows)."""
  p_adam, _, t_adam = _run(prepared, optax.adamw(1e-3), ())
  read = lambda s, t: optax.tree.get(s, "learning_rate")
  p_hd, state, t_hd = _run(
    prepared,
    mo.hd(optax.adamw, learning_rate=1e-3, hyper_lr=0.0),
    ("value_fn", "val_grads"),
    read_lr=read,
  )
  chex.assert_trees_all_close(p_hd, p_adam, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(t_hd.train_loss, t_adam.train_loss, rtol=1e-5)
  np.testing.assert_allclose(t_hd.learning_rate, 1e-3)
  assert np.isnan(t_adam.objective).all() and np.isfinite(t_hd.objective).all()
  steps = CONFIG.steps
  assert t_adam.curve.shape == (steps // CONFIG.eval_every + 1,)
  assert float(t_adam.curve[-1]) < float(t_adam.curve[0])  # it learns
  assert float(state.hypergradient) != 0.0


def test_prefix_run_and_eval_params(prepared):
  sf = optax.contrib.schedule_free_adamw()
  params, state, trace = _run(
    prepared, sf, (), steps=5, eval_params=optax.contrib.schedule_free_eval_params
  )
  assert trace.train_loss.shape == (5,) and trace.curve.shape == (0,)
  raw = state.z  # the eval params are not the iterate itself
  assert not np.allclose(jax.tree.leaves(params)[0], jax.tree.leaves(raw)[0])


# ------------------------------------------------------ the benchmark (tiny)


def test_tiny_benchmark_end_to_end(tmp_path):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
  try:
    import lm as bench_lm  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  result = bench_lm.main(["--preset", "tiny", "--out", str(tmp_path), "--no-progress"])
  for name in ("lm.json", "lm.md", "lm.png", "lm_lr.png"):
    assert (tmp_path / name).stat().st_size > 0
  saved = json.loads((tmp_path / "lm.json").read_text())
  by_name = {s["method"]: s for s in saved["methods"]}
  assert list(by_name) == list(lm.METHODS)  # constant AdamW first
  assert by_name["adamw"]["time"]["run_ratio"] == 1.0
  assert by_name["cosine"]["settings"] == len(CONFIG.peaks)
  assert by_name["cosine"]["hyper"][0] in CONFIG.peaks
  for name in ("hd", "marthe"):
    assert by_name[name]["settings"] == 11  # 10 candidates, then the run
    assert len(by_name[name]["candidate_diverged"][0]) == 10
  for name in ("marthe_kf", "marthe_kf_cosine", "marthe_layers"):
    assert by_name[name]["settings"] == 1 and by_name[name]["tune"] is None
  groups = by_name["marthe_layers"]["learning_rate"]["groups"]
  assert np.asarray(groups).shape == (CONFIG.steps, CONFIG.layers + 2)
  # The knob-free rate moves; the schedule's shape starts at 0 (warm-up).
  kf = np.asarray(by_name["marthe_kf"]["learning_rate"]["mean"])
  assert kf[0] == pytest.approx(CONFIG.learning_rate) and kf[-1] != kf[0]
  assert by_name["marthe_kf_cosine"]["learning_rate"]["mean"][0] == 0.0
  for s in saved["methods"]:
    assert s["seeds"] == CONFIG.seeds and s["time"]["total_ratio"] > 0
    assert len(s["curve"]["val_bits_mean"]) == CONFIG.steps // CONFIG.eval_every + 1
  assert by_name["adamw"]["curve"]["val_bits_mean"][0] == pytest.approx(
    by_name["cosine"]["curve"]["val_bits_mean"][0]
  )  # the same w_0
  table = (tmp_path / "lm.md").read_text()
  assert all(s["label"] in table for s in saved["methods"])
  assert result["corpus"]["vocab"] == len(lm.pydoc_corpus().vocab)
