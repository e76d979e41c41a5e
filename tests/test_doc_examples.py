# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Runs the Python blocks of README.md and docs/*.md that are marked runnable.

A block is runnable when the line before its opening fence is
``<!-- runnable -->``. Each runs as pasted, in a fresh interpreter whose
working directory is a temporary folder, so that it can rely on nothing but
the installed package and its own text.
"""

import glob
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(
    r"^" + re.escape(MARKER) + r"[ \t]*\n```python[ \t]*\n(.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def runnable_blocks(path: str) -> list[str]:
  """The code of the blocks marked runnable in the Markdown file ``path``."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  blocks = _BLOCK.findall(text)
  # A marker that is not followed by a python fence is a mistake, not a skip.
  assert len(blocks) == text.count(MARKER), f"{path}: a {MARKER} line without a python block"
  return blocks


def _documents():
  return [os.path.join(ROOT, "README.md")] + sorted(
      glob.glob(os.path.join(ROOT, "docs", "*.md"))
  )


def _cases():
  return [
      pytest.param(path, i, code, id=f"{os.path.relpath(path, ROOT)}:{i}")
      for path in _documents()
      for i, code in enumerate(runnable_blocks(path))
  ]


def run_block(code: str, cwd) -> str:
  """Runs ``code`` in a new interpreter in ``cwd``; returns its stdout."""
  env = dict(os.environ, MPLBACKEND="Agg")
  # The package must come from the environment, as for a user (the editable
  # install in CI), never from the checkout through the working directory.
  proc = subprocess.run(
      [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
      text=True, timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout


def test_readme_opens_with_the_quick_start():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  first_fence = text.index("```")
  assert text.index("## Quick start") < first_fence
  assert text[:first_fence].rstrip().endswith(MARKER)
  quick_start = runnable_blocks(os.path.join(ROOT, "README.md"))[0]
  # Knob-free: no step size, no loss closure; the objective and the loss value.
  assert "mo.marthe(optax.sgd, learning_rate=" in quick_start
  assert "val_grads=" in quick_start and "value=" in quick_start


def test_quick_start_output(tmp_path):
  code = runnable_blocks(os.path.join(ROOT, "README.md"))[0]
  out = run_block(code, tmp_path)
  rows = re.findall(r"step +(\d+) +train loss ([\d.]+) +learning rate ([\d.]+)", out)
  assert [int(r[0]) for r in rows] == list(range(0, 201, 40)), out
  lrs = [float(r[2]) for r in rows]
  assert lrs[0] == pytest.approx(0.01, abs=1e-4)
  # The learning rate moved away from its start, and training made progress.
  assert max(abs(lr - 0.01) for lr in lrs[1:]) > 1e-3, out
  assert float(rows[-1][1]) < float(rows[0][1]), out
  # The output printed in the README is what the block prints (to rounding:
  # another CPU may sum in another order).
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  shown = re.search(r"```python\n.*?```\n.*?```text\n(.*?)```", readme, re.DOTALL)
  documented = re.findall(
      r"step +(\d+) +train loss ([\d.]+) +learning rate ([\d.]+)", shown.group(1)
  )
  assert [r[0] for r in documented] == [r[0] for r in rows]
  np.testing.assert_allclose(
      np.array(rows, float), np.array(documented, float), rtol=0.02, atol=2e-3,
      err_msg=out,
  )


@pytest.mark.parametrize("path,index,code", _cases())
def test_runnable_block(path, index, code, tmp_path):
  if path.endswith("README.md") and index == 0:
    pytest.skip("the quick start: test_quick_start_output")
  run_block(code, tmp_path)


def test_api_reference_rewrites_rest_markup():
  pytest.importorskip("griffe")
  spec = importlib.util.spec_from_file_location(
      "griffe_rst_roles", os.path.join(ROOT, "docs", "griffe_rst_roles.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  text = (
      "See :func:`marthe`, :class:`~marthe_optax.MartheState` and ``x``; "
      "Donini et al., `Scheduling the Learning Rate\n  via Hypergradients "
      "<https://arxiv.org/abs/1910.08525>`_, 2019."
  )
  assert module.markdown(text) == (
      "See `marthe`, `marthe_optax.MartheState` and ``x``; Donini et al., "
      "[Scheduling the Learning Rate\n  via Hypergradients]"
      "(https://arxiv.org/abs/1910.08525), 2019."
  )
