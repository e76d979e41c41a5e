# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Smoke test of an installed marthe-optax, run outside the source tree.

Usage (from a folder outside the checkout, in an environment where the wheel
is installed with the ``flax`` extra)::

  python /path/to/checkout/.ci/smoke.py /path/to/checkout/README.md

Checks that the package imports from the environment (not from the
checkout), ships its ``py.typed`` marker and its metadata, runs the README's
quick start as pasted, and takes one Flax NNX optimizer step.
"""

import importlib.metadata
import importlib.resources
import os
import re
import sys


def check_install(checkout: str) -> None:
  import marthe_optax as mo  # pylint: disable=g-import-not-at-top

  where = os.path.realpath(mo.__file__)
  if where.startswith(os.path.realpath(checkout) + os.sep):
    raise SystemExit(f"marthe_optax was imported from the checkout: {where}")
  if not importlib.resources.files("marthe_optax").joinpath("py.typed").is_file():
    raise SystemExit("the installed package has no py.typed marker")
  meta = importlib.metadata.metadata("marthe-optax")
  urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
  assert {"Homepage", "Documentation", "Source", "Changelog"} <= set(urls), urls
  assert "Typing :: Typed" in meta.get_all("Classifier")
  assert meta["Version"] == mo.__version__, (meta["Version"], mo.__version__)
  print(f"import: marthe_optax {mo.__version__} from {os.path.dirname(where)}")


def quick_start(readme: str) -> str:
  """The first Python block of the README marked runnable."""
  with open(readme, encoding="utf-8") as f:
    text = f.read()
  match = re.search(
    r"^<!-- runnable -->[ \t]*\n```python[ \t]*\n(.*?)^```",
    text,
    re.MULTILINE | re.DOTALL,
  )
  if match is None:
    raise SystemExit(f"{readme} has no block marked runnable")
  return match.group(1)


def nnx_step() -> None:
  """``nnx.Optimizer`` steps with MARTHE; the params and the rate move.

  Four steps: the first hypergradient is zero (no history yet), so the rate
  moves from the second step on.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import marthe_optax as mo  # pylint: disable=g-import-not-at-top
  import marthe_optax.flax as mof  # pylint: disable=g-import-not-at-top

  model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model,
    mo.marthe(optax.sgd, learning_rate=0.1),
    wrt=nnx.Param,
  )
  x = jax.random.normal(jax.random.key(1), (8, 4))
  y = jnp.arange(8) % 2

  def loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

  @nnx.jit
  def step(model, optimizer, x, y):
    return mof.nnx_train_step(
      optimizer, model, loss, (x, y), objective_fn=loss, objective_args=(x, y)
    ).loss

  before = np.asarray(model.kernel[...])
  values = [float(step(model, optimizer, x, y)) for _ in range(4)]
  after = np.asarray(model.kernel[...])
  lr = float(optax.tree.get(nnx.as_pure(optimizer.opt_state), "learning_rate"))
  assert np.all(np.isfinite(after)) and not np.array_equal(before, after)
  assert int(optimizer.step[...]) == 4 and np.isfinite(lr) and lr != 0.1, lr
  print(f"nnx: 4 steps, loss {values[0]:.4f} -> {values[-1]:.4f}, learning rate {lr:.6f}")


def main(argv) -> None:
  if len(argv) != 2:
    raise SystemExit(__doc__)
  readme = os.path.abspath(argv[1])
  check_install(os.path.dirname(readme))
  print("quick start:")
  exec(compile(quick_start(readme), "README.md (quick start)", "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
  nnx_step()
  print("smoke: ok")


if __name__ == "__main__":
  main(sys.argv)
