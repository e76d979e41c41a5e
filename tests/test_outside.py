# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The built distributions, used outside the checkout (slow: CI runs them).

* The sdist and the wheel carry the package, ``py.typed`` and the metadata.
* The wheel, installed into a fresh virtual environment in a temporary folder,
  imports from there, runs the README quick start and an NNX step
  (``.ci/smoke.py``).
* A notebook executed in a fresh environment where marthe-optax is missing
  installs it from its first cell (here the library from the wheel, through
  ``MARTHE_OPTAX_SOURCE``, and the experiments from the checkout's ``lab/``
  folder, through ``MARTHE_LAB_SOURCE``) and runs.

The distributions come from ``$MARTHE_OPTAX_DIST`` (a folder with one wheel
and one sdist, what ``python -m build --outdir`` writes; ``.ci/run`` sets it)
or are built here. Run with ``python -m pytest -m slow tests/test_outside.py``.
The fresh environments install their dependencies from the package index.
"""

import glob
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
  folder = os.environ.get("MARTHE_OPTAX_DIST")
  if not folder:
    folder = str(tmp_path_factory.mktemp("dist"))
    subprocess.run(
      [sys.executable, "-m", "build", "--outdir", folder, ROOT],
      check=True,
      capture_output=True,
    )
  (wheel,) = glob.glob(os.path.join(folder, "marthe_optax-*.whl"))
  (sdist,) = glob.glob(os.path.join(folder, "marthe_optax-*.tar.gz"))
  return wheel, sdist


def _clean_env(**extra) -> dict:
  """The environment without anything that points Python at the checkout."""
  env = {
    k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
  }
  env.update(MPLBACKEND="Agg", **extra)
  return env


def _venv(path) -> str:
  """A fresh virtual environment at ``path``; returns its interpreter."""
  subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
  python = os.path.join(str(path), "bin", "python")
  _run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
  return python


def _run(*args, cwd=None, env=None, timeout=1200) -> str:
  proc = subprocess.run(
    list(args),
    cwd=cwd,
    env=env or _clean_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def test_distributions_carry_package_marker_and_metadata(dist):
  wheel, sdist = dist
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = z.read(meta_name).decode()
  assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
  assert {"marthe_optax/__init__.py", "marthe_optax/py.typed", "marthe_optax/sharding.py"} <= names
  # The library only: no experiments, tests, benchmarks or notebooks.
  assert not any(
    n.startswith(
      ("tests/", "benchmarks/", "notebooks/", "lab/", "marthe_lab/", "marthe_optax/experiments")
    )
    for n in names
  ), sorted(names)
  for line in (
    "Project-URL: Homepage, https://github.com/marthe-optax/marthe-optax",
    "Project-URL: Source, https://github.com/marthe-optax/marthe-optax",
    "Classifier: Typing :: Typed",
    "License-Expression: Apache-2.0",
    "Requires-Python: >=3.10",
  ):
    assert line in meta.splitlines(), line
  assert "Provides-Extra: flax" in meta and "Provides-Extra: docs" in meta
  with tarfile.open(sdist) as t:
    members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
  assert {
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "marthe_optax/py.typed",
    "marthe_optax/_marthe.py",
  } <= members


def test_wheel_outside_checkout(dist, tmp_path):
  wheel, _ = dist
  python = _venv(tmp_path / "venv")
  _run(python, "-m", "pip", "install", "-q", f"{wheel}[flax]")
  work = tmp_path / "work"
  work.mkdir()
  out = _run(
    python,
    os.path.join(ROOT, ".ci", "smoke.py"),
    os.path.join(ROOT, "README.md"),
    cwd=work,
  )
  print(out)
  assert f"from {tmp_path / 'venv'}" in out
  assert "learning rate" in out and "nnx: 4 steps" in out and "smoke: ok" in out


def test_notebook_installs_the_missing_package(dist, tmp_path):
  wheel, _ = dist
  python = _venv(tmp_path / "venv")
  _run(python, "-m", "pip", "install", "-q", "nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6.0")
  missing = subprocess.run(
    [python, "-c", "import marthe_optax"],
    env=_clean_env(),
    cwd=tmp_path,
    capture_output=True,
  )
  assert missing.returncode != 0  # the notebook has to install it
  runner = (
    "import sys, nbformat, nbclient\n"
    "nb = nbformat.read(sys.argv[1], as_version=4)\n"
    "nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',\n"
    "    resources={'metadata': {'path': '.'}}).execute()\n"
    "for cell in nb.cells:\n"
    "  for output in cell.get('outputs', []):\n"
    "    assert output.get('output_type') != 'error', output\n"
    "    print(output.get('text', ''), end='')\n"
  )
  out = _run(
    python,
    "-c",
    runner,
    os.path.join(ROOT, "notebooks", "figure1.ipynb"),
    cwd=tmp_path,
    env=_clean_env(
      MARTHE_OPTAX_SOURCE=wheel,
      MARTHE_LAB_SOURCE=os.path.join(ROOT, "lab"),
      MARTHE_NOTEBOOK_PRESET="tiny",
    ),
  )
  assert "RTHO" in out and "smallest diverging" in out, out
  where = _run(python, "-c", "import marthe_optax; print(marthe_optax.__file__)", cwd=tmp_path)
  assert where.startswith(str(tmp_path / "venv")), where
  assert (tmp_path / "results" / "notebook_figure1" / "figure1.json").exists()
