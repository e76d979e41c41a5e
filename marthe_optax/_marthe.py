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

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marthe_optax import _rules
from marthe_optax import _tangent

InnerFactory = Callable[[jax.Array], optax.GradientTransformation]
ScalarLike = Union[float, jax.Array]


@jax.tree_util.register_pytree_node_class
class Sealed:
  """A pytree node that holds a pytree without exposing its key names.

  The inner optimizer's state (Adam's ``mu``, ``count``), and trees shaped like
  the params, may use the same names as MARTHE's own fields. Sealing them keeps
  ``optax.tree.get(state, 'mu')`` unambiguous. The leaves stay ordinary
  arrays (``jit``, ``vmap``, sharding and checkpointing see them as usual);
  :meth:`unseal` returns the original tree.
  """

  __slots__ = ("leaves", "treedef")

  def __init__(self, leaves, treedef):
    self.leaves = tuple(leaves)
    self.treedef = treedef

  @classmethod
  def seal(cls, tree: Any) -> "Sealed":
    leaves, treedef = jax.tree.flatten(tree)
    return cls(leaves, treedef)

  def unseal(self) -> Any:
    return jax.tree.unflatten(self.treedef, self.leaves)

  def tree_flatten(self):
    return self.leaves, self.treedef

  @classmethod
  def tree_unflatten(cls, treedef, leaves):
    return cls(leaves, treedef)

  def __repr__(self) -> str:
    return f"Sealed({self.unseal()!r})"


class MartheState(NamedTuple):
  """State of the transformations returned by :func:`marthe`, :func:`hd` and :func:`rtho`.

  After the update at step ``t`` (``count == t + 1``) the scalar fields hold
  the values used at step ``t``. Read them with ``optax.tree.get(state, name)``.

  Attributes:
    count: number of updates applied so far (int32).
    learning_rate: ``eta_t``, the learning rate of the last step.
    hyper_lr: ``beta_t``, the hyper-learning rate.
    mu: ``mu_t``, the discount of the tangent system, in [0, 1].
    c: ``c_t``, appendix A's multiplicative counter (effective horizon).
    hypergradient: ``Delta eta_t = <Z_t, grad E(w_t)>``.
    nonfinite_count: number of steps whose hypergradient, or whose update of
      ``beta`` or ``eta``, was not finite (the hyperparameters were then left
      unchanged and the tangent reset).
    tangent: ``Z_{t+1}``, a sealed :class:`Tangent` (params and inner-state
      parts). Empty for HD (``mu`` fixed at 0), where ``Z_{t+1}.w = b_t``.
    b: ``b_t = d w_{t+1} / d eta_t``, sealed, shaped like the params.
    inner_state: the inner optimizer's state, sealed.
  """

  count: jax.Array
  learning_rate: jax.Array
  hyper_lr: jax.Array
  mu: jax.Array
  c: jax.Array
  hypergradient: jax.Array
  nonfinite_count: jax.Array
  tangent: Sealed
  b: Sealed
  inner_state: Sealed


def _concrete(x: Any) -> Optional[np.ndarray]:
  """``x`` as a NumPy array when known at trace time, else ``None``."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_scalar(name: str, value: Any, low: float, high: float, hint: str) -> None:
  v = _concrete(value)
  if v is None:
    return
  if v.ndim != 0 or not np.isfinite(v) or not low <= v <= high:
    raise ValueError(
        f"{name} must be a finite scalar in [{low}, {high}], got {value!r}. {hint}"
    )


def _array_leaves(tree: Any) -> Any:
  """``tree`` with array-like pytree nodes replaced by their arrays.

  Some frameworks hand ``init`` boxed params (``flax.nnx.Param`` nodes, which
  define ``__jax_array__``) and ``update`` the plain arrays (``nnx.Optimizer``
  does). The state is built from the plain arrays, so that its trees, sealed
  with their structure, match the gradients at every update.
  """
  return jax.tree.map(
      jnp.asarray, tree,
      is_leaf=lambda x: hasattr(x, "__jax_array__") and not isinstance(x, jax.Array),
  )


def _hyper_dtype(params: optax.Params) -> jnp.dtype:
  """The params' float dtype promoted to at least float32."""
  return jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)


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


