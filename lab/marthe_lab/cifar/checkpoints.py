# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Checkpoints of long CIFAR runs (Orbax), resumption and the epoch budget."""

import dataclasses
import json
import os
import shutil
from typing import Any, Optional

import jax

from marthe_lab.cifar.config import Config


class Stopped(Exception):
  """Raised by :func:`run` after ``stop_after_epochs`` epochs, once saved."""


class Checkpoints:
  """Periodic checkpoints of the runs of one configuration, and resumption.

  Layout under ``directory``: ``config.json`` (the :class:`Config` they
  belong to), ``kappa.json`` (MARTHE's selected ``kappa``), and per method and
  seed a folder ``<method>-seed<seed>/`` with ``state/`` (an Orbax
  ``CheckpointManager``: the leaves of the run's state, params, BatchNorm
  statistics, optimizer state and step count, in ``jax.tree.leaves`` order,
  and as JSON the epochs done, the records so far and the state of the NumPy
  generator that draws the minibatches) and, once the run is over,
  ``record.json``.

  Args:
    directory: where the checkpoints live.
    cfg: the configuration of the runs.
    every: save every ``every`` epochs (and after the last one).
    resume: continue from what ``directory`` holds (it must belong to
      ``cfg``); otherwise it is cleared first.
  """

  def __init__(self, directory: str, cfg: Config, every: int = 1, resume: bool = False):
    if every < 1:
      raise ValueError(f"checkpoint every must be >= 1 epoch, got {every}.")
    self.directory = os.path.abspath(directory)
    self.every = every
    config = json.loads(json.dumps(dataclasses.asdict(cfg)))
    path = os.path.join(self.directory, "config.json")
    if resume and os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved != config:
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ValueError(
          f"The checkpoints in {self.directory} belong to another configuration "
          f"(differences: {changed}); resume with the same options, or start over "
          "without --resume."
        )
    elif os.path.exists(self.directory):
      shutil.rmtree(self.directory)
    os.makedirs(self.directory, exist_ok=True)
    _write_json(path, config)

  def _run_dir(self, method: str, seed: int) -> str:
    return os.path.join(self.directory, f"{method}-seed{seed}")

  def kappa(self) -> Optional[tuple]:
    """The saved ``(kappa, source, evidence)``, or ``None``."""
    path = os.path.join(self.directory, "kappa.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      saved = json.load(f)
    return saved["kappa"], saved["source"], saved["evidence"]

  def save_kappa(self, kappa: float, source: str, evidence: dict) -> None:
    _write_json(
      os.path.join(self.directory, "kappa.json"),
      dict(kappa=kappa, source=source, evidence=evidence),
    )

  def finished(self, method: str, seed: int) -> Optional[dict]:
    """The record of a finished run, or ``None``."""
    path = os.path.join(self._run_dir(method, seed), "record.json")
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def finish(self, method: str, seed: int, record: dict) -> None:
    """Saves the record of a finished run and drops its state checkpoints."""
    _write_json(os.path.join(self._run_dir(method, seed), "record.json"), record)
    shutil.rmtree(os.path.join(self._run_dir(method, seed), "state"), ignore_errors=True)

  def _manager(self, method: str, seed: int):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    return ocp, ocp.CheckpointManager(
      os.path.join(self._run_dir(method, seed), "state"),
      options=ocp.CheckpointManagerOptions(max_to_keep=1),
    )

  def restore(self, method: str, seed: int, target: Any) -> Optional[tuple[Any, dict]]:
    """``(state, meta)`` of the last checkpoint of a run, or ``None``.

    ``target`` is a state of the same structure (the freshly built one): the
    saved leaves are put back into its tree.
    """
    ocp, manager = self._manager(method, seed)
    with manager:
      step = manager.latest_step()
      if step is None:
        return None
      leaves, treedef = jax.tree.flatten(target)
      abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in leaves]
      restored = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          meta=ocp.args.JsonRestore(),
        ),
      )
    return jax.tree.unflatten(treedef, restored["state"]), restored["meta"]

  def save(self, method: str, seed: int, epoch: int, state: Any, meta: dict) -> None:
    """Saves the state after ``epoch`` epochs (blocking until written)."""
    ocp, manager = self._manager(method, seed)
    with manager:
      manager.save(
        epoch,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(jax.tree.leaves(state)),
          meta=ocp.args.JsonSave(meta),
        ),
      )
      manager.wait_until_finished()


def _write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically (a crash leaves the old file or none)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f)
  os.replace(tmp, path)


class Budget:
  """Counts the epochs trained in this invocation against ``stop_after``."""

  def __init__(self, stop_after: Optional[int]):
    self.stop_after = stop_after
    self.epochs = 0

  def spend(self) -> None:
    self.epochs += 1

  def used_up(self) -> bool:
    return self.stop_after is not None and self.epochs >= self.stop_after

  def stop(self, where: str) -> Stopped:
    return Stopped(
      f"stopped after {self.epochs} epochs in this run ({where}); continue with --resume"
    )
