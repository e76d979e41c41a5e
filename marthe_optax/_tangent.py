# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The tangent system of the inner dynamics (DESIGN.md section 1).

The inner dynamics is ``Phi_t(w, s, eta) = (w + u, s')`` with
``(u, s') = inner(eta).update(grad L_t(w), s, w)``, for any Optax factory
``inner: learning_rate -> GradientTransformation``. One linearisation of the
inner update at ``(grad L_t(w_t), s_t, w_t, eta_t)`` gives, in one pass,

* the step itself ``(u_t, s_{t+1})``,
* ``B_t``, the derivative of the new state with respect to ``eta_t``
  (its params part ``b_t = d w_{t+1} / d eta_t`` costs O(d), no Hessian),
* ``A_t (mu Z_t)``, whose only second-order piece, the Hessian-vector product
  ``H_t (mu Z_t.w)``, comes from forward-over-reverse differentiation of
  ``grad L_t``.

So ``Z_{t+1} = mu A_t Z_t + B_t`` (eq. 9) is right for SGD, momentum,
Nesterov, Adam, AdamW or any differentiable Optax chain, with the current
``eta_t``, and nobody writes an optimizer-specific Jacobian.

Integer leaves of the inner state (step counts) carry no tangent: they are
stored as integer zeros and handed to JAX as ``float0`` tangents.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
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
          jnp.zeros_like(x)
          if t.dtype == jax.dtypes.float0
          else jnp.asarray(t, jnp.result_type(x))
      ),
      tangent,
      like,
  )


def scale(s: jax.Array, tree: Any) -> Any:
  """``s * tree``, keeping each leaf's dtype (integer leaves are left as is)."""
  return jax.tree.map(
      lambda x: (s * x).astype(x.dtype) if _is_float(x) else x, tree
  )


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


EMPTY_TANGENT = Tangent((), ())


def step_and_tangent(
    inner: Callable[[jax.Array], optax.GradientTransformation],
    learning_rate: jax.Array,
    grads: optax.Updates,
    inner_state: optax.OptState,
    params: optax.Params,
    tangent: Tangent,
    mu: Optional[jax.Array],
    value_fn: Optional[Callable[[optax.Params], jax.Array]],
    **extra_args: Any,
) -> StepAndTangent:
  """One inner step with its tangent: ``Phi_t``'s jvp along ``(mu Z_t, 1)``.

  Two forward-mode passes over the inner update share its primal (XLA merges
  the common subexpressions): one along ``eta`` alone gives ``b_t`` (the other
  inputs are closed over, so no zero tangent is materialised), one along
  ``(H_t mu Z_t.w, mu Z_t.s, mu Z_t.w, 1)`` gives ``Z_{t+1}``.

  Args:
    inner: the inner optimizer factory ``learning_rate -> transformation``.
    learning_rate: ``eta_t``, a scalar array (the primal at which to
      differentiate).
    grads: ``grad L_t(w_t)``, the training gradient of the current minibatch.
    inner_state: ``s_t``.
    params: ``w_t``.
    tangent: ``Z_t``.
    mu: the discount ``mu_t``; ``None`` means ``mu`` is identically zero (HD):
      no Hessian-vector product is formed and no tangent is kept beyond
      ``b_t`` (``Z_{t+1}.w = b_t`` and ``Z_{t+1}.s`` is never used), so
      :data:`EMPTY_TANGENT` is returned.
    value_fn: the training loss ``L_t`` as a function of the params; needed
      unless ``mu`` is ``None``.
    **extra_args: forwarded to the inner update.

  Returns:
    A :class:`StepAndTangent` with ``u_t``, ``s_{t+1}``, ``Z_{t+1}`` and
    ``b_t``, all in the dtypes of their primal counterparts.
  """

  def inner_update(g, s, w, lr):
    tx = optax.with_extra_args_support(inner(lr))
    return tx.update(g, s, w, **extra_args)

  (updates, new_inner_state), (b, _) = jax.jvp(
      lambda lr: inner_update(grads, inner_state, params, lr),
      (learning_rate,),
      (jnp.ones_like(learning_rate),),
  )
  if mu is None:
    new_tangent = EMPTY_TANGENT
  else:
    mz = scale(mu, tangent.params)
    hz = hessian_vector_product(value_fn, params, mz)
    _, (du, ds) = jax.jvp(
        inner_update,
        (grads, inner_state, params, learning_rate),
        (
            optax.tree.cast_like(hz, grads),
            _to_jvp(scale(mu, tangent.inner_state)),
            mz,
            jnp.ones_like(learning_rate),
        ),
    )
    new_tangent = Tangent(
        optax.tree.add(mz, _from_jvp(du, params)), _from_jvp(ds, inner_state)
    )
  return StepAndTangent(
      updates=optax.tree.cast_like(updates, grads),
      inner_state=optax.tree.cast_like(new_inner_state, inner_state),
      tangent=new_tangent,
      b=_from_jvp(b, params),
  )