def _vdots(x: Any, y: Any, dtype: jnp.dtype) -> jax.Array:
  """``<x[k], y>`` for each ``k``, over two trees, accumulated in ``dtype``.

  ``x``'s leaves have a leading (hyperparameter) axis ``K``; the result is a
  vector ``[K]``. A sum of elementwise products rather than
  ``optax.tree.vdot`` (which, with some JAX versions, ravels each leaf through
  ``jnp.vdot``): no leaf is reshaped, so a leaf sharded along any axis reduces
  locally and XLA adds the partial sums with one all-reduce, and meshes with
  explicit sharding need no ``out_sharding``.
  """
  products = jax.tree.map(
      lambda a, b: jnp.sum(
          jnp.asarray(a, dtype) * jnp.asarray(b, dtype),
          axis=tuple(range(1, jnp.ndim(a))),
      ),
      x,
      y,
  )
  k = jax.tree.leaves(x)[0].shape[0]
  return sum(jax.tree.leaves(products), jnp.zeros([k], dtype))


def _check_factory(inner: Any) -> None:
  if not callable(inner) or isinstance(inner, optax.GradientTransformation):
    raise ValueError(
        "inner must be a factory learning_rate -> GradientTransformation, such "
        f"as optax.sgd or functools.partial(optax.sgd, momentum=0.9); got "
        f"{inner!r}. Pass optax.sgd, not optax.sgd(0.1)."
    )


def _check_knobs(hyper_lr: Any, hyper_lr_step: Any, mu: Any, where: str = "") -> None:
  _check_scalar(
      f"hyper_lr{where}", hyper_lr, 0.0, np.inf,
      "Pass the initial hyper-learning rate beta_0 >= 0 (the paper uses 0).",
  )
  _check_scalar(
      f"hyper_lr_step{where}", hyper_lr_step, 0.0, np.inf,
      "Pass kappa >= 0; choose it with marthe_optax.select_hyper_lr_step, or "
      "pass 0 for a fixed hyper-learning rate.",
  )
  if mu is not None:
    _check_scalar(
        "mu", mu, 0.0, 1.0,
        "Pass mu in [0, 1] (0 is HD, 1 is RTHO), or mu=None to adapt it.",
    )


def _is_hessian_free(mu: Any) -> bool:
  """Whether ``mu`` is identically 0 (HD): then no Hessian is ever needed."""
  value = None if mu is None else _concrete(mu)
  return value is not None and float(value) == 0.0


def _objective_grads(
    updates: optax.Updates,
    params: Optional[optax.Params],
    value_fn: Any,
    val_grads: Optional[optax.Updates],
    hessian_free: bool,
) -> optax.Updates:
  """Checks the update's arguments; returns ``grad E(w_t)``."""
  if params is None:
    raise ValueError(
        "marthe needs the current params: call "
        "tx.update(grads, state, params, value_fn=..., val_grads=...)."
    )
  if not hessian_free and value_fn is None:
    raise ValueError(
        "This transformation (mu != 0) needs the training-loss closure for "
        "its Hessian-vector product: call tx.update(grads, state, params, "
        "value_fn=lambda p: loss(p, batch)). Only HD (mu = 0, "
        "marthe_optax.hd) works without it."
    )
  _check_like("updates", updates, params)
  if val_grads is None:
    return updates
  _check_like("val_grads", val_grads, params)
  return val_grads


class _Hyper(NamedTuple):
  """The per-hyperparameter scalars of one step, each a vector ``[K]``."""

  value: jax.Array  # theta (the learning rate, ...)
  hyper_lr: jax.Array  # beta
  mu: jax.Array
  c: jax.Array
  hypergradient: jax.Array  # Delta theta


