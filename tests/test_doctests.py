# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Runs the docstring examples of every module of ``marthe_optax``.

One case per module, found by walking the package, so that a new module is
covered without editing this file. Each example runs with the standard
library's ``doctest`` (``ELLIPSIS | NORMALIZE_WHITESPACE``) in empty globals:
it must import what it uses, as a reader pasting it would. A module must
carry examples unless it is listed in ``WITHOUT_EXAMPLES`` with the reason;
a module listed there still has any examples it gains run.
"""

import doctest
import importlib
import pkgutil

import pytest

import marthe_optax

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# The modules allowed to have no example, and why.
WITHOUT_EXAMPLES = {
  "marthe_optax": "re-exports only: each name's examples run with the module that defines it",
  "marthe_optax._rules": "internal step rules, reached through mo.marthe and mo.marthe_multi",
  "marthe_optax._tangent": "internal tangent system, reached through mo.marthe and mo.marthe_multi",
}

# The modules that need an optional dependency, and that dependency.
OPTIONAL = {"marthe_optax.flax": "flax"}


def _module_names() -> list[str]:
  names = [marthe_optax.__name__]
  for info in pkgutil.walk_packages(marthe_optax.__path__, marthe_optax.__name__ + "."):
    names.append(info.name)
  return sorted(names)


def _examples(module) -> list[doctest.DocTest]:
  """The module's docstring examples that have at least one ``>>>`` line."""
  finder = doctest.DocTestFinder(exclude_empty=True)
  tests = finder.find(module, module.__name__, globs={})
  return sorted((t for t in tests if t.examples), key=lambda t: t.name)


def test_the_walk_finds_the_modules():
  names = _module_names()
  for expected in (
    "marthe_optax",
    "marthe_optax.exact",
    "marthe_optax.selection",
    "marthe_optax.sharding",
    "marthe_optax.flax",
    "marthe_optax._marthe",
    "marthe_optax._multi",
  ):
    assert expected in names
  # Every exemption names a module that exists, so a stale one is noticed.
  assert set(WITHOUT_EXAMPLES) <= set(names)


def test_a_failing_example_fails():
  """The runner reports a wrong output and an exception as failures."""
  parser = doctest.DocTestParser()
  test = parser.get_doctest(">>> 1 + 1\n3\n>>> 1 / 0\n", {}, "wrong", "wrong.py", 0)
  runner = doctest.DocTestRunner(optionflags=FLAGS)
  runner.run(test, out=lambda _: None)
  assert runner.summarize(verbose=False) == doctest.TestResults(failed=2, attempted=2)


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples(name):
  if name in OPTIONAL:
    pytest.importorskip(OPTIONAL[name])
  module = importlib.import_module(name)
  tests = _examples(module)
  if name not in WITHOUT_EXAMPLES:
    assert tests, f"{name} has no docstring example (or list it in WITHOUT_EXAMPLES)"
  report = []
  runner = doctest.DocTestRunner(optionflags=FLAGS)
  for test in tests:
    runner.run(test, out=report.append)
  failed, attempted = runner.summarize(verbose=False)
  assert failed == 0, f"{failed} of {attempted} examples failed:\n" + "".join(report)
