# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The whole section-5 experiment: every dataset, the tables, the JSON and the
figures written to a directory.
"""

import os
import time
from typing import Callable, Optional, Sequence

import jax

from marthe_lab import data as data_lib
from marthe_lab import report
from marthe_lab.schedules.grid import run_dataset, total_tasks
from marthe_lab.schedules.plot import plot_dataset
from marthe_lab.schedules.results import Progress
from marthe_lab.schedules.tables import lrs_opt_lines, tables, to_json, tracking_table
from marthe_lab.schedules.presets import Preset


def run(
  preset: Preset,
  out_dir: str,
  datasets: Optional[Sequence[data_lib.Dataset]] = None,
  progress: bool = True,
  log: Callable[[str], None] = print,
) -> dict:
  """Runs the comparison on every dataset and writes the outputs to ``out_dir``.

  Writes ``results.json`` (every number), ``table.md`` (the summary and full
  tables) and ``figure2_<dataset>.png``.

  Args:
    preset: the sizes.
    out_dir: the output directory (created).
    datasets: the datasets (default: ``preset.datasets`` loaded offline).
    progress: show a tqdm progress bar.
    log: where to print the tables.

  Returns:
    ``{'results': [DatasetResult], 'summary': str, 'full': str, 'seconds':
    float, 'files': [paths]}``.
  """
  t0 = time.perf_counter()
  if datasets is None:
    datasets = [data_lib.load(name) for name in preset.datasets]
  os.makedirs(out_dir, exist_ok=True)
  bar = Progress(
    total_tasks(preset) * len(datasets),
    enabled=progress,
    desc=f"schedules ({preset.name}; runs + LRS-OPT steps)",
    unit="task",
  )
  results = []
  try:
    for d in datasets:
      results.append(run_dataset(d, preset, bar))
  finally:
    bar.close()
  seconds = time.perf_counter() - t0
  summary, full = tables(results)
  track = tracking_table(results)
  lrs_lines = lrs_opt_lines(results)
  files = []
  for r in results:
    path = os.path.join(out_dir, f"figure2_{r.dataset}.png")
    plot_dataset(r, path)
    files.append(path)
  header = (
    f"preset {preset.name}: {preset.note}\n"
    f"protocol: SGD, batch {preset.config.batch_size}, T={preset.config.steps}, "
    f"eta_0={preset.config.learning_rate}, MLP {preset.config.hidden}; "
    f"E = validation cross-entropy (online: minibatch of "
    f"{preset.config.val_batch_size} per step; LRS-OPT: whole set at w_T); "
    f"{preset.seeds} seeds (LRS-OPT {preset.lrs_opt_seeds}); "
    f"accuracy in % (mean ± std over seeds); "
    f"total {seconds:.0f} s on {jax.device_count()} {jax.default_backend()} "
    "device(s)\n" + "\n".join(r.description for r in results)
  )
  text = (
    f"{header}\n\nEach method at its best grid value (mean validation "
    f"accuracy):\n\n{summary}\n\n{lrs_lines}\n\nHow closely each "
    f"method's schedule (best grid value) tracks LRS-OPT's, mean ± std over "
    f"the LRS-OPT seeds:\n\n{track}\n\nEvery grid value:\n\n{full}\n"
  )
  path = os.path.join(out_dir, "table.md")
  with open(path, "w") as f:
    f.write(text)
  files.append(path)
  path = os.path.join(out_dir, "results.json")
  report.write_json(
    path,
    to_json(
      results,
      preset,
      {
        "seconds": seconds,
        "backend": jax.default_backend(),
        "tables": {"summary": summary, "full": full, "tracking": track, "lrs_opt": lrs_lines},
      },
    ),
  )
  files.append(path)
  log(f"{header}\n\n{summary}\n\n{lrs_lines}\n\n{track}\n\n(full table in {out_dir}/table.md)")
  return {
    "results": results,
    "summary": summary,
    "full": full,
    "tracking": track,
    "lrs_opt": lrs_lines,
    "seconds": seconds,
    "files": files,
  }
