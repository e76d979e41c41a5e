# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""MARTHE, HD and RTHO: online learning-rate schedules from hypergradients.

MARTHE (Moving Average Real-Time Hyperparameter Estimation) adapts the
learning rate ``eta`` of any inner Optax optimizer during a single training
run, by descending an online estimate of the hypergradient of an objective
``E`` (typically the validation loss) with respect to ``eta``. The estimate is
``Delta eta_t = <Z_t, grad E(w_t)>``, where the tangent ``Z`` of the full
optimizer state follows the discounted tangent system
``Z_{t+1} = mu_t A_t Z_t + B_t`` (eq. 9 of the paper). ``mu = 0`` gives HD
(Baydin et al., 2018), ``mu = 1`` gives RTHO (Franceschi et al., 2017), and
MARTHE adapts ``mu`` online (appendix A) together with the hyper-learning rate
``beta``. One implementation serves all three; they differ only in ``mu``.
Each is the case ``K = 1`` of :func:`marthe_optax.marthe_multi`, on the same
core (:mod:`marthe_optax._core`); ``docs/algorithm.md`` describes the step and
the state.

Extra cost over the inner optimizer:

* memory: two parameter-sized buffers (``Z_t.w`` and ``b_t``) and a tangent of
  the inner state (one more copy of, e.g., the momentum or the Adam moments);
  HD keeps ``b_t`` alone;
* time: a Hessian-vector product of the training loss per step (one
  forward-over-reverse ``jax.jvp`` of the gradient, about two gradients) and
  the gradient of ``E`` when it is not the training loss. HD (``mu = 0``)
  forms no Hessian-vector product at all: with ``E = L`` it costs about one
  inner step plus O(d).

References:
  Donini et al., `Scheduling the Learning Rate via Hypergradients: New
  Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  Baydin et al., `Online Learning Rate Adaptation with Hypergradient Descent
  <https://arxiv.org/abs/1703.04782>`_, 2018.
  Franceschi et al., `Forward and Reverse Gradient-Based Hyperparameter
  Optimization <https://arxiv.org/abs/1703.01785>`_, 2017.