def _step(
    inner_update: Callable[..., Any],
    hyper: _Hyper,
    tangent: _tangent.Tangent,
    b: optax.Params,
    inner_state: optax.OptState,
    updates: optax.Updates,
    params: optax.Params,
    value_fn: Any,
    val_grads: optax.Updates,
    kappa: jax.Array,
    mu: Optional[Any],
    hessian_free: bool,
    low: jax.Array,
    high: jax.Array,
) -> tuple[_Hyper, jax.Array, _tangent.StepAndTangent]:
  """DESIGN.md section 2, steps 1-6, for ``K`` hyperparameters at once.

  Args:
    inner_update: ``(grads, inner_state, params, theta) -> (updates, state)``.
    hyper: the previous step's scalars (``theta_{t-1}``, ``beta_{t-1}``,
      ``mu_{t-1}``, ``c_{t-1}``, ``Delta theta_{t-1}``), vectors ``[K]``.
    tangent: ``Z_t``, leaves with a leading axis ``K`` (empty for HD).
    b: ``b_{t-1}``, leaves with a leading axis ``K``.
    inner_state: ``s_t``.
    updates: ``grad L_t(w_t)``.
    params: ``w_t``.
    value_fn: the training loss closure (unused for HD).
    val_grads: ``grad E(w_t)``.
    kappa: the hyper-learning rates' step sizes, ``[K]``.
    mu: ``None`` for appendix A's adaptive mu, else the fixed value.
    hessian_free: ``mu`` is identically 0.
    low: lower bounds of the hyperparameters, ``[K]``.
    high: upper bounds, ``[K]``.

  Returns:
    The new scalars, the per-hyperparameter finiteness mask ``[K]`` and the
    differentiated inner step.
  """
  dtype = hyper.value.dtype
  # Steps 1-2: hypergradient and one-step hypergradient.
  g1 = _vdots(b, val_grads, dtype)
  # With mu identically 0, Z_t.w = b_{t-1}: the hypergradient is g1.
  h = g1 if hessian_free else _vdots(tangent.params, val_grads, dtype)
  # Step 3: mu (appendix A) and the counter c.
  mu_t = (
      _rules.adaptive_mu(h, g1, hyper.c)
      if mu is None
      else jnp.broadcast_to(jnp.asarray(mu, dtype), h.shape)
  )
  c_t = _rules.next_counter(hyper.mu, hyper.c)
  # Step 4: hyper-learning rate.
  beta_t = _rules.next_hyper_lr(hyper.hyper_lr, kappa, h, hyper.hypergradient)
  # Step 5: the hyperparameter itself, projected on its interval.
  theta_t = _rules.next_hyperparam(hyper.value, beta_t, h, low, high)
  # Guard: a non-finite hypergradient, or an update of beta or theta that
  # overflows, changes no hyperparameter and resets its tangent.
  finite = (
      jnp.isfinite(h) & jnp.isfinite(g1)
      & jnp.isfinite(beta_t) & jnp.isfinite(theta_t)
  )
  new = jax.tree.map(
      lambda n, o: jnp.where(finite, n, o),
      _Hyper(theta_t, beta_t, mu_t, c_t, h),
      hyper._replace(hypergradient=jnp.zeros_like(h)),
  )
  if not hessian_free:
    tangent = jax.tree.map(
        lambda z: jnp.where(
            finite.reshape(finite.shape + (1,) * (z.ndim - 1)), z,
            jnp.zeros_like(z),
        ),
        tangent,
    )
  # Step 6: the inner step at theta_t and the tangent system.
  step = _tangent.step_and_tangent(
      inner_update,
      new.value,
      updates,
      inner_state,
      params,
      tangent,
      None if hessian_free else new.mu,
      value_fn,
  )
  return new, finite, step


def _inner_update(factory: Callable[[jax.Array], Any], extra_args: dict):
  """``(g, s, w, theta) -> factory(theta).update(g, s, w, **extra_args)``."""

  def inner_update(grads, inner_state, params, theta):
    tx = optax.with_extra_args_support(factory(theta))
    return tx.update(grads, inner_state, params, **extra_args)

  return inner_update


def _expand(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[None], tree)


def _squeeze(tree: Any) -> Any:
  return jax.tree.map(lambda x: x[0], tree)


