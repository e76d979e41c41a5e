# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The tangent system of the inner dynamics (``docs/algorithm.md``).

The inner dynamics is ``Phi_t(w, s, theta) = (w + u, s')`` with
``(u, s') = inner(theta).update(grad L_t(w), s, w)``, for any Optax factory
``inner`` (``theta`` is the learning rate, or a vector of hyperparameters).
Forward-mode differentiation of the inner update at
``(grad L_t(w_t), s_t, w_t, theta_t)`` gives

* ``b_t = d w_{t+1} / d theta_t``, the params part of ``B_t``: O(d), no
  Hessian;
* ``A_t (mu Z_t) + B_t``, whose only second-order piece, the Hessian-vector
  product ``H_t (mu Z_t.w)``, comes from forward-over-reverse differentiation
  of ``grad L_t``.

So ``Z_{t+1} = mu A_t Z_t + B_t`` (eq. 9) is right for SGD, momentum,
Nesterov, Adam, AdamW or any differentiable Optax chain, with the current
``theta_t``, and nobody writes an optimizer-specific Jacobian. With several
hyperparameters there is one tangent per hyperparameter, computed as one
batched (``jax.vmap``) pass.

The first-order tangent drops the Hessian-vector product (``H_t = 0``) and
keeps the rest of ``A_t``: the tangent of the inner state (momentum, Adam's
moments) and the parts of the update that depend on the params directly
(weight decay) are still propagated. It costs no second-order pass.

Integer leaves of the inner state (step counts) carry no tangent: they are
stored as integer zeros and handed to JAX as ``float0`` tangents.

Many inner-state leaves have a tangent that is zero at every step: with
``H_t = 0``, the moments of SGD with momentum or of Adam depend on the
gradient alone, which is then a constant, so nothing ever feeds their
tangent. Which leaves can become non-zero is decided once, when the step is
traced, from the jvp's own symbolic zeros (:func:`live_state_leaves`): a leaf
is live if its tangent depends on the params' tangent, on the
hyperparameters, on the gradient's (full tangent only) or on a live leaf.
The others are neither read nor computed, and are kept at zero, so the
first-order step over plain Adam costs what it costs over SGD.

A tangent entry that is NaN while its primal is finite is the product
``0 * inf`` of a derivative taken where it does not exist: Adam's
``sqrt(nu)`` at ``nu = 0``, for a weight whose gradients have all been exactly
zero (a dead ReLU unit). The tangent of ``nu`` is then 0 as well, and the
derivative's limit is 0, so such entries are set to 0 and counted
(:attr:`StepAndTangent.repaired` flags the step) rather than poisoning the
hypergradient.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
import optax


class Tangent(NamedTuple):
  """A tangent ``Z`` of the full optimizer state ``x = (w, s)``."""

  params: optax.Params
  inner_state: optax.OptState


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def zeros_tangent(params: optax.Params, inner_state: optax.OptState) -> Tangent:
  """The zero tangent, shaped and typed like ``(params, inner_state)``."""
  return Tangent(optax.tree.zeros_like(params), optax.tree.zeros_like(inner_state))


def _to_jvp(tangent: Any) -> Any:
  """Stored tangent -> JAX tangent: integer leaves become ``float0`` zeros."""
  return jax.tree.map(
    lambda t: t if _is_float(t) else np.zeros(jnp.shape(t), jax.dtypes.float0),
    tangent,
  )


def _from_jvp(tangent: Any, like: Any) -> Any:
  """JAX tangent -> stored tangent, in the dtype of ``like`` (float0 -> 0)."""
  return jax.tree.map(
    lambda t, x: (
      jnp.zeros_like(x) if t.dtype == jax.dtypes.float0 else jnp.asarray(t, jnp.result_type(x))
    ),
    tangent,
    like,
  )


def scale_each(s: jax.Array, tree: Any) -> Any:
  """``s[k] * tree[k]`` along the leading (hyperparameter) axis.

  Keeps each leaf's dtype; integer leaves are left as they are.
  """

  def scale_leaf(x):
    if not _is_float(x):
      return x
    return (s.reshape(s.shape + (1,) * (x.ndim - 1)) * x).astype(x.dtype)

  return jax.tree.map(scale_leaf, tree)


def zero_each(mask: jax.Array, tree: Any) -> Any:
  """``tree[k]``, or zeros where ``mask[k]``, along the leading axis.

  A ``where``, not a product, so that a discarded tangent may hold
  infinities; integer leaves are left as they are.
  """

  def zero_leaf(x):
    if not _is_float(x):
      return x
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x)

  return jax.tree.map(zero_leaf, tree)


def map_hyperparams(f: Callable[..., Any], *batched: Any) -> Any:
  """``f`` mapped over the leading (hyperparameter) axis of its arguments.

  ``jax.vmap`` when there are several hyperparameters; a plain call on the
  squeezed arguments when there is one, so that the single-learning-rate
  step reaches XLA without a batch dimension.
  """
  if jax.tree.leaves(batched)[0].shape[0] == 1:
    out = f(*jax.tree.map(lambda x: x[0], batched))
    return jax.tree.map(lambda x: x[None], out)
  return jax.vmap(f)(*batched)


def _put(leaves: list, idx: list, values: list) -> list:
  """``leaves`` with ``leaves[i]`` replaced by ``values[k]`` for ``i = idx[k]``."""
  leaves = list(leaves)
  for i, x in zip(idx, values):
    leaves[i] = x
  return leaves


def _forward(
  jaxpr: Any, inputs: list, rule: Callable, bottom: Any, values: Optional[dict] = None
) -> list:
  """A forward pass of abstract values over ``jaxpr``; one value per output.

  ``inputs`` holds one value per input variable, literals and unknown
  variables read ``bottom``, and ``rule(eqn, args)`` gives the value of the
  outputs of any equation other than a nested ``jit`` call, which is
  followed. A rule must treat any other primitive with a sub-computation (a
  loop, a condition, a custom derivative) conservatively. ``values``, when
  given, receives the value of every variable of ``jaxpr``.
  """
  values = {} if values is None else values
  values.update(zip(jaxpr.invars, inputs))

  def read(atom):
    return bottom if isinstance(atom, jax_core.Literal) else values.get(atom, bottom)

  for eqn in jaxpr.eqns:
    args = [read(a) for a in eqn.invars]
    inner = eqn.params.get("jaxpr")
    if eqn.primitive.name in ("jit", "pjit", "closed_call") and inner is not None:
      outs = _forward(getattr(inner, "jaxpr", inner), args, rule, bottom)
    else:
      outs = [rule(eqn, args)] * len(eqn.outvars)
    values.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _dependence(jaxpr: Any, inputs: list) -> list:
  """For each output of ``jaxpr``, the set of labels of the inputs it uses.

  Every primitive mixes all its inputs, which can only mark more outputs as
  dependent, never fewer.
  """
  return _forward(jaxpr, inputs, lambda _, args: frozenset().union(*args), frozenset())


def live_state_leaves(
  inner_update: Callable[..., tuple[optax.Updates, optax.OptState]],
  hyperparams: jax.Array,
  grads: optax.Updates,
  inner_state: optax.OptState,
  params: optax.Params,
  first_order: bool,
) -> tuple[bool, ...]:
  """Which float leaves of the inner state can have a non-zero tangent.

  The tangent of the inner state starts at zero. A leaf's tangent can become
  non-zero if, in the jvp of one step, it depends on a source (the params'
  tangent, the hyperparameters' and, for the full tangent, the gradient's)
  or on a leaf that can; the least fixed point of that rule is returned, one
  boolean per leaf of ``inner_state`` (``False`` for integer leaves). This is
  trace-time analysis of the jvp's program (no computation is added to the
  step).

  Args:
    inner_update: as in :func:`step_and_tangent`.
    hyperparams: ``theta_t``, a vector ``[K]``.
    grads: the training gradient.
    inner_state: ``s_t``.
    params: ``w_t``.
    first_order: whether the gradient is a constant of the step.

  Returns:
    A tuple of booleans, one per leaf of ``inner_state``.
  """
  s_leaves, s_def = jax.tree.flatten(inner_state)
  floats = [i for i, x in enumerate(s_leaves) if _is_float(x)]
  if not floats:
    return tuple(False for _ in s_leaves)

  def outputs(s_float, w, theta, g):
    state = jax.tree.unflatten(s_def, _put(s_leaves, floats, s_float))
    _, new_state = inner_update(g, state, w, theta)
    new_leaves = jax.tree.leaves(new_state)
    return [new_leaves[i] for i in floats]

  primals = ([s_leaves[i] for i in floats], params, hyperparams, grads)
  tangent_jvp = lambda *t: jax.jvp(outputs, primals, t)[1]
  closed = jax.make_jaxpr(tangent_jvp)(*primals)
  n_state = len(floats)
  n_in = len(closed.jaxpr.invars)
  n_grads = len(jax.tree.leaves(grads))
  labels = [frozenset([i]) for i in range(n_in)]
  deps = _dependence(closed.jaxpr, labels)
  sources = set(range(n_state, n_in - (n_grads if first_order else 0)))
  live: set = set()
  while True:
    feeding = sources | live
    grown = {j for j in range(n_state) if deps[j] & feeding}
    if grown == live:
      break
    live = grown
  flags = [False] * len(s_leaves)
  for j in live:
    flags[floats[j]] = True
  return tuple(flags)


def hessian_vector_product(
  value_fn: Callable[[optax.Params], jax.Array],
  params: optax.Params,
  vector: optax.Params,
) -> optax.Params:
  """``H(params) @ vector`` by forward-over-reverse differentiation."""
  return jax.jvp(jax.grad(value_fn), (params,), (vector,))[1]


class StepAndTangent(NamedTuple):
  """What one differentiated inner step returns."""

  updates: optax.Updates  # u_t
  inner_state: optax.OptState  # s_{t+1}
  tangent: Tangent  # Z_{t+1}
  b: optax.Params  # b_t = d w_{t+1} / d eta_t
  repaired: jax.Array  # whether some NaN tangent entries were set to 0 (bool)


# Primitives whose primal result may be infinite at finite arguments, and
# those whose derivative may be (``sqrt`` at 0, a division by 0).
_MAY_OVERFLOW = frozenset(
  {
    "div",
    "rsqrt",
    "log",
    "log1p",
    "pow",
    "integer_pow",
    "exp",
    "exp2",
    "expm1",
    "tan",
    "atanh",
    "erf_inv",
    "lgamma",
    "digamma",
  }
)
_NOT_SMOOTH = frozenset(
  {
    "div",
    "sqrt",
    "rsqrt",
    "cbrt",
    "pow",
    "integer_pow",
    "log",
    "log1p",
    "asin",
    "acos",
    "atan2",
    "atanh",
    "erf_inv",
    "lgamma",
    "digamma",
  }
)


def _nan_prone_rule(eqn: Any, args: list) -> tuple[bool, bool, bool]:
  """The flags ``(tangent, may be infinite, may be NaN)`` of an equation's outputs.

  A value depends on a tangent input; as a primal it may be infinite; as a
  tangent it may be NaN (``0 * inf``) at a finite primal. A tangent becomes
  NaN-prone where it meets a possibly infinite primal, or passes through a
  primitive whose derivative may be infinite, or through any primitive with a
  sub-computation.
  """
  name = eqn.primitive.name
  tan = any(a[0] for a in args)
  inf = any(a[1] for a in args) or name in _MAY_OVERFLOW
  nan = any(a[2] for a in args) or (
    tan
    and (
      any(a[1] for a in args)
      or name in _NOT_SMOOTH
      or "jaxpr" in eqn.params
      or "call_jaxpr" in eqn.params
    )
  )
  return (tan, inf, nan)


def _scaled_factor(producers: dict, var: Any, scalar_ok: Callable[[Any], bool]) -> Any:
  """``X`` when ``var = mul(c, X)`` (either order) with ``scalar_ok(c)``, else ``None``.

  Tells when a tangent is a scalar multiple of an array of the primal (see
  :func:`nan_prone`).
  """
  eqn = producers.get(var)
  if eqn is None or eqn.primitive.name != "mul":
    return None
  a, b = eqn.invars
  for c, x in ((a, b), (b, a)):
    if scalar_ok(c) and not isinstance(x, jax_core.Literal):
      return x
  return None


def nan_prone(fn: Callable[..., Any], primals: tuple, tangents: tuple) -> list:
  """For each leaf of ``jax.jvp(fn, primals, tangents)[1]``: may it be NaN
  where its primal is finite? (Trace-time analysis of the jvp's program.)

  ``sqrt``'s derivative at 0 times a zero tangent is such a NaN (Adam's
  ``sqrt(nu)`` at ``nu = 0``); a linear update such as SGD's or momentum's
  has none, so :func:`_repair` skips it. Neither has a tangent that is a
  scalar times the same array ``X`` as its primal (``du = -d eta * X`` and
  ``u = -eta * X``, an update linear in the learning rate, Adam's included):
  where such a tangent is NaN and its scalar factor is not NaN-prone itself,
  ``X`` is not finite, so neither is the primal.
  """
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tangents)
  closed = jax.make_jaxpr(lambda *t: jax.jvp(fn, primals, t))(*shapes)
  jaxpr = closed.jaxpr
  n = len(jaxpr.outvars) // 2
  # The inputs are the tangents; the primals (closed over) are finite.
  bottom = (False, False, False)
  inputs = [(True, False, False)] * len(jaxpr.invars)
  values: dict = {}
  flags = _forward(jaxpr, inputs, _nan_prone_rule, bottom, values)
  producers = {v: e for e in jaxpr.eqns for v in e.outvars}
  is_scalar = lambda c: isinstance(c, jax_core.Literal) or jnp.ndim(c.aval) == 0
  # The tangent's scalar factor must not be NaN-prone itself (d sqrt(eta) at 0).
  finite_scalar = lambda c: (
    is_scalar(c) and (isinstance(c, jax_core.Literal) or not values.get(c, bottom)[2])
  )
  prone = []
  for primal_out, tangent_out, flag in zip(jaxpr.outvars[:n], jaxpr.outvars[n:], flags[n:]):
    x = _scaled_factor(producers, tangent_out, finite_scalar) if flag[2] else None
    # X carries no tangent (a primal) and is the primal's factor too.
    shared = (
      x is not None
      and not values.get(x, bottom)[0]
      and _scaled_factor(producers, primal_out, is_scalar) is x
    )
    prone.append(flag[2] and not shared)
  return prone