"""

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import optax

from marthe_optax import _checks
from marthe_optax import _core
from marthe_optax import _state
from marthe_optax import _step

InnerFactory = Callable[[jax.Array], optax.GradientTransformation]
ScalarLike = Union[float, jax.Array]


def marthe(
  inner: InnerFactory,
  learning_rate: ScalarLike,
  *,
  hyper_lr_step: Optional[ScalarLike] = None,
  hyper_lr: ScalarLike = 0.0,
  mu: Optional[Union[ScalarLike, str]] = None,
  first_order: Optional[bool] = None,
  step_size: Optional[ScalarLike] = None,
  schedule: Optional[optax.Schedule] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MARTHE: the learning rate of ``inner`` scheduled online by hypergradients.

  At each step ``t``: the hypergradient ``h_t = <Z_t, grad E(w_t)>`` and the
  one-step hypergradient ``g1 = <b_{t-1}, grad E(w_t)>``; the discount
  ``mu_t``; a step of the learning rate along ``-h_t``; then the inner step
  at the new ``eta_t`` and the tangent ``Z_{t+1} = mu_t A_t Z_t + B_t`` from
  one linearisation of the inner update (``docs/algorithm.md``).

  Two rules move the learning rate:

  * **knob-free** (the default, ``hyper_lr_step=None``): normalised descent
    of ``log(eta)`` along ``d E / d log(eta) = eta_t h_t`` with Adam-style
    moments, ``step_size`` log-units per step at most. Multiplying ``E`` by
    any ``c > 0`` leaves the whole trajectory unchanged, so one default
    serves every task. By default the tangent is first order (the
    Hessian-vector product dropped, ``value_fn`` not needed) and the horizon
    is fixed at ``mu = 0.99`` (about 100 steps; no ``b_{t-1}`` kept). A safeguard
    watches the training loss passed as ``value=``: when its moving average
    exceeds twice its running minimum, or the hypergradient is not finite,
    the learning rate is halved and the moments and tangent reset, inside
    ``jit`` (``safeguard_count`` counts the events). See
    ``docs/knob_free.md`` for how the defaults were chosen.
  * **the paper's eq. 5** (``hyper_lr_step=kappa``): the hyper-learning rate
    ``beta_t = max(beta_{t-1} + kappa h_t h_{t-1}, 0)`` and
    ``eta_t = max(eta_{t-1} - beta_t h_t, 0)``, with appendix A's adaptive
    ``mu`` and the full tangent: an exact reproduction of the paper.

  The update takes these extra keyword arguments:

  * ``val_grads``: ``grad E(w_t)``, the gradient of the objective at the
    current params (e.g. on a validation minibatch). Without it ``E`` is the
    training loss and its gradient is the ``updates`` argument.
  * ``value``: the training loss ``L_t(w_t)`` of the minibatch (Optax's
    name for it, as from ``jax.value_and_grad``), read by the knob-free
    safeguard; ignored by the eq. 5 rule.
  * ``value_fn``: the training loss of the current minibatch as a function of
    the params, ``L_t(params) -> scalar``; its Hessian-vector product drives
    the full tangent. Not needed for HD (``mu == 0``) or ``first_order``.

  ``updates`` must be the training gradient ``grad L_t(w_t)`` (put gradient
  clipping, weight decay and the like inside ``inner`` so the tangent sees
  them). Other extra keyword arguments are forwarded to the inner update and
  otherwise ignored.

  Guards: ``eta >= 0`` and ``beta >= 0`` always; a non-finite hypergradient
  (or an update of ``beta`` or ``eta`` that overflows) leaves ``eta``,
  ``beta`` and ``mu`` unchanged, increments ``nonfinite_count`` and marks the
  tangent stale: the next step reads it as zero and restarts it. A tangent
  entry that is NaN at a finite primal (Adam's ``sqrt`` at a zero second
  moment, for a weight whose gradients have all been exactly 0) is set to 0,
  which is its limit, and ``repaired_count`` counts the steps where it
  happened: plain ``optax.adam`` works as it is.

  With ``optax.inject_hyperparams`` (``static_args=('inner',)``, since it
  treats every callable argument as a schedule, and ``'schedule'`` too when
  one is given) the injected values are honoured: the state remembers the
  ``learning_rate`` and ``hyper_lr`` it started from, and when ``update``
  sees the transformation rebuilt with another value (``state.hyperparams[
  'learning_rate'] = x``, or a schedule of its own), ``eta`` (or ``beta``)
  restarts from it at that step, inside ``jit``; the tangent and the moments
  carry on. While the value stays the same, MARTHE adapts ``eta`` as usual.
  ``hyper_lr_step``, ``step_size`` and a fixed ``mu`` are read at every
  update, so injected values take effect at once; ``mu = 0`` (HD, which
  keeps no tangent) must stay static (``static_args=('inner', 'mu')``).
  ``docs/algorithm.md`` (The state) lists the fields.

  Args:
    inner: a factory ``learning_rate -> optax.GradientTransformation``, such
      as ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``,
      ``optax.adam`` or ``lambda lr: optax.chain(..., optax.sgd(lr))``. It is
      called again inside ``update`` with the current (traced) learning rate,
      as ``optax.inject_hyperparams`` does, and differentiated there.
    learning_rate: the initial learning rate ``eta_0 >= 0`` (``> 0`` in the
      knob-free mode, which moves it multiplicatively); with ``schedule``,
      the initial scale of the schedule.
    hyper_lr_step: ``None`` (default) for the knob-free rule; else
      ``kappa >= 0``, eq. 5's step size of the hyper-learning rate (the
      paper's last ``beta``). It has units of 1 / hypergradient**2 and no
      task-independent good value: pick it with
      :func:`marthe_optax.select_hyper_lr_step`. ``0`` fixes ``beta`` at
      ``hyper_lr``.
    hyper_lr: ``beta_0 >= 0``, eq. 5's initial hyper-learning rate (the
      paper's default is 0: ``eta`` then stays ``eta_0`` until two
      consecutive hypergradients agree in sign).
    mu: the horizon. A number in [0, 1] fixes it (0 is HD, 1 is RTHO);
      ``'adaptive'`` is appendix A's heuristic
      ``mu_t = q~_t ** (1 / (c_{t-1} + 1))``; ``'smoothed'`` is the same
      with ``q~`` replaced by its moving average (decay 0.9), so one noisy
      minibatch does not reset the horizon. ``None``: ``'adaptive'`` for
      eq. 5, ``0.99`` for the knob-free rule.
    first_order: drop the Hessian-vector product from the tangent
      (``H_t = 0``; the inner-state tangent is still propagated), so that
      ``value_fn`` is not needed and a step costs about an HD step with a
      validation objective. ``None``: ``True`` for the knob-free rule,
      ``False`` for eq. 5.
    step_size: the knob-free step, in log-units of ``eta`` per step (None:
      0.03, chosen once on the benchmark tasks; the same for every task).
    schedule: an optional Optax schedule: step ``t`` uses the learning rate
      ``eta_t * schedule(t)``, and MARTHE adapts the scale ``eta_t`` (its
      hypergradient is taken with respect to the scale), so a warm-up or a
      decay keeps its shape.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`MartheState`.

  Raises:
    ValueError: on a non-callable ``inner`` (or a transformation), a
      schedule passed as ``learning_rate``, a negative or non-finite
      ``learning_rate``, ``hyper_lr``, ``hyper_lr_step`` or ``step_size``,
      ``mu`` outside [0, 1], ``step_size`` together with ``hyper_lr_step``;
      at update time, on missing ``params``, missing ``value_fn`` when the
      Hessian is needed, gradients whose tree does not match ``params``, or a
      state whose tangent does not match ``mu`` (HD's ``mu = 0`` at init,
      traced at update).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> loss = lambda w, x: jnp.mean((x @ w - 1.0) ** 2)
    >>> x_train, x_val = jnp.ones((8, 3)), jnp.full((4, 3), 0.5)
    >>> tx = mo.marthe(optax.sgd, learning_rate=0.01)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(20):
    ...   value, grads = jax.value_and_grad(loss)(params, x_train)
    ...   updates, state = tx.update(
    ...       grads, state, params, value=value,
    ...       val_grads=jax.grad(loss)(params, x_val))
    ...   params = optax.apply_updates(params, updates)
    >>> float(optax.tree.get(state, 'learning_rate')) > 0.01
    True

    The paper's rule, with its hyper-learning-rate step size:

    >>> tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(
    ...     jax.grad(loss)(params, x_train), state, params,
    ...     value_fn=lambda p: loss(p, x_train))

  References:
    Donini et al., `Scheduling the Learning Rate via Hypergradients: New
    Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  """
  _checks.check_factory(inner)
  _checks.check_learning_rate(learning_rate)
  _checks.check_knobs(hyper_lr, hyper_lr_step, mu)
  _checks.check_schedule(schedule)
  make_config = _step.make_config(hyper_lr_step, mu, first_order, step_size, 1)
  if hyper_lr_step is None:
    _checks.check_positive_start("learning_rate", learning_rate, 0.0)

  def inner_at(theta: jax.Array, count: jax.Array) -> optax.GradientTransformation:
    scale = theta[0]
    if schedule is None:
      return inner(scale)
    return inner(scale * jnp.asarray(schedule(count), scale.dtype))

  return _core.transformation(inner_at, [learning_rate], [hyper_lr], make_config, _state.SINGLE)


