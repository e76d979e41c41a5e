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
optimizer's moments and their tangents; with :func:`marthe_optax.marthe_multi`
the same with a leading axis of size ``K``, one slice per hyperparameter; the
masked per-group states of :func:`marthe_optax.per_group`) follow the params'
sharding, and the scalars (learning rate, ``mu``, ``beta``, step counts) are
replicated. :func:`fsdp_sharding` is a simple fully sharded layout for the
params.

Examples:
  >>> import jax, jax.numpy as jnp, optax
  >>> import marthe_optax as mo
  >>> mesh = jax.make_mesh((len(jax.devices()),), ('data',),
  ...                      (jax.sharding.AxisType.Auto,))
  >>> params = {'w': jnp.zeros((16, 8)), 'b': jnp.zeros(8)}
  >>> params_sharding = mo.sharding.fsdp_sharding(params, mesh)
  >>> params = jax.device_put(params, params_sharding)
  >>> tx = mo.marthe(optax.sgd, learning_rate=0.01, hyper_lr_step=1e-6)
  >>> state_sharding = mo.sharding.state_sharding(
  ...     jax.eval_shape(tx.init, params), params)
  >>> state = jax.jit(tx.init, out_shardings=state_sharding)(params)
  >>> state.b.unseal()['w'].sharding.spec, state.learning_rate.sharding.spec
  (P('data', None), P())
