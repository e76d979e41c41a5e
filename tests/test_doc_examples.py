# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Runs the Python blocks of README.md and docs/*.md, all of them.

A block is runnable when the line before its opening fence is
``<!-- runnable -->``, and every ``python`` block must be: one without the
marker fails ``test_every_python_block_is_runnable``. Each runs as pasted, in
a fresh interpreter whose working directory is a temporary folder, so that it
can rely on nothing but the installed package and its own text. The blocks of
``docs/multi_device.md`` run on 8 CPU devices.
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


# Extra environment for the blocks of a document, by file name.
ENV = {"multi_device.md": {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}}


def unmarked_blocks(path: str) -> list[int]:
  """The line numbers of the python fences in ``path`` without the marker."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  return [
    i + 1
    for i, line in enumerate(lines)
    if re.fullmatch(r"```python[ \t]*", line) and (i == 0 or lines[i - 1].strip() != MARKER)
  ]


def runnable_blocks(path: str) -> list[str]:
  """The code of the blocks marked runnable in the Markdown file ``path``."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  blocks = _BLOCK.findall(text)
  # A marker that is not followed by a python fence is a mistake, not a skip.
  assert len(blocks) == text.count(MARKER), f"{path}: a {MARKER} line without a python block"
  return blocks


def _documents():
  return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _cases():
  return [
    pytest.param(path, i, code, id=f"{os.path.relpath(path, ROOT)}:{i}")
    for path in _documents()
    for i, code in enumerate(runnable_blocks(path))
  ]


def run_block(code: str, cwd, env=None) -> str:
  """Runs ``code`` in a new interpreter in ``cwd``; returns its stdout."""
  env = dict(os.environ, MPLBACKEND="Agg", **(env or {}))
  # The package must come from the environment, as for a user (the editable
  # install in CI), never from the checkout through the working directory.
  proc = subprocess.run(
    [sys.executable, "-c", code],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
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
    np.array(rows, float),
    np.array(documented, float),
    rtol=0.02,
    atol=2e-3,
    err_msg=out,
  )


def test_every_python_block_is_runnable():
  unmarked = {
    os.path.relpath(path, ROOT): lines for path in _documents() if (lines := unmarked_blocks(path))
  }
  assert not unmarked, f"python blocks without {MARKER} (file: lines): {unmarked}"


def test_unmarked_blocks_are_found(tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text(
    f"```python\nfirst\n```\n\n{MARKER}\n```python\nsecond\n```\n"
    "text\n```python\nthird\n```\n```bash\nnot python\n```\n"
  )
  assert unmarked_blocks(str(doc)) == [1, 10]
  assert runnable_blocks(str(doc)) == ["second\n"]


@pytest.mark.parametrize("path,index,code", _cases())
def test_runnable_block(path, index, code, tmp_path):
  if path.endswith("README.md") and index == 0:
    pytest.skip("the quick start: test_quick_start_output")
  if path.endswith("multi_device.md") and index == 0:
    pytest.skip("test_multi_device_block_runs_on_8_devices")
  run_block(code, tmp_path, ENV.get(os.path.basename(path)))


def test_multi_device_block_runs_on_8_devices(tmp_path):
  code = runnable_blocks(os.path.join(ROOT, "docs", "multi_device.md"))[0]
  # The placement is real: 8 devices, and the params split over all of them.
  code += "\nassert len(jax.devices()) == 8 and len(params['w1'].sharding.device_set) == 8\n"
  run_block(code, tmp_path, ENV["multi_device.md"])


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
