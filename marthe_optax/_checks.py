# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Argument checks: each raises a ``ValueError`` that says what to pass instead.

Factory-time checks look at values known when the transformation is built;
a traced value (the factory rebuilt inside ``jit``, as
``optax.inject_hyperparams`` does) is not checked. Update-time checks look at
the arguments of ``update``.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


def concrete(x: Any) -> Optional[np.ndarray]:
  """``x`` as a NumPy array when known at trace time, else ``None``."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_scalar(name: str, value: Any, low: float, high: float, hint: str) -> None:
  """A finite scalar in ``[low, high]`` (not checked when traced).

  Examples:
    >>> from marthe_optax import _checks
    >>> _checks.check_scalar("mu", 0.5, 0.0, 1.0, "Pass mu in [0, 1].")
    >>> _checks.check_scalar("mu", 1.5, 0.0, 1.0, "Pass mu in [0, 1].")
    Traceback (most recent call last):
    ...
    ValueError: mu must be a finite scalar in [0.0, 1.0], got 1.5. Pass mu in [0, 1].
  """
  v = concrete(value)
  if v is None:
    return
  if v.ndim != 0 or not np.isfinite(v) or not low <= v <= high:
    raise ValueError(f"{name} must be a finite scalar in [{low}, {high}], got {value!r}. {hint}")


def check_positive_start(name: str, value: Any, low: float) -> None:
  """A knob-free hyperparameter starts strictly above its lower bound."""
  v = concrete(value)
  if v is not None and float(v) <= low:
    raise ValueError(
      f"{name} must start above {low} in the knob-free mode, which moves it "
      f"multiplicatively (in log-units); got {value!r}. Start it at a small "
      "positive value, or pass hyper_lr_step=... for the paper's additive "
      "eq. 5 rule."
    )


def check_factory(inner: Any) -> None:
  """``inner`` is a factory of transformations, not a transformation."""
  if not callable(inner) or isinstance(inner, optax.GradientTransformation):
    raise ValueError(
      "inner must be a factory learning_rate -> GradientTransformation, such "
      f"as optax.sgd or functools.partial(optax.sgd, momentum=0.9); got "
      f"{inner!r}. Pass optax.sgd, not optax.sgd(0.1). Under "
      "optax.inject_hyperparams, which treats every callable argument as a "
      "schedule, pass static_args=('inner',)."
    )


def check_learning_rate(learning_rate: Any) -> None:
  """A number (the initial learning rate), not a schedule."""
  if callable(learning_rate):
    raise ValueError(
      "learning_rate must be a number (the initial learning rate, or the "
      "scale of a schedule), not a schedule: MARTHE adapts it. To keep a "
      "schedule's shape, pass it as schedule=..., e.g. marthe(optax.sgd, "
      "learning_rate=0.1, schedule=optax.warmup_cosine_decay_schedule(0.0, "
      "1.0, 100, 1000))."
    )
  check_scalar(
    "learning_rate",
    learning_rate,
    0.0,
    np.inf,
    "Pass the initial learning rate eta_0 >= 0.",
  )


def check_schedule(schedule: Any) -> None:
  """``None`` or an Optax schedule."""
  if schedule is not None and not callable(schedule):
    raise ValueError(
      "schedule must be an Optax schedule (a function of the step count), "
      f"e.g. optax.cosine_decay_schedule(1.0, 1000); got {schedule!r}. Under "
      "optax.inject_hyperparams, which evaluates every callable argument as "
      "a schedule of its own, pass static_args=('inner', 'schedule')."
    )


def check_knobs(hyper_lr: Any, hyper_lr_step: Any, mu: Any, where: str = "") -> None:
  """``beta_0 >= 0``, ``kappa >= 0`` and a fixed ``mu`` in ``[0, 1]``."""
  check_scalar(
    f"hyper_lr{where}",
    hyper_lr,
    0.0,
    np.inf,
    "Pass the initial hyper-learning rate beta_0 >= 0 (the paper uses 0).",
  )
  if hyper_lr_step is None:
    return
  check_scalar(
    f"hyper_lr_step{where}",
    hyper_lr_step,
    0.0,
    np.inf,
    "Pass kappa >= 0; choose it with marthe_optax.select_hyper_lr_step, or "
    "pass 0 for a fixed hyper-learning rate.",
  )
  if mu is not None and not isinstance(mu, str):
    check_scalar(
      "mu",
      mu,
      0.0,
      1.0,
      "Pass mu in [0, 1] (0 is HD, 1 is RTHO), or mu=None to adapt it.",
    )


def check_step_size(name: str, step_size: Any) -> None:
  """The knob-free step, in log-units per step, ``>= 0``."""
  check_scalar(
    name,
    step_size,
    0.0,
    np.inf,
    "Pass the knob-free step in log-units of the hyperparameter per step.",
  )


def _check_like(name: str, tree: Any, params: optax.Params) -> None:
  """Raises a ValueError unless ``tree`` has the structure and shapes of params."""
  if jax.tree.structure(tree) != jax.tree.structure(params):
    raise ValueError(
      f"{name} must be a tree with the structure of params. Got\n"
      f"  {name}: {jax.tree.structure(tree)}\n  params: "
      f"{jax.tree.structure(params)}\nPass the gradient with respect to the "
      "same params tree that you pass as `params`."
    )
  for path, (x, p) in zip(
    jax.tree_util.tree_leaves_with_path(params),
    zip(jax.tree.leaves(tree), jax.tree.leaves(params)),
  ):
    if jnp.shape(x) != jnp.shape(p):
      raise ValueError(
        f"{name}{jax.tree_util.keystr(path[0])} has shape {jnp.shape(x)} but "
        f"the params leaf has shape {jnp.shape(p)}."
      )


def objective_grads(
  updates: optax.Updates,
  params: Optional[optax.Params],
  value_fn: Any,
  val_grads: Optional[optax.Updates],
  needs_hessian: bool,
) -> optax.Updates:
  """Checks the update's arguments; returns ``grad E(w_t)``."""
  if params is None:
    raise ValueError(
      "marthe needs the current params: call "
      "tx.update(grads, state, params, value_fn=..., val_grads=...)."
    )
  if needs_hessian and value_fn is None:
    raise ValueError(
      "This transformation (mu != 0, full tangent) needs the training-loss "
      "closure for its Hessian-vector product: call tx.update(grads, state, "
      "params, value_fn=lambda p: loss(p, batch)). HD (mu = 0) and the "
      "first-order tangent (first_order=True) work without it."
    )
  _check_like("updates", updates, params)
  if val_grads is None:
    return updates
  _check_like("val_grads", val_grads, params)
  return val_grads