def marthe(
    inner: InnerFactory,
    learning_rate: ScalarLike,
    hyper_lr_step: ScalarLike,
    *,
    hyper_lr: ScalarLike = 0.0,
    mu: Optional[ScalarLike] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MARTHE: the learning rate of ``inner`` scheduled online by hypergradients.

  At each step ``t`` (DESIGN.md section 2): the hypergradient
  ``h_t = <Z_t, grad E(w_t)>`` and the one-step hypergradient
  ``g1 = <b_{t-1}, grad E(w_t)>``; the discount ``mu_t`` (adaptive, appendix
  A, or fixed); the hyper-learning rate
  ``beta_t = max(beta_{t-1} + kappa h_t h_{t-1}, 0)``; the learning rate
  ``eta_t = max(eta_{t-1} - beta_t h_t, 0)``; then the inner step at
  ``eta_t`` and the tangent ``Z_{t+1} = mu_t A_t Z_t + B_t`` from one
  linearisation of the inner update and one Hessian-vector product.

  The update takes two extra keyword arguments:

  * ``value_fn``: the training loss of the current minibatch as a function of
    the params, ``L_t(params) -> scalar``; its Hessian-vector product drives
    the tangent. Not needed when ``mu == 0`` (HD).
  * ``val_grads``: ``grad E(w_t)``, the gradient of the objective at the
    current params (e.g. on a validation minibatch). Without it ``E`` is the
    training loss and its gradient is the ``updates`` argument.

  ``updates`` must be the training gradient ``grad L_t(w_t)`` (put gradient
  clipping, weight decay and the like inside ``inner`` so the tangent sees
  them). Other extra keyword arguments are forwarded to the inner update and
  otherwise ignored.

  Adam-family inners: pass ``eps_root > 0`` (e.g.
  ``functools.partial(optax.adam, eps_root=1e-8)``). With Optax's default
  ``eps_root = 0``, a weight whose gradients have all been exactly zero (a
  dead ReLU unit) has a zero second moment, where the derivative of ``sqrt``
  is ``0 * inf = NaN``: the guard below then resets the tangent at every step
  and the learning rate never moves (``nonfinite_count`` grows).

  Guards: ``eta >= 0`` and ``beta >= 0`` always; a non-finite hypergradient
  (or an update of ``beta`` or ``eta`` that overflows) leaves ``eta``,
  ``beta`` and ``mu`` unchanged, resets the tangent to zero and increments
  ``nonfinite_count``.

  Args:
    inner: a factory ``learning_rate -> optax.GradientTransformation``, such
      as ``optax.sgd``, ``functools.partial(optax.sgd, momentum=0.9)``,
      ``optax.adam`` or ``lambda lr: optax.chain(..., optax.sgd(lr))``. It is
      called again inside ``update`` with the current (traced) learning rate,
      as ``optax.inject_hyperparams`` does, and differentiated there.
    learning_rate: the initial learning rate ``eta_0 >= 0``.
    hyper_lr_step: ``kappa >= 0``, the step size of the hyper-learning rate
      (the paper's last ``beta``). It has units of 1 / hypergradient**2 and no
      task-independent good value: pick it with
      :func:`marthe_optax.select_hyper_lr_step` (start high, divide by 10 until
      training does not diverge). ``0`` fixes ``beta`` at ``hyper_lr``.
    hyper_lr: ``beta_0 >= 0``, the initial hyper-learning rate (the paper's
      default is 0: ``eta`` then stays ``eta_0`` until two consecutive
      hypergradients agree in sign).
    mu: ``None`` (default) adapts ``mu`` online by appendix A's heuristic; a
      number in [0, 1] fixes it (0 is HD, 1 is RTHO).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`MartheState`.

  Raises:
    ValueError: on a non-callable ``inner``, a negative or non-finite
      ``learning_rate``, ``hyper_lr`` or ``hyper_lr_step``, or ``mu`` outside
      [0, 1]; at update time, on missing ``params``, missing ``value_fn`` when
      the Hessian is needed, or gradients whose tree does not match ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> loss = lambda w, x: jnp.mean((x @ w - 1.0) ** 2)
    >>> x_train, x_val = jnp.ones((8, 3)), jnp.full((4, 3), 0.5)
    >>> tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...   grads = jax.grad(loss)(params, x_train)
    ...   updates, state = tx.update(
    ...       grads, state, params,
    ...       value_fn=lambda p: loss(p, x_train),
    ...       val_grads=jax.grad(loss)(params, x_val))
    ...   params = optax.apply_updates(params, updates)
    >>> float(optax.tree.get(state, 'learning_rate')) >= 0.0
    True

  References:
    Donini et al., `Scheduling the Learning Rate via Hypergradients: New
    Insights and a New Algorithm <https://arxiv.org/abs/1910.08525>`_, 2019.
  """
  _check_factory(inner)
  _check_scalar(
      "learning_rate", learning_rate, 0.0, np.inf,
      "Pass the initial learning rate eta_0 >= 0.",
  )
  _check_knobs(hyper_lr, hyper_lr_step, mu)
  # mu identically 0 (HD): Z_{t+1} = B_t, no Hessian-vector product at all.
  hessian_free = _is_hessian_free(mu)

  def init_fn(params: optax.Params) -> MartheState:
    params = _array_leaves(params)
    dtype = _hyper_dtype(params)
    eta0 = jnp.asarray(learning_rate, dtype)
    inner_state = inner(eta0).init(params)
    scalar = lambda v: jnp.asarray(v, dtype)
    return MartheState(
        count=jnp.zeros([], jnp.int32),
        learning_rate=eta0,
        hyper_lr=scalar(hyper_lr),
        mu=scalar(0.0 if mu is None else mu),
        c=scalar(0.0),
        hypergradient=scalar(0.0),
        nonfinite_count=jnp.zeros([], jnp.int32),
        tangent=Sealed.seal(
            _tangent.EMPTY_TANGENT
            if hessian_free
            else _tangent.zeros_tangent(params, inner_state)
        ),
        b=Sealed.seal(optax.tree.zeros_like(params)),
        inner_state=Sealed.seal(inner_state),
    )

  def update_fn(
      updates: optax.Updates,
      state: MartheState,
      params: Optional[optax.Params] = None,
      *,
      value_fn: Optional[Callable[[optax.Params], jax.Array]] = None,
      val_grads: Optional[optax.Updates] = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, MartheState]:
    val_grads = _objective_grads(updates, params, value_fn, val_grads, hessian_free)
    dtype = state.learning_rate.dtype
    # One hyperparameter: the shared K-hyperparameter step with K = 1.
    new, finite, step = _step(
        _inner_update(lambda theta: inner(theta[0]), extra_args),
        _expand(_Hyper(
            state.learning_rate, state.hyper_lr, state.mu, state.c,
            state.hypergradient,
        )),
        _expand(state.tangent.unseal()),
        _expand(state.b.unseal()),
        state.inner_state.unseal(),
        updates,
        params,
        value_fn,
        val_grads,
        jnp.asarray(hyper_lr_step, dtype)[None],
        mu,
        hessian_free,
        jnp.zeros([1], dtype),
        jnp.full([1], jnp.inf, dtype),
    )
    new = _squeeze(new)
    new_state = MartheState(
        count=optax.safe_increment(state.count),
        learning_rate=new.value,
        hyper_lr=new.hyper_lr,
        mu=new.mu,
        c=new.c,
        hypergradient=new.hypergradient,
        nonfinite_count=state.nonfinite_count + (~finite[0]).astype(jnp.int32),
        tangent=Sealed.seal(_squeeze(step.tangent)),
        b=Sealed.seal(_squeeze(step.b)),
        inner_state=Sealed.seal(step.inner_state),
    )
    return step.updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hd(
    inner: InnerFactory,
    learning_rate: ScalarLike,
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
  return marthe(inner, learning_rate, 0.0, hyper_lr=hyper_lr, mu=0.0)


def rtho(
    inner: InnerFactory,
    learning_rate: ScalarLike,
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
  return marthe(inner, learning_rate, 0.0, hyper_lr=hyper_lr, mu=1.0)
