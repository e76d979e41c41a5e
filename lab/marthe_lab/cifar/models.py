# Copyright 2026 The marthe-optax Authors. Licensed under the Apache License 2.0.
"""VGG-11 with BatchNorm and the CIFAR ResNet-18, in Flax NNX.

The CIFAR variants used by the paper's section 6 (as in the common PyTorch
CIFAR code): 3x3 convolutions on 32x32 inputs, no input downsampling.

* :class:`VGG11` (``vgg11``): convolutions of widths
  64-M-128-M-256-256-M-512-512-M-512-512-M (M a 2x2 max-pool), each followed
  by BatchNorm and ReLU, then one linear classifier on the 512 features.
* :class:`ResNet18` (``resnet18``): a 3x3 stem of width 64, four stages of
  two basic blocks (widths 64, 128, 256, 512; stride 2 at the start of the last
  three, with a 1x1 projection shortcut), global average pooling, linear.

BatchNorm uses PyTorch's default running-average momentum 0.1 (Flax
``momentum=0.9``) and epsilon 1e-5. The ``width`` argument scales every
channel count, for the small CPU presets. Both models take
``__call__(x, *, train)``: ``train=True`` normalises with the batch
statistics and updates the running averages, ``train=False`` uses them.
"""

import functools
from typing import Sequence, Union

from flax import nnx
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1
VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
# A three-convolution VGG for smoke tests: compiles in a fraction of the time.
VGG_MINI_CONFIG = (64, "M", 128, "M", 256, "M")


def _width(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(features, momentum=BN_MOMENTUM, epsilon=1e-5, rngs=rngs)


class VGG11(nnx.Module):
  """VGG-11 with BatchNorm, for 32x32 inputs.

  Args:
    num_classes: the number of logits.
    width: a multiplier of every channel count (1.0 is the paper's model).
    rngs: the ``nnx.Rngs`` for initialisation.
    config: the layer widths (``'M'`` is a max-pool); the default is VGG-11.
      The classifier reads the flattened features of a 32x32 input.
  """

  def __init__(
    self,
    num_classes: int = 10,
    *,
    width: float = 1.0,
    rngs: nnx.Rngs,
    config: Sequence[Union[int, str]] = VGG11_CONFIG,
  ):
    convs, norms = [], []
    in_features = 3
    for c in config:
      if c == "M":
        continue
      out = _width(c, width)
      convs.append(nnx.Conv(in_features, out, (3, 3), padding=1, rngs=rngs))
      norms.append(_bn(out, rngs))
      in_features = out
    self.config = tuple(config)
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    side = 32 // 2 ** sum(c == "M" for c in config)
    self.classifier = nnx.Linear(in_features * side * side, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    i = 0
    for c in self.config:
      if c == "M":
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = self.norms[i](self.convs[i](x), use_running_average=not train)
        x = jax.nn.relu(x)
        i += 1
    return self.classifier(x.reshape(x.shape[0], -1))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with BatchNorm and a (projection) shortcut."""

  def __init__(self, in_features: int, features: int, stride: int, *, rngs):
    self.conv1 = nnx.Conv(
      in_features,
      features,
      (3, 3),
      strides=stride,
      padding=1,
      use_bias=False,
      rngs=rngs,
    )
    self.bn1 = _bn(features, rngs)
    self.conv2 = nnx.Conv(features, features, (3, 3), padding=1, use_bias=False, rngs=rngs)
    self.bn2 = _bn(features, rngs)
    if stride != 1 or in_features != features:
      self.proj = nnx.Conv(
        in_features,
        features,
        (1, 1),
        strides=stride,
        use_bias=False,
        rngs=rngs,
      )
      self.proj_bn = _bn(features, rngs)
    else:
      self.proj = nnx.data(None)
      self.proj_bn = nnx.data(None)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    if self.proj is not None:
      x = self.proj_bn(self.proj(x), use_running_average=ura)
    return jax.nn.relu(x + y)


class ResNet18(nnx.Module):
  """The CIFAR ResNet-18 (He et al., 2016, with a 3x3 stem and no max-pool).

  Args:
    num_classes: the number of logits.
    width: a multiplier of every channel count (1.0 is the paper's model).
    rngs: the ``nnx.Rngs`` for initialisation.
  """

  def __init__(self, num_classes: int = 100, *, width: float = 1.0, rngs):
    w = lambda c: _width(c, width)
    self.stem = nnx.Conv(3, w(64), (3, 3), padding=1, use_bias=False, rngs=rngs)
    self.stem_bn = _bn(w(64), rngs)
    blocks = []
    in_features = w(64)
    for features, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      for s in (stride, 1):
        blocks.append(BasicBlock(in_features, w(features), s, rngs=rngs))
        in_features = w(features)
    self.blocks = nnx.List(blocks)
    self.classifier = nnx.Linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = jax.nn.relu(self.stem_bn(self.stem(x), use_running_average=not train))
    for block in self.blocks:
      x = block(x, train=train)
    return self.classifier(jnp.mean(x, axis=(1, 2)))


MODELS = {
  "vgg11": VGG11,
  "resnet18": ResNet18,
  "vgg-mini": functools.partial(VGG11, config=VGG_MINI_CONFIG),
}


def make(name: str, num_classes: int, width: float = 1.0, seed: int = 0):
  """A model by name, initialised from ``seed``.

  Args:
    name: ``'vgg11'``, ``'resnet18'``, or ``'vgg-mini'`` (three convolutions,
      for smoke tests).
    num_classes: the number of logits.
    width: the channel multiplier.
    seed: the initialisation seed.

  Returns:
    The NNX model.
  """
  if name not in MODELS:
    raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}.")
  return MODELS[name](num_classes, width=width, rngs=nnx.Rngs(seed))
