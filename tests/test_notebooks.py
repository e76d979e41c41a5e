# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Executes the notebooks with nbclient on their tiny preset.

The notebooks read ``MARTHE_NOTEBOOK_PRESET``; ``tiny`` runs each in seconds
(plus compilation). They run in a temporary directory, so their outputs do
not touch the checkout.
"""

import importlib.util
import os
import re
import shlex

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def _execute(name, tmp_path, monkeypatch):
  monkeypatch.setenv("MARTHE_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  client = nbclient.NotebookClient(
    nb,
    timeout=600,
    kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  )
  client.execute()
  text, images = [], 0
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      assert output.get("output_type") != "error", output
      text.append(output.get("text", ""))
      data = output.get("data", {})
      text.append(data.get("text/plain", ""))
      images += "image/png" in data
  return "".join(text), images


@pytest.mark.parametrize("name", ["figure1.ipynb", "figure2.ipynb", "lm.ipynb"])
def test_notebook_is_colab_ready(name):
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  install = nb.cells[1].source
  assert "%pip install" in install and "find_spec" in install
  # The experiments are not part of the library: they come from the lab/ folder.
  assert '"marthe_lab"' in install and "marthe-optax-lab" in install
  # Saved outputs: every code cell but the (skipped) install cell has run.
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code)
  assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)


def _install_cell_requirement(name, monkeypatch, found):
  """Runs a notebook's install cell with ``%pip`` recorded, not run.

  ``found`` is what ``importlib.util.find_spec`` reports for every module.
  Returns the requirements that ``%pip install`` received (a list), or
  ``None``.
  """
  transformer = pytest.importorskip("IPython.core.inputtransformer2")
  cell = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4).cells[1]
  code = transformer.TransformerManager().transform_cell(cell.source)
  namespace, calls = {}, []

  class Shell:  # the part of IPython's shell that the cell uses
    def run_line_magic(self, magic, line, _stack_depth=1):
      expanded = re.sub(r"\$(\w+)", lambda m: str(namespace[m.group(1)]), line)
      calls.append((magic, expanded))

  namespace["get_ipython"] = Shell
  with monkeypatch.context() as patch:
    patch.setattr(importlib.util, "find_spec", lambda module: found)
    exec(code, namespace)  # pylint: disable=exec-used
  if not calls:
    return None
  ((magic, line),) = calls
  assert magic == "pip" and line.startswith("install -q "), line
  return shlex.split(line[len("install -q ") :])


LAB = "git+https://github.com/marthe-optax/marthe-optax#subdirectory=lab"


@pytest.mark.parametrize(
  "name,others",
  [
    ("figure1.ipynb", ["marthe-optax-lab @ " + LAB]),
    ("figure2.ipynb", ["marthe-optax-lab @ " + LAB]),
    ("lm.ipynb", ["marthe-optax-lab @ " + LAB]),
    ("flax_nnx.ipynb", ["scikit-learn", "matplotlib"]),
  ],
)
def test_install_cell_sources(name, others, monkeypatch, tmp_path):
  # Everything importable (a checkout): nothing is installed.
  assert _install_cell_requirement(name, monkeypatch, found=True) is None
  # Missing, no variable set: the library from the package index, the lab
  # from the repository.
  monkeypatch.delenv("MARTHE_OPTAX_SOURCE", raising=False)
  monkeypatch.delenv("MARTHE_LAB_SOURCE", raising=False)
  assert _install_cell_requirement(name, monkeypatch, None) == ["marthe-optax[flax]"] + others
  # A local wheel or checkout: a file URL to its absolute path.
  wheel = tmp_path / "marthe_optax-0.1.0-py3-none-any.whl"
  monkeypatch.setenv("MARTHE_OPTAX_SOURCE", str(wheel))
  assert (
    _install_cell_requirement(name, monkeypatch, None)
    == [f"marthe-optax[flax] @ {wheel.as_uri()}"] + others
  )
  # A URL, as is.
  url = "git+https://github.com/marthe-optax/marthe-optax"
  monkeypatch.setenv("MARTHE_OPTAX_SOURCE", url)
  assert (
    _install_cell_requirement(name, monkeypatch, None) == [f"marthe-optax[flax] @ {url}"] + others
  )
  # The lab from a local folder (a clone's lab/).
  if name != "flax_nnx.ipynb":
    monkeypatch.setenv("MARTHE_LAB_SOURCE", str(tmp_path / "lab"))
    assert _install_cell_requirement(name, monkeypatch, None)[1] == (
      f"marthe-optax-lab @ {(tmp_path / 'lab').as_uri()}"
    )


def test_figure1_notebook_runs(tmp_path, monkeypatch):
  text, images = _execute("figure1.ipynb", tmp_path, monkeypatch)
  assert "RTHO" in text and "smallest diverging" in text
  assert images == 1
  assert (tmp_path / "results" / "notebook_figure1" / "figure1.json").exists()


def test_figure2_notebook_runs(tmp_path, monkeypatch):
  text, images = _execute("figure2.ipynb", tmp_path, monkeypatch)
  assert "LRS-OPT" in text and "MARTHE (selected kappa)" in text
  assert images == 1  # tiny preset: digits only
  out = tmp_path / "results" / "notebook_figure2"
  assert (out / "results.json").exists() and (out / "table.md").exists()


def test_lm_notebook_runs(tmp_path, monkeypatch):
  monkeypatch.delenv("MARTHE_OPTAX_SOURCE", raising=False)  # optional: no error when unset
  text, images = _execute("lm.ipynb", tmp_path, monkeypatch)
  assert "MARTHE knob-free (AdamW)" in text and "largest logit change at positions 0-8: 0.0" in text
  assert images == 2
  assert (tmp_path / "lm.png").exists() and (tmp_path / "lm_lr.png").exists()
