"""Every transformation × inner optimizer: the same numbers in every Optax setting.

jit/no-jit and vmap/loop equivalence, composition with ``optax.chain`` and
``optax.apply_if_finite``, float64, one compiled program, state access and
checkpointing. Optax's contract for contributed optimizers (extra arguments,
``inject_hyperparams``, dtypes, ``MultiSteps``, ``map_params``) is
``tests/test_contract.py``.
"""

import copy
import io
import pickle
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import marthe_optax as mo
from tests import _problems as P

FACTORIES = {
  "marthe": lambda inner, lr: mo.marthe(inner, lr, hyper_lr_step=1e-2),
  "marthe_fixed_mu": lambda inner, lr: mo.marthe(
    inner, lr, hyper_lr_step=0.0, hyper_lr=1e-3, mu=0.9
  ),
  "hd": lambda inner, lr: mo.hd(inner, lr, hyper_lr=1e-3),
  "rtho": lambda inner, lr: mo.rtho(inner, lr, hyper_lr=1e-4),
  "knob_free": lambda inner, lr: mo.marthe(inner, lr),
}
CASES = [(f, i) for f in FACTORIES for i in P.INNERS]
HYPER_FIELDS = ("learning_rate", "hyper_lr", "mu", "hypergradient")


def _tx(factory, inner):
  return FACTORIES[factory](P.INNERS[inner], P.LEARNING_RATES[inner])


@pytest.mark.parametrize("factory,inner", CASES)
def test_jit_equals_no_jit_and_state_is_readable(factory, inner):
  tx = _tx(factory, inner)
  problem = P.make_problem(seed=7, steps=5)
  p_jit, s_jit, trace_jit = P.run(tx, problem, jit=True)
  p_eager, s_eager, trace_eager = P.run(tx, problem, jit=False)
  chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(trace_jit, trace_eager, rtol=1e-4, atol=1e-7)
  chex.assert_tree_all_finite(s_jit)
  for name in HYPER_FIELDS:
    value = optax.tree.get(s_jit, name)
    chex.assert_shape(value, ())
    assert value.dtype == jnp.float32
  assert int(optax.tree.get(s_jit, "count")) == 5
  assert float(s_jit.learning_rate) != P.LEARNING_RATES[inner] or factory == "marthe"


@pytest.mark.parametrize(
  "factory,inner", [(f, "momentum") for f in FACTORIES] + [("marthe", "adam")]
)
def test_vmap_over_seeds_equals_loop(factory, inner):
  tx = _tx(factory, inner)
  problems = [P.make_problem(seed=s, steps=4) for s in range(3)]
  batched = jax.tree.map(lambda *x: jnp.stack(x), *problems)

  def final(problem):
    params, state = problem.params, tx.init(problem.params)
    for t in range(4):
      params, state = P.train_step(tx, problem, params, state, t)
    return params, state

  vmapped = jax.jit(jax.vmap(final))(batched)
  looped = jax.tree.map(lambda *x: jnp.stack(x), *[jax.jit(final)(p) for p in problems])
  chex.assert_trees_all_close(vmapped, looped, rtol=1e-5, atol=1e-7)


