# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Section 5 of the paper: optimized (LRS-OPT) against online schedules.

The protocol, the same for every method: an MLP trained by SGD on minibatches
of 100 for ``T`` steps from ``eta_0 = 0.01``; ``E`` is the validation
cross-entropy (``grad E`` on a fresh validation minibatch of 100 at each step
for the online methods; the whole validation set at ``w_T`` for LRS-OPT).
Seed ``s`` fixes ``w_0`` and the minibatch progression, identical for every
online method; LRS-OPT keeps ``w_0`` and draws fresh minibatches at every
outer step (footnote 7), and its final schedule is then evaluated on the
seed's progression, like the online methods.

Methods (:data:`METHODS`), each over a log grid:

* ``constant``: SGD at ``eta_0``;
* ``HD`` (``mu = 0``) and ``RTHO`` (``mu = 1``) over ``beta``;
* ``MARTHE mu=0.9`` and ``MARTHE mu=0.99``: fixed discount, over ``beta``;
* ``MARTHE h_mu``: adaptive ``mu`` (appendix A), fixed ``beta``;
* ``MARTHE``: adaptive ``mu`` and ``beta`` (``beta_0 = 0``) over the step
  size ``kappa``;
* ``MARTHE (selected kappa)``: ``kappa`` picked per seed by
  :func:`marthe_optax.selection.select_hyper_lr_step` (the largest of the
  decimated grid ``1, 0.1, ..., 1e-9`` whose training loss does not
  diverge), applied to the ``MARTHE`` grid's runs (:func:`select_kappa`);
* ``LRS-OPT``: :func:`marthe_optax.exact.lrs_opt`, projected descent on the
  whole schedule with exact reverse-mode hypergradients.

Every (method, grid value, seed) run is one row of a ``jax.vmap`` under one
``jax.jit`` (one compilation for the fixed-``mu`` methods, one for the
adaptive ones; the hyperparameters are traced).

The modules: :mod:`.presets` (the methods and the sizes), :mod:`.results`
(the result records), :mod:`.grid` (the online grids, the ``kappa``
selection, one dataset), :mod:`.lrs_opt` (LRS-OPT), :mod:`.estimate` (run-time
probes), :mod:`.tables` (tables, tracking, JSON), :mod:`.plot` (figure 2) and
:mod:`.experiment` (:func:`run`, everything written to a directory). Their
public names are importable from here.
"""

from marthe_lab.schedules.presets import (
  KNOB_FREE,
  LRS_OPT,
  METHODS,
  PRESETS,
  SELECTED,
  Preset,
  grid_of,
)
from marthe_lab.schedules.results import (
  DatasetResult,
  GridResult,
  LrsOptOutcome,
  Progress,
  best_online,
)
from marthe_lab.schedules.lrs_opt import LRS_OPT_FLOOR, best_constant, run_lrs_opt
from marthe_lab.schedules.grid import run_dataset, run_family, select_kappa, total_tasks
from marthe_lab.schedules.estimate import estimate
from marthe_lab.schedules.tables import (
  TABLE_HEADER,
  TRACKING_FLOOR,
  TRACKING_HEADER,
  full_rows,
  lrs_opt_label,
  lrs_opt_lines,
  lrs_opt_summary,
  summary_rows,
  tables,
  to_json,
  tracking,
  tracking_rows,
  tracking_table,
)
from marthe_lab.schedules.plot import plot_dataset
from marthe_lab.schedules.experiment import run