def hd(
  inner: InnerFactory,
  learning_rate: ScalarLike,
  *,
  hyper_lr: ScalarLike,
) -> optax.GradientTransformationExtraArgs:
  """HD: hypergradient descent on the learning rate (Baydin et al., 2018).

  MARTHE with ``mu = 0`` and a fixed hyper-learning rate: the hypergradient is
  the one-step ``<b_{t-1}, grad E(w_t)>``, no Hessian-vector product is
  formed and no loss closure is needed. Without ``val_grads`` (``E = L``) this
  is exactly SGD-HD / Adam-HD:
  ``eta_t = eta_{t-1} + beta <grad L_t(w_t), d_{t-1}>`` with ``d_{t-1}`` the
  inner direction of the previous step.

  Args:
    inner: the inner optimizer factory, as in :func:`marthe`.
    learning_rate: the initial learning rate ``eta_0 >= 0``.
    hyper_lr: ``beta >= 0``, the fixed hyper-learning rate.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`MartheState`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> tx = mo.hd(optax.adam, learning_rate=1e-3, hyper_lr=1e-7)
    >>> params = {'w': jnp.ones(3)}
    >>> state = tx.init(params)
    >>> grads = {'w': jnp.full(3, 0.5)}
    >>> updates, state = tx.update(grads, state, params)

  References:
    Baydin et al., `Online Learning Rate Adaptation with Hypergradient Descent
    <https://arxiv.org/abs/1703.04782>`_, 2018.
  """
  return marthe(inner, learning_rate, hyper_lr_step=0.0, hyper_lr=hyper_lr, mu=0.0)


def rtho(
  inner: InnerFactory,
  learning_rate: ScalarLike,
  *,
  hyper_lr: ScalarLike,
) -> optax.GradientTransformationExtraArgs:
  """RTHO: real-time hyperparameter optimization (Franceschi et al., 2017).

  MARTHE with ``mu = 1`` and a fixed hyper-learning rate: the hypergradient
  accumulates the whole past trajectory through the undiscounted tangent
  system ``Z_{t+1} = A_t Z_t + B_t`` (the learning rate is updated every step,
  ``K = 1``). Needs ``value_fn`` at update time.

  Args:
    inner: the inner optimizer factory, as in :func:`marthe`.
    learning_rate: the initial learning rate ``eta_0 >= 0``.
    hyper_lr: ``beta >= 0``, the fixed hyper-learning rate.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with a :class:`MartheState`.

  References:
    Franceschi et al., `Forward and Reverse Gradient-Based Hyperparameter
    Optimization <https://arxiv.org/abs/1703.01785>`_, 2017.
  """
  return marthe(inner, learning_rate, hyper_lr_step=0.0, hyper_lr=hyper_lr, mu=1.0)
