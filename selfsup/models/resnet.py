"""ResNet50 v1 / v2 / v2 (-) and ResNet18, with the widening factor k.

Section 3.1 of the paper with the width parametrisation of Wide ResNets: the
7x7 root convolution has 16k channels, the four blocks have (3, 4, 6, 3)
bottleneck units whose outputs have 64k, 128k, 256k and 512k channels, and the
pre-logits (global average pooling) have 512k features.

Like the authors' code, v1 puts the stride in the 3x3 convolution ("v1.5"; same
parameter count as v1) and v2 is pre-activation with a final batch norm (and
ReLU, unless `last_relu=False`: the paper's "(-)" variants). ResNet18
(supplementary section 3) uses two 3x3 convolutions per unit and has 128k
pre-logits; `skip_connections=False` removes every shortcut for the ablation.
"""
import keras

from selfsup.models import base
from selfsup.core.checks import ConfigError

_UNITS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}
# Output channels of block1 as a multiple of the root's 16k.
_EXPANSION = {18: 1, 50: 4}
STANDARD_STRIDES = (2, 2, 2)
# Jigsaw and Relative Patch Location run on 64x64 patches: the authors keep more
# resolution with a stride-1 root convolution and no stride in block4.
PATCH_STRIDES = (2, 2, 1)


def _unit(layers, x, filters, *, strides, version, bottleneck, skip, name):
  """One residual unit; `filters` is the unit's output channel count."""
  in_channels = x.shape[-1]
  project = strides > 1 or in_channels != filters
  inner = filters // 4 if bottleneck else filters

  # The identity path carries the unit's input (He et al.'s v2 and the
  # authors' `bottleneck_v2` alike); only a projection reads the v2
  # pre-activated tensor.
  shortcut = x
  if version == "v2":
    x = layers.bn_relu(x, f"{name}_preact")
  if project and skip:
    shortcut = layers.conv(x if version == "v2" else shortcut, filters, 1,
                           strides=strides, name=f"{name}_proj")
    if version == "v1":
      shortcut = layers.bn(shortcut, f"{name}_proj_bn")

  if bottleneck:
    specs = [(inner, 1, 1), (inner, 3, strides), (filters, 1, 1)]
  else:
    specs = [(inner, 3, strides), (filters, 3, 1)]
  for i, (channels, kernel, stride) in enumerate(specs, 1):
    if version == "v2" and i > 1:
      x = layers.bn_relu(x, f"{name}_bn{i - 1}")
    x = layers.conv(x, channels, kernel, strides=stride, name=f"{name}_conv{i}")
    if version == "v1":
      if i < len(specs):
        x = layers.bn_relu(x, f"{name}_bn{i}")
      else:
        x = layers.bn(x, f"{name}_bn{i}")

  if skip:
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
  if version == "v1":
    x = keras.layers.ReLU(name=f"{name}_out")(x)
  return x


@keras.saving.register_keras_serializable(package="selfsup")
class ResNet(base.Backbone):
  """ResNet backbone; outputs a dict of named endpoints.

  Args:
    depth: 50 (bottleneck units) or 18 (basic units).
    version: "v1" (post-activation, stride in the 3x3 conv) or "v2"
      (pre-activation).
    width: widening factor k (root convolution has 16k channels).
    last_relu: v2 only; False drops the ReLU before the global pooling, the
      paper's "(-)" variant.
    skip_connections: False removes all shortcuts (supplementary section 3).
    patch: the patch variant (root conv stride 1, block strides (2, 2, 1)).
    representation_size: optional linear layer after pooling (section 4.6).
    num_classes: optional logits layer.
    weight_decay: L2 decay on kernels (gradient weight_decay * w).
    sync_batch_norm: synchronise batch statistics across replicas.
    input_shape: (H, W, C); H and W may be None.
    kernel_initializer: of every convolution ("glorot_uniform", tf.layers'
      default, as the authors' code; "he_normal" as He et al.).
    batch_norm: "fused" (TensorFlow's fused kernel in training, the default)
      or "keras" (keras.layers.BatchNormalization); see
      `selfsup.models.norm`.
    bn_momentum: momentum of every batch norm's moving statistics.
    bn_group_size: None (batch-norm statistics over each replica's batch) or
      the number of consecutive examples normalised together in training, so
      that results do not depend on the device count ("ghost" batch norm;
      `selfsup.models.norm.GroupedBatchNormalization`).
  """

  def __init__(self, depth=50, version="v2", width=4, last_relu=True,
               skip_connections=True, patch=False, representation_size=None,
               num_classes=None, weight_decay=1e-4, sync_batch_norm=False,
               input_shape=(None, None, 3), bn_momentum=0.99,
               kernel_initializer=base.DEFAULT_KERNEL_INITIALIZER,
               batch_norm="fused", bn_group_size=None, name=None, **kwargs):
    base.check_choice("depth", depth, tuple(_UNITS))
    base.check_choice("version", version, ("v1", "v2"))
    root_channels = base.check_width(width)
    if version == "v1" and not last_relu:
      raise ConfigError("last_relu=False is not valid with version='v1': a v1 "
                        "unit always ends in a ReLU; use version='v2'.")
    config = dict(depth=depth, version=version, last_relu=bool(last_relu),
                  skip_connections=bool(skip_connections),
                  **base.check_common(
                      width=width, patch=patch,
                      representation_size=representation_size,
                      num_classes=num_classes, weight_decay=weight_decay,
                      sync_batch_norm=sync_batch_norm,
                      input_shape=input_shape, min_size=8,
                      kernel_initializer=kernel_initializer,
                      batch_norm=batch_norm, bn_momentum=bn_momentum,
                      bn_group_size=bn_group_size))

    layers = base.Layers(weight_decay, sync_batch_norm, kernel_initializer,
                         config["batch_norm"], config["bn_momentum"],
                         config["bn_group_size"])
    inputs = keras.Input(shape=config["input_shape"], name="image")
    x = layers.conv(inputs, root_channels, 7, strides=1 if patch else 2,
                    name="root_conv")
    if version == "v1":
      x = layers.bn_relu(x, "root_bn")
    x = base.max_pool(x, pool_size=3, strides=2, name="root_pool")
    endpoints = {"after_root": x}

    strides = (1,) + (PATCH_STRIDES if patch else STANDARD_STRIDES)
    filters = root_channels * _EXPANSION[depth]
    for b, (units, stride) in enumerate(zip(_UNITS[depth], strides), 1):
      for u in range(units):
        x = _unit(layers, x, filters, strides=stride if u == 0 else 1,
                  version=version, bottleneck=depth == 50,
                  skip=skip_connections, name=f"block{b}_unit{u + 1}")
      endpoints[f"block{b}"] = x
      filters *= 2

    if version == "v2":
      x = layers.bn(x, "final_bn")
      if last_relu:
        x = keras.layers.ReLU(name="final_relu")(x)
    base.add_head(endpoints, x,
                  representation_size=config["representation_size"],
                  num_classes=config["num_classes"], weight_decay=weight_decay)
    self._init_functional(inputs, endpoints, config, name or
                          f"resnet{depth}_{version}", **kwargs)
