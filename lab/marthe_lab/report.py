# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Small helpers shared by the experiments' outputs: JSON, tables, numbers."""

import json
import math
import os
import platform
from typing import Any, Sequence

import jax
import numpy as np


def to_jsonable(x: Any, digits: int = 6) -> Any:
  """NumPy / JAX values to JSON types; floats rounded to ``digits`` significant
  digits, non-finite floats to ``None`` (JSON has no NaN)."""
  if isinstance(x, dict):
    return {str(k): to_jsonable(v, digits) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v, digits) for v in x]
  if hasattr(x, "_asdict"):
    return to_jsonable(x._asdict(), digits)
  if isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "__array__"):
    a = np.asarray(x)
    if a.ndim:
      return [to_jsonable(v, digits) for v in a]
    x = a.item()
  if isinstance(x, float):
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None
  return x


def write_json(path: str, obj: Any, digits: int = 6) -> None:
  """Writes ``obj`` (see :func:`to_jsonable`) to ``path`` as compact JSON
  (no indentation: the files hold long per-step traces), creating folders."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(to_jsonable(obj, digits), f, separators=(",", ":"))


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text (and Markdown-compatible) table."""
  cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def mean_std(values: np.ndarray, scale: float = 100.0, digits: int = 1) -> str:
  """``'mean ± std'`` of ``values * scale`` (``'-'`` when empty)."""
  values = np.asarray(values, np.float64) * scale
  if values.size == 0:
    return "-"
  return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def format_value(x: float) -> str:
  """A grid value such as ``1e-05`` or ``3.2e-04`` (``'-'`` for None/NaN)."""
  if x is None or not math.isfinite(x):
    return "-"
  return f"{x:.0e}" if float(f"{x:.0e}") == x else f"{x:.1e}"


def machine() -> dict:
  """Where a benchmark ran: JAX's backend, the machine, its CPU count, JAX's version."""
  return dict(
    backend=jax.default_backend(),
    machine=platform.machine(),
    cpu_count=os.cpu_count(),
    jax_version=jax.__version__,
  )
