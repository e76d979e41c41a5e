# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""Shardings for MARTHE's state under ``jax.jit`` over a device mesh.

MARTHE needs nothing special to run on several devices: place the params and
the batch with ``jax.sharding.NamedSharding`` and ``jax.jit`` the training
step. XLA's SPMD partitioner then computes the hypergradient dot products
``<Z_t, grad E>`` and ``<b_{t-1}, grad E>`` as global reductions (a local dot
product per shard and an all-reduce), so every device holds the same learning
rate, ``mu`` and ``beta``.

What this module adds is the sharding of the state, to pass as ``jax.jit``'s
``in_shardings``/``out_shardings`` (or to ``jax.device_put``): the parts of the
state shaped like the params (the tangent ``Z_t.w``, ``b_t``, the inner
optimizer's moments and their tangents) follow the params' sharding, and the
scalars (learning rate, ``mu``, ``beta``, step counts) are replicated.
:func:`fsdp_sharding` is a simple fully sharded layout for the params.

Example::

  mesh = jax.make_mesh((8,), ('data',), (jax.sharding.AxisType.Auto,))
  params_sharding = mo.sharding.fsdp_sharding(params, mesh)
  params = jax.device_put(params, params_sharding)
  tx = mo.marthe(optax.sgd, learning_rate=0.01, hyper_lr_step=1e-6)
  state_sharding = mo.sharding.state_sharding(
      jax.eval_shape(tx.init, params), params)
  state = jax.jit(tx.init, out_shardings=state_sharding)(params)
"""

from typing import Any, Optional, Union

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

from marthe_optax._marthe import Sealed

AxisName = Union[str, tuple[str, ...]]


def _default_replicated(leaves: list[Any]) -> jax.sharding.Sharding:
  """The replicated sharding on the mesh (or device) of the params' shardings."""
  for sharding in leaves:
    if isinstance(sharding, NamedSharding):
      return NamedSharding(sharding.mesh, PartitionSpec())
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
      return sharding
  raise ValueError(
      "Cannot infer the replicated sharding from the params' shardings "
      f"{leaves[:3]!r}...: pass replicated=NamedSharding(mesh, "
      "PartitionSpec()) (the sharding of the scalar state leaves)."
  )


def state_sharding(
    state: optax.OptState,
    params: optax.Params,
    params_sharding: Optional[Any] = None,
    *,
    replicated: Optional[jax.sharding.Sharding] = None,
) -> Any:
  """The sharding of an optimizer state whose param-shaped parts follow the params.

  Every subtree of ``state`` that has the params' tree structure and leaf
  shapes (MARTHE's tangent ``Z_t.w`` and ``b_t``; the inner optimizer's
  momentum, Adam moments and their tangents) gets ``params_sharding``; every
  other leaf (the learning rate, ``mu``, ``beta``, ``c``, the hypergradient,
  step counts) gets ``replicated``. :class:`marthe_optax.Sealed` nodes are
  looked into, and any Optax state (e.g. ``optax.chain`` of MARTHE with other
  transformations) is handled the same way. A param-shaped leaf that is not
  part of a full copy of the params tree (as in ``optax.masked`` states) is
  replicated: correct, but not memory-efficient.

  Args:
    state: the optimizer state, or its shapes
      (``jax.eval_shape(tx.init, params)``).
    params: the params, or their shapes (any leaves with a ``shape``).
    params_sharding: a tree of ``jax.sharding.Sharding`` with the params'
      structure, or one sharding for every leaf. Defaults to the ``sharding``
      of each params leaf (params already placed on the mesh, or
      ``jax.ShapeDtypeStruct`` with a sharding).
    replicated: the sharding of the remaining leaves. Defaults to
      ``NamedSharding(mesh, PartitionSpec())`` on the params' mesh.

  Returns:
    A tree of shardings with the structure of ``state``, for ``jax.jit``'s
    ``in_shardings`` and ``out_shardings`` or for ``jax.device_put``.

  Raises:
    ValueError: if ``params_sharding`` does not match ``params``, or is missing
      and the params carry no sharding, or ``replicated`` cannot be inferred.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import marthe_optax as mo
    >>> from marthe_optax.sharding import state_sharding
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ('data',))
    >>> shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    >>> params = {'w': jnp.zeros(4)}
    >>> tx = mo.marthe(optax.sgd, learning_rate=0.1, hyper_lr_step=1e-3)
    >>> s = state_sharding(jax.eval_shape(tx.init, params), params, shard)
    >>> s.b.unseal()['w'].spec, s.learning_rate.spec
    (P('data',), P())
  """
  params_treedef = jax.tree.structure(params)
  param_shapes = [np.shape(p) for p in jax.tree.leaves(params)]
  if params_sharding is None:
    shardings = [getattr(p, "sharding", None) for p in jax.tree.leaves(params)]
    if any(s is None for s in shardings):
      raise ValueError(
          "params carry no sharding: pass params_sharding (a tree of "
          "NamedSharding shaped like params, or one sharding), or params placed "
          "with jax.device_put(params, sharding)."
      )
    params_sharding = jax.tree.unflatten(params_treedef, shardings)
  if isinstance(params_sharding, jax.sharding.Sharding):
    params_sharding = jax.tree.map(lambda _: params_sharding, params)
  if jax.tree.structure(params_sharding) != params_treedef:
    raise ValueError(
        "params_sharding must have the structure of params. Got\n"
        f"  params_sharding: {jax.tree.structure(params_sharding)}\n"
        f"  params: {params_treedef}"
    )
  if replicated is None:
    replicated = _default_replicated(jax.tree.leaves(params_sharding))

  def is_params_copy(node: Any) -> bool:
    return jax.tree.structure(node) == params_treedef and [
        np.shape(x) for x in jax.tree.leaves(node)
    ] == param_shapes

  def walk(node: Any) -> Any:
    if node is None:
      return None
    if is_params_copy(node):
      return params_sharding
    if isinstance(node, Sealed):
      return Sealed.seal(walk(node.unseal()))
    if jax.tree_util.all_leaves([node]):
      return replicated
    # Recurse one level: children of any pytree node (NamedTuple, dict, ...).
    return jax.tree.map(walk, node, is_leaf=lambda x: x is not node)

  return walk(state)


def fsdp_sharding(
    params: optax.Params,
    mesh: Union[jax.sharding.Mesh, jax.sharding.AbstractMesh],
    axis: Optional[AxisName] = None,
) -> Any:
  """Fully sharded params: each leaf split along its largest divisible dimension.

  Each leaf is sharded over the mesh ``axis`` along its largest dimension whose
  size is a multiple of the axis size (the first one on ties); leaves with no
  such dimension (scalars, small biases) are replicated. Pair it with a batch
  sharded over the same axis for FSDP-style data parallelism, where each
  device stores ``1 / n`` of the params, of MARTHE's tangents and of the inner
  optimizer's state.

  Args:
    params: the params, or their shapes.
    mesh: the device mesh (a ``jax.sharding.Mesh``, or an ``AbstractMesh``
      to build shardings without devices).
    axis: the mesh axis name, or a tuple of names, to shard over. Defaults to
      all the mesh's axes.

  Returns:
    A tree of ``NamedSharding`` with the structure of ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from marthe_optax.sharding import fsdp_sharding
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ('data',))
    >>> s = fsdp_sharding({'w': jnp.zeros((3, 8)), 'b': jnp.zeros(())}, mesh)
    >>> s['w'].spec, s['b'].spec
    (P(None, 'data'), P())
  """
  if axis is None:
    axis = tuple(mesh.axis_names)
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  size = int(np.prod([mesh.shape[name] for name in names]))
  entry = names[0] if len(names) == 1 else names

  def leaf_sharding(p: Any) -> NamedSharding:
    shape = np.shape(p)
    divisible = [i for i, n in enumerate(shape) if n % size == 0 and n >= size]
    if not divisible:
      return NamedSharding(mesh, PartitionSpec())
    dim = max(divisible, key=lambda i: (shape[i], -i))
    spec = [None] * len(shape)
    spec[dim] = entry
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(leaf_sharding, params)
