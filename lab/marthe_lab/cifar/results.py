# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The CIFAR figures and the JSON of the results (the caller picks the Matplotlib backend)."""

import json
import math
from typing import Optional

import numpy as np


COLORS = {
  "staircase": "tab:blue",
  "exponential": "tab:orange",
  "sgdr": "tab:green",
  "hd": "tab:purple",
  "rtho": "tab:brown",
  "marthe": "tab:red",
}


def plot(results: dict, path: str, title: Optional[str] = None) -> None:
  """The paper's figure 3/4 layout: accuracy, validation loss, schedules.

  Left: test accuracy (%) per epoch, mean and standard deviation over seeds;
  centre: the objective ``E`` (validation loss); right: the learning rate of
  the first seed of each method, per step (x axis in epochs).
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for method, res in results["methods"].items():
    runs = res["runs"]
    color = COLORS.get(method)
    n = min(len(r["epoch"]) for r in runs)
    epochs = np.arange(1, n + 1)
    for ax, key, scale in ((axes[0], "test_acc", 100.0), (axes[1], "val_loss", 1.0)):
      values = scale * np.array([r[key][:n] for r in runs])
      mean, std = values.mean(0), values.std(0)
      ax.plot(epochs, mean, label=method, color=color)
      ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
    first = runs[0]
    axes[2].plot(
      np.asarray(first["lr_trace_step"]) / first["steps_per_epoch"],
      first["lr_trace"],
      label=method,
      color=color,
    )
  axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title="Accuracy")
  axes[1].set(xlabel="epoch", ylabel="validation loss", title="Objective E")
  axes[1].set_yscale("log")
  axes[2].set(xlabel="epoch", ylabel="learning rate", title="Schedule (seed 0)")
  axes[2].set_yscale("log")
  axes[0].legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def save_json(results: dict, path: str) -> None:
  """Writes ``results`` (NaN and infinity as JSON null)."""

  def clean(x):
    if isinstance(x, float) and not math.isfinite(x):
      return None
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
      return [clean(v) for v in x]
    return x

  with open(path, "w") as f:
    json.dump(clean(results), f, indent=1)