def _repair(tangent: Any, primal: Any, prone: list) -> tuple[Any, jax.Array]:
  """NaN tangent entries of finite primal entries set to 0, and whether any was.

  ``prone`` (one boolean per leaf, from :func:`nan_prone`) limits the repair
  to the leaves that can hold such entries. The flag is one boolean ``any``
  per leaf rather than a count: a count is an integer sum over every entry of
  every tangent leaf, which XLA cannot fuse with the tangent's producers.
  """
  found = jnp.zeros([], bool)
  leaves, treedef = jax.tree.flatten(tangent)
  fixed = []
  for t, x, p in zip(leaves, jax.tree.leaves(primal), prone):
    if not p or t.dtype == jax.dtypes.float0 or not _is_float(t):
      fixed.append(t)
      continue
    bad = jnp.isnan(t) & jnp.isfinite(x)
    found = found | jnp.any(bad)
    fixed.append(jnp.where(bad, jnp.zeros_like(t), t))
  return jax.tree.unflatten(treedef, fixed), found


EMPTY_TANGENT = Tangent((), ())


def step_and_tangent(
  inner_update: Callable[..., tuple[optax.Updates, optax.OptState]],
  hyperparams: jax.Array,
  grads: optax.Updates,
  inner_state: optax.OptState,
  params: optax.Params,
  tangent: Tangent,
  mu: Optional[jax.Array],
  value_fn: Optional[Callable[[optax.Params], jax.Array]],
  first_order: bool = False,
  reset: Optional[jax.Array] = None,
) -> StepAndTangent:
  """One inner step with one tangent per hyperparameter (eq. 9).

  For each of the ``K`` hyperparameters ``theta_k``, ``Z^k_{t+1}`` is the jvp
  of ``Phi_t`` at ``(w_t, s_t, theta_t)`` along ``(mu_k Z^k_t, e_k)``,
  computed as ``A_t (mu_k Z^k_t)`` (the jvp along the state alone) plus
  ``B_t e_k`` (the jvp along ``theta`` alone, whose params part is
  ``b^k_t = d w_{t+1} / d theta_k``). The ``K`` tangents are one batched
  computation (:func:`map_hyperparams`), so the cost grows linearly in ``K``
  with no per-hyperparameter code; the primal inner step, the forward pass
  and the training gradient are computed once (they do not depend on the
  tangent, and XLA merges the common subexpressions).

  Args:
    inner_update: ``(grads, inner_state, params, theta) -> (updates,
      new_inner_state)``, the inner optimizer's update as a function of the
      hyperparameter vector ``theta``.
    hyperparams: ``theta_t``, a vector ``[K]`` (the primal at which to
      differentiate).
    grads: ``grad L_t(w_t)``, the training gradient of the current minibatch.
    inner_state: ``s_t``.
    params: ``w_t``.
    tangent: ``Z_t``, every leaf with a leading axis of size ``K``.
    mu: the discounts ``mu_t``, a vector ``[K]``; ``None`` means ``mu`` is
      identically zero (HD): no Hessian-vector product is formed and no
      tangent is kept beyond ``b_t`` (``Z_{t+1}.w = b_t`` and ``Z_{t+1}.s`` is
      never used), so :data:`EMPTY_TANGENT` is returned.
    value_fn: the training loss ``L_t`` as a function of the params; needed
      unless ``mu`` is ``None`` or ``first_order``.
    first_order: drop the Hessian-vector product (``H_t = 0``): the training
      gradient is held fixed and only the inner state and the params are
      differentiated through.
    reset: optional booleans ``[K]``: the tangents ``Z^k_t`` to restart from
      zero (a guard fired for ``theta_k``); the tangents of leaves that are
      not live are zero already and pass through untouched.

  Returns:
    A :class:`StepAndTangent` with ``u_t``, ``s_{t+1}``, ``Z_{t+1}`` and
    ``b_t`` (the last two with the leading axis ``K``), in the dtypes of their
    primal counterparts, and whether some tangent entries were repaired.
  """
  eye = jnp.eye(hyperparams.shape[0], dtype=hyperparams.dtype)
  updates, new_inner_state = inner_update(grads, inner_state, params, hyperparams)
  hessian_free = mu is None
  # Only the live leaves of the inner state carry a tangent (the others stay
  # at zero, see live_state_leaves); the rest is closed over.
  live = (
    ()
    if hessian_free
    else live_state_leaves(inner_update, hyperparams, grads, inner_state, params, first_order)
  )
  s_leaves, s_def = jax.tree.flatten(inner_state)
  new_leaves = jax.tree.leaves(new_inner_state)
  idx = [i for i, flag in enumerate(live) if flag]

  n_u = len(jax.tree.leaves(updates))

  def live_part(ds, prone):
    ds = jax.tree.leaves(ds)
    return _repair(
      [_from_jvp(ds[i], s_leaves[i]) for i in idx],
      [new_leaves[i] for i in idx],
      [prone[n_u + i] for i in idx],
    )

  along_theta = lambda theta: inner_update(grads, inner_state, params, theta)
  # Which tangent leaves can hold a NaN at a finite primal (trace time).
  b_prone = nan_prone(along_theta, (hyperparams,), (eye[0],))

  def b_k(e):
    # B_t e: along theta alone, the other inputs closed over, so no zero
    # tangent is materialised and no Hessian is formed.
    _, (du, ds) = jax.jvp(along_theta, (hyperparams,), (e,))
    du, found_u = _repair(_from_jvp(du, params), updates, b_prone[:n_u])
    ds, found_s = live_part(ds, b_prone)
    return (du, ds), found_u | found_s

  (b, b_state), repaired = map_hyperparams(b_k, eye)
  repaired = jnp.any(repaired)
  if hessian_free:
    new_tangent = EMPTY_TANGENT
  else:

    def step(g, s_live, w):
      state = jax.tree.unflatten(s_def, _put(s_leaves, idx, s_live))
      return inner_update(g, state, w, hyperparams)

    s_live = [s_leaves[i] for i in idx]
    if first_order:
      # H_t = 0: the gradient is a constant of the step (closed over).
      along_state = lambda s, w: step(grads, s, w)
      primals = (s_live, params)
    else:
      along_state = step
      primals = (grads, s_live, params)
    z_prone = nan_prone(along_state, primals, primals)

    def z_k(bk, bs, mz, ms):
      # A_t (mu Z_t), then + B_t e_k (computed above).
      if first_order:
        _, (du, ds) = jax.jvp(along_state, primals, (ms, mz))
      else:
        hz = hessian_vector_product(value_fn, params, mz)
        _, (du, ds) = jax.jvp(along_state, primals, (optax.tree.cast_like(hz, grads), ms, mz))
      du, found_u = _repair(_from_jvp(du, params), updates, z_prone[:n_u])
      ds, found_s = live_part(ds, z_prone)
      # mu Z + (B e + A mu Z), summed in the order of the one-jvp form, so
      # that the numbers do not depend on how the jvp is split.
      z_w = optax.tree.add(mz, optax.tree.add(bk, du))
      z_s = [optax.tree.add(y, x) for x, y in zip(ds, bs)]
      return (z_w, z_s), found_u | found_s

    stored = jax.tree.leaves(tangent.inner_state)

    def discount(z):
      # mu_k Z^k_t, and 0 for a restarted tangent.
      z = scale_each(mu, z)
      return z if reset is None else zero_each(reset, z)

    (z_params, z_live), counts = map_hyperparams(
      z_k,
      b,
      b_state,
      discount(tangent.params),
      [discount(stored[i]) for i in idx],
    )
    # The leaves that are not live keep their zeros: passed through, so that
    # XLA neither reads nor writes them.
    z_state = jax.tree.unflatten(s_def, _put(stored, idx, z_live))
    new_tangent = Tangent(z_params, z_state)
    repaired = repaired | jnp.any(counts)
  return StepAndTangent(
    updates=optax.tree.cast_like(updates, grads),
    inner_state=optax.tree.cast_like(new_inner_state, inner_state),
    tangent=new_tangent,
    b=b,
    repaired=repaired,
  )