"""

import dataclasses
from typing import Any, Optional, Union

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

AxisName = Union[str, tuple[str, ...]]
KeyPath = tuple[Any, ...]
Shape = tuple[int, ...]


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


def _with_leading_axis(
  sharding: jax.sharding.Sharding, replicated: jax.sharding.Sharding
) -> jax.sharding.Sharding:
  """``sharding`` for an array with one more leading axis, not split."""
  if isinstance(sharding, NamedSharding):
    if not sharding.spec:  # P(): replicated at any rank
      return sharding
    return NamedSharding(
      sharding.mesh,
      PartitionSpec(None, *sharding.spec),
      memory_kind=sharding.memory_kind,
    )
  if sharding.is_fully_replicated:  # e.g. SingleDeviceSharding: any rank
    return sharding
  # A sharding given by device positions (GSPMDSharding, ...) has no spec to
  # extend by one axis.
  return replicated


def _is_leaf(node: Any) -> bool:
  """Whether ``node`` is a leaf (not a node without children, like ``None``)."""
  treedef = jax.tree.structure(node)
  return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _is_suffix(suffix: KeyPath, path: KeyPath) -> bool:
  return 0 < len(suffix) <= len(path) and tuple(path[-len(suffix) :]) == suffix


def _view(node: Any) -> Optional[Any]:
  """The tree a sealing node hides (:class:`marthe_optax.Sealed`), or ``None``.

  A node that exposes its tree through ``unseal()`` is looked into when that
  tree has exactly the node's leaves, in the same order: the view then names
  the leaves by their paths in the original tree (a sealing node may expose
  its leaves only by position).
  """
  unseal = getattr(node, "unseal", None)
  if not callable(unseal) or isinstance(node, (dict, list, tuple)):
    return None
  view = unseal()
  leaves, view_leaves = jax.tree.leaves(node), jax.tree.leaves(view)
  if len(leaves) != len(view_leaves) or any(a is not b for a, b in zip(leaves, view_leaves)):
    return None
  return view


@dataclasses.dataclass
class _Leaf:
  """A leaf of the state, where it sits, and the sharding decided for it."""

  path: KeyPath
  shape: Shape
  hidden: bool  # a child of a node that does not name its children
  sharding: Optional[jax.sharding.Sharding] = None


class _Params:
  """The params' paths, shapes and shardings, and how state leaves match them."""

  def __init__(self, params, params_sharding, replicated):
    with_path, self.treedef = jax.tree_util.tree_flatten_with_path(params)
    self.paths = [tuple(path) for path, _ in with_path]
    self.shapes = [tuple(np.shape(p)) for _, p in with_path]
    self.shardings = jax.tree.leaves(params_sharding)
    self.replicated = replicated

  def fits(self, i: int, shape: Shape) -> Optional[int]:
    """0 if ``shape`` is param ``i``'s, 1 with a leading axis, else ``None``."""
    param = self.shapes[i]
    if shape == param:
      return 0
    if shape[1:] == param and len(shape) == len(param) + 1:
      return 1
    return None

  def sharding(self, i: int, batched: int) -> jax.sharding.Sharding:
    if batched:
      return _with_leading_axis(self.shardings[i], self.replicated)
    return self.shardings[i]

  def copy(self, node: Any) -> Optional[list[jax.sharding.Sharding]]:
    """The shardings of ``node``'s leaves if it is a copy of the params.

    A copy has the params' tree structure down to the params' leaves; at each
    param's place it holds an array of that param's shape, or of
    ``[K, *shape]`` with one ``K`` for the whole copy (one slice per
    hyperparameter), or an ``optax.MaskedNode`` (a masked or other-group
    param in ``optax.masked``, ``optax.partition`` and
    ``optax.multi_transform`` states). Returns ``None`` for anything else.
    """
    try:
      places = self.treedef.flatten_up_to(node)
    except (ValueError, TypeError):
      return None
    out, leading = [], set()
    for i, place in enumerate(places):
      if isinstance(place, optax.MaskedNode):
        continue
      if not _is_leaf(place):
        return None
      shape = tuple(np.shape(place))
      batched = self.fits(i, shape)
      if batched is None:
        return None
      leading.add(shape[0] if batched else None)
      out.append(self.sharding(i, batched))
    return out if len(leading) == 1 else None

  def by_path(self, path: KeyPath, shape: Shape) -> Optional[jax.sharding.Sharding]:
    """The sharding of the param whose key path ends ``path`` (the longest)."""
    found = [
      (len(p), i)
      for i, p in enumerate(self.paths)
      if _is_suffix(p, path) and self.fits(i, shape) is not None
    ]
    if not found:
      return None
    _, i = max(found)
    return self.sharding(i, self.fits(i, shape))

  def by_shape(self, shape: Shape) -> Optional[jax.sharding.Sharding]:
    """The one sharding that every param of this shape implies, else ``None``.

    ``shape`` is matched against each param's shape, and against it with a
    leading axis (non-scalar params only); when the matches disagree (two
    params of one shape sharded differently, or a ``[K, ...]`` shape that is
    also a param's shape), the answer is ambiguous: ``None``.
    """
    found = []
    for i, param in enumerate(self.shapes):
      batched = self.fits(i, shape)
      if batched is not None and (not batched or param):
        found.append(self.sharding(i, batched))
    if not found or any(not s.is_equivalent_to(found[0], len(shape)) for s in found[1:]):
      return None
    return found[0]


def _visit(node: Any, path: KeyPath, hidden: bool, params: _Params, out: list[_Leaf]) -> None:
  """Appends the leaves of ``node`` to ``out`` in ``jax.tree.leaves`` order."""
  copy = params.copy(node)
  if copy is not None:
    for (leaf_path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(node), copy):
      out.append(_Leaf(path + tuple(leaf_path), tuple(np.shape(leaf)), False, sharding))
    return
  if _is_leaf(node):
    out.append(_Leaf(path, tuple(np.shape(node)), hidden))
    return
  view = _view(node)
  if view is not None:
    _visit(view, path, _is_leaf(view), params, out)
    return
  children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
  for (key,), child in children:
    _visit(child, path + (key,), isinstance(key, jax.tree_util.FlattenedIndexKey), params, out)