def test_vmap_over_hyper_learning_rates():
  problem = P.make_problem(seed=1, steps=6)
  betas = jnp.array([0.0, 1e-3, 1e-2, 1e-1])

  def final_lr(beta):
    tx = mo.hd(optax.sgd, 0.1, hyper_lr=beta)  # traced beta: validated only when concrete
    _, state, _ = P.run(tx, problem, jit=False)
    return state.learning_rate

  vmapped = jax.jit(jax.vmap(final_lr))(betas)
  looped = jnp.stack([final_lr(b) for b in betas])
  chex.assert_trees_all_close(vmapped, looped, rtol=1e-5)
  assert float(vmapped[0]) == pytest.approx(0.1)
  assert len(set(np.asarray(vmapped).tolist())) == 4


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_inside_chain_and_apply_if_finite(inner):
  # float64, so that the wrappers' different XLA fusions leave only round-off.
  with jax.enable_x64(True):
    base = _tx("marthe", inner)
    problem = P.make_problem(steps=4, dtype=jnp.float64)
    alone = P.run(base, problem)
    for tx in (
      optax.chain(optax.identity(), base),
      optax.apply_if_finite(base, max_consecutive_errors=3),
    ):
      params, state, trace = P.run(tx, problem)
      chex.assert_trees_all_close(params, alone[0], rtol=1e-10, atol=1e-14)
      chex.assert_trees_all_close(trace, alone[2], rtol=1e-10, atol=1e-14)
      # The accessors find MARTHE's fields, not Adam's own `mu` or `count`.
      for name in HYPER_FIELDS:
        assert float(optax.tree.get(state, name)) == pytest.approx(
          float(getattr(alone[1], name)), rel=1e-10, abs=1e-14
        )


def test_float64():
  with jax.enable_x64(True):
    tx = _tx("marthe", "momentum")
    problem = P.make_problem(steps=3, dtype=jnp.float64)
    _, state, _ = P.run(tx, problem)
    assert state.learning_rate.dtype == jnp.float64
    assert state.tangent.unseal().params["w0"].dtype == jnp.float64


def test_one_program_without_host_callbacks():
  tx = _tx("marthe", "adam")
  problem = P.make_problem(steps=2)
  params, state = problem.params, tx.init(problem.params)
  step = jax.jit(lambda p, s: P.train_step(tx, problem, p, s, 0))
  hlo = step.lower(params, state).compile().as_text()
  targets = re.findall(r'custom_call_target="([^"]+)"', hlo)
  assert not [t for t in targets if "callback" in t.lower()], targets
  for op in (" infeed(", " outfeed(", " send(", " recv("):
    assert op not in hlo


def test_state_is_plain_arrays_and_checkpoints():
  tx = _tx("marthe", "adam")
  problem = P.make_problem(steps=6)
  params, state = problem.params, tx.init(problem.params)
  step = jax.jit(lambda p, s, t: P.train_step(tx, problem, p, s, t))
  for t in range(3):
    params, state = step(params, state, t)
  leaves, treedef = jax.tree.flatten(state)
  assert all(isinstance(x, jax.Array) for x in leaves)
  buffer = io.BytesIO()
  np.savez(buffer, *[np.asarray(x) for x in leaves])
  buffer.seek(0)
  loaded = np.load(buffer)
  # Restore into the structure of a fresh init, as a checkpointer would.
  template = jax.tree.structure(tx.init(problem.params))
  restored = jax.tree.unflatten(
    template, [jnp.asarray(loaded[f"arr_{i}"]) for i in range(len(leaves))]
  )
  a, b = (params, state), (params, restored)
  for t in range(3, 6):
    a, b = step(*a, t), step(*b, t)
  chex.assert_trees_all_equal(a, b)


def test_sealed_nodes_pickle_copy_and_hide_their_names():
  sealed = mo.Sealed.seal(optax.adam(0.1).init({"w": jnp.ones(2)}))
  for clone in (
    pickle.loads(pickle.dumps(sealed)),
    copy.deepcopy(sealed),
    copy.copy(sealed),
    jax.tree.map(lambda x: x, sealed),
  ):
    assert isinstance(clone, mo.Sealed)
    assert jax.tree.structure(clone) == jax.tree.structure(sealed)
    chex.assert_trees_all_equal(clone.unseal(), sealed.unseal())
  # JAX sees the tree under the key `tree`; optax.tree sees flat leaves only.
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(sealed)]
  assert paths == [".tree[0].count", ".tree[0].mu['w']", ".tree[0].nu['w']"]
  assert len(sealed.leaves) == 3 and sealed.treedef == jax.tree.structure(sealed.unseal())
  assert optax.tree.get(sealed.unseal(), "mu") is not None
  assert optax.tree.get(sealed, "mu") is None and optax.tree.get(sealed, "count") is None
