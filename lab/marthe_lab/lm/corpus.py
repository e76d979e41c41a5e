# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""The character corpus: CPython's ``pydoc_data.topics``, its blocks and its windows."""

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


LN2 = math.log(2.0)


class Corpus(NamedTuple):
  """A character corpus split into contiguous blocks.

  Attributes:
    vocab: the distinct characters of the whole text, sorted; token ``i`` is
      ``vocab[i]``.
    train: the first block, as ``int32`` token ids.
    val: the block after it.
    test: the last block.
  """

  vocab: str
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  def encode(self, text: str) -> np.ndarray:
    """Token ids of ``text`` (every character must be in :attr:`vocab`)."""
    index = {c: i for i, c in enumerate(self.vocab)}
    return np.asarray([index[c] for c in text], np.int32)

  def decode(self, tokens: Any) -> str:
    """The text of token ids."""
    return "".join(self.vocab[int(i)] for i in np.asarray(tokens).ravel())


def split_corpus(text: str, fractions: tuple = (0.8, 0.1, 0.1)) -> Corpus:
  """``text`` as token ids, cut into contiguous train / validation / test blocks.

  Args:
    text: the corpus.
    fractions: the three blocks' shares of the text, in order, summing to 1;
      each block is rounded down to whole characters and the test block takes
      the rest.

  Returns:
    A :class:`Corpus`; the vocabulary is the text's distinct characters.

  Raises:
    ValueError: on fractions that are not three positive numbers summing to 1.

  Examples:
    >>> c = split_corpus("abcdefghij", (0.6, 0.2, 0.2))
    >>> c.decode(c.train), c.decode(c.val), c.decode(c.test)
    ('abcdef', 'gh', 'ij')
  """
  if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
    raise ValueError(f"fractions must be 3 positive shares summing to 1; got {fractions}.")
  vocab = "".join(sorted(set(text)))
  lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
  lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
  tokens = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
  a = int(len(text) * fractions[0])
  b = a + int(len(text) * fractions[1])
  return Corpus(vocab, tokens[:a], tokens[a:b], tokens[b:])


def pydoc_text() -> str:
  """The ``pydoc_data.topics`` texts, joined in sorted topic order."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  return "".join(topics.topics[k] for k in sorted(topics.topics))


def pydoc_corpus(fractions: tuple = (0.8, 0.1, 0.1)) -> Corpus:
  """:func:`split_corpus` of :func:`pydoc_text` (it depends on the Python version)."""
  return split_corpus(pydoc_text(), fractions)


def windows(block: jax.Array, starts: jax.Array, context: int) -> tuple[jax.Array, jax.Array]:
  """Inputs ``block[s : s + context]`` and next-character targets ``block[s + 1 : s + context + 1]``.

  Args:
    block: token ids ``[n]``.
    starts: window offsets, any shape, each in ``[0, n - context - 1]``.
    context: the window length.

  Returns:
    ``(inputs, targets)``, each of shape ``starts.shape + (context,)``.

  Examples:
    >>> x, y = windows(jnp.arange(10), jnp.array([0, 5]), 3)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
  """
  idx = starts[..., None] + jnp.arange(context)
  return block[idx], block[idx + 1]


def random_starts(key: jax.Array, n: int, context: int, shape: tuple) -> jax.Array:
  """Uniform window offsets in ``[0, n - context - 1]`` (every window fits)."""
  if n < context + 1:
    raise ValueError(f"A block of {n} tokens has no window of {context} + 1.")
  return jax.random.randint(key, shape, 0, n - context, jnp.int32)


def tiling_starts(n: int, context: int, max_windows: Optional[int] = None) -> np.ndarray:
  """Offsets of non-overlapping windows covering a block of ``n`` tokens.

  With ``max_windows``, an evenly spaced subset of them.

  Examples:
    >>> tiling_starts(10, 3).tolist()
    [0, 3, 6]
  """
  starts = np.arange(0, n - context, context, dtype=np.int32)
  if max_windows is not None and len(starts) > max_windows:
    starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
  return starts