def state_sharding(
  state: optax.OptState,
  params: optax.Params,
  params_sharding: Optional[Any] = None,
  *,
  replicated: Optional[jax.sharding.Sharding] = None,
) -> Any:
  """The sharding of an optimizer state whose param-shaped parts follow the params.

  Every parameter-shaped slice of ``state`` gets its param's sharding and
  every other leaf (the learning rate, ``mu``, ``beta``, ``c``, the
  hypergradient, step counts, ``marthe_multi``'s ``[K]`` vectors) gets
  ``replicated``. The param-shaped parts are found by structure first:

  * a subtree with the params' tree structure whose leaves have the params'
    shapes (MARTHE's tangent ``Z_t.w`` and ``b_t``; the inner optimizer's
    momentum, Adam moments and their tangents) gets ``params_sharding``
    itself, leaf by leaf;
  * if every leaf of such a subtree has one more leading axis of one size
    ``K`` (:func:`marthe_optax.marthe_multi`'s tangents and ``b``, one slice
    per hyperparameter), each leaf gets its param's sharding with the
    leading axis not split: ``PartitionSpec(None, *spec)``;
  * params replaced by ``optax.MaskedNode`` are allowed (``optax.masked``,
    ``optax.partition`` and ``optax.multi_transform`` states, as in
    :func:`marthe_optax.per_group`): the leaves present follow their params.

  A leaf outside such a subtree follows the param whose key path ends its
  own key path, when its shape is that param's (with or without a leading
  axis), as in a copy of the params held in another container type. A leaf
  that sits in a pytree node that names its children only by position (its
  tree not visible) follows its shape alone, when every param of that shape
  (with or without a leading axis) has the same sharding; when they differ,
  the leaf is ambiguous and replicated. :class:`marthe_optax.Sealed` nodes
  are looked into through ``unseal()``, and any Optax state (e.g.
  ``optax.chain`` of MARTHE with other transformations) is handled the same
  way. Where the same array could match two params, the subtree it sits in
  decides: a ``[K, ...]`` leaf of a copy of ``{'w': (4, 16), 'v': (16,)}``
  with ``K = 4`` at ``'v'`` is a slice of ``v``, not a copy of ``w``.

  Args:
    state: the optimizer state, or its shapes
      (``jax.eval_shape(tx.init, params)``).
    params: the params, or their shapes (any leaves with a ``shape``).
    params_sharding: a tree of ``jax.sharding.Sharding`` with the params'
      structure, or one sharding for every leaf. Defaults to the ``sharding``
      of each params leaf (params already placed on the mesh, or
      ``jax.ShapeDtypeStruct`` with a sharding). A leading axis is added to a
      ``NamedSharding``'s spec; any other sharding of a param that is split
      leaves its ``[K, ...]`` slices replicated.
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

    With ``K = 2`` hyperparameters, Adam's moments follow ``w`` and the
    ``[2, 4]`` tangents and ``b`` split ``w``'s axis, not the leading one:

    >>> tx = mo.marthe_multi(
    ...     optax.adamw, {'learning_rate': 0.1, 'weight_decay': 1e-4})
    >>> s = state_sharding(jax.eval_shape(tx.init, params), params, shard)
    >>> sorted({x.spec for x in jax.tree.leaves(s)}, key=len)
    [P(), P('data',), P(None, 'data')]
    >>> optax.tree.get(s, 'mu').spec
    P()

  References:
    Rajbhandari et al., `ZeRO: Memory Optimizations Toward Training Trillion
    Parameter Models <https://arxiv.org/abs/1910.02054>`_, 2020 (optimizer
    state split over the data-parallel devices, like the params).

    Zhao et al., `PyTorch FSDP: Experiences on Scaling Fully Sharded Data
    Parallel <https://arxiv.org/abs/2304.11277>`_, 2023.
  """
  params_treedef = jax.tree.structure(params)
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
  layout = _Params(params, params_sharding, replicated)
  leaves: list[_Leaf] = []
  _visit(state, (), False, layout, leaves)
  for leaf in leaves:
    if leaf.sharding is None and leaf.shape:
      leaf.sharding = layout.by_path(leaf.path, leaf.shape)
      if leaf.sharding is None and leaf.hidden:
        leaf.sharding = layout.by_shape(leaf.shape)
    if leaf.sharding is None:
      leaf.sharding = replicated
  return jax.tree.unflatten(jax.tree.structure(state), [leaf.sharding for leaf in leaves])


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
