"""RevNet50 and RevNet50 (-): ResNet50's layout with reversible units.

The paper's unit (section 3.1): the input is split channel-wise into x1 and
x2, y1 = x1 + F(x2), y2 = x2, and the output is concat(y2, y1) (the halves swap
so that the next unit transforms the other half). F is a pre-activation
bottleneck without shortcut on half of the channels. Its inverse is closed
form: x2 = y2, x1 = y1 - F(x2).

As in the authors' code, the root convolution projects straight to the 64k
channels of block1 (no batch norm, no weight decay: it acts as a fixed-size
random projection), and between blocks the map is average-pooled and its
channels doubled by zero padding, so the channel counts match ResNet50's
(64k, 128k, 256k, 512k).
"""
import keras
from keras import ops

from selfsup.models import base, norm
from selfsup.models.resnet import PATCH_STRIDES, STANDARD_STRIDES
from selfsup.core.checks import ConfigError

_UNITS = (3, 4, 6, 3)


@keras.saving.register_keras_serializable(package="selfsup")
class RevUnit(keras.layers.Layer):
  """Reversible unit y = concat(x2, x1 + F(x2)) with an exact `inverse`.

  Its three batch norms are of kind `batch_norm` ("fused" or "keras") with
  momentum `bn_momentum` and groups of `bn_group_size` examples, as the
  backbone's others (`selfsup.models.norm`).
  """

  def __init__(self, weight_decay=1e-4, sync_batch_norm=False,
               kernel_initializer=base.DEFAULT_KERNEL_INITIALIZER,
               batch_norm=norm.DEFAULT_KIND,
               bn_momentum=norm.DEFAULT_MOMENTUM, bn_group_size=None,
               **kwargs):
    super().__init__(**kwargs)
    self.weight_decay = weight_decay
    self.sync_batch_norm = sync_batch_norm
    self.kernel_initializer = kernel_initializer
    self.batch_norm = norm.check_kind(batch_norm)
    self.bn_momentum = norm.check_momentum(bn_momentum)
    self.bn_group_size = norm.check_group_size(bn_group_size,
                                               synchronized=sync_batch_norm)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels % 8:
      raise ConfigError(f"RevUnit {self.name!r} needs a channel count divisible "
                        f"by 8, got input_shape={tuple(input_shape)!r}.")
    half, inner = channels // 2, channels // 8
    reg = base.l2(self.weight_decay)

    def bn(name):
      return norm.make(name, kind=self.batch_norm, momentum=self.bn_momentum,
                       synchronized=self.sync_batch_norm,
                       group_size=self.bn_group_size)

    def conv(filters, size, name):
      return keras.layers.Conv2D(filters, size, padding="same", use_bias=False,
                                 kernel_initializer=self.kernel_initializer,
                                 kernel_regularizer=reg, name=name)

    self.bn1, self.conv1 = bn("bn1"), conv(inner, 1, "conv1")
    self.bn2, self.conv2 = bn("bn2"), conv(inner, 3, "conv2")
    self.bn3, self.conv3 = bn("bn3"), conv(half, 1, "conv3")
    shape = tuple(input_shape[:-1])
    for bn_layer, cv, c_in in ((self.bn1, self.conv1, half),
                               (self.bn2, self.conv2, inner),
                               (self.bn3, self.conv3, inner)):
      bn_layer.build(shape + (c_in,))
      cv.build(shape + (c_in,))
    super().build(input_shape)

  def residual(self, x, training=None):
    """F: pre-activation bottleneck on half of the channels."""
    for bn_layer, cv in ((self.bn1, self.conv1), (self.bn2, self.conv2),
                         (self.bn3, self.conv3)):
      x = cv(ops.relu(bn_layer(x, training=training)))
    return x

  def call(self, x, training=None):
    x1, x2 = ops.split(x, 2, axis=-1)
    y1 = x1 + self.residual(x2, training=training)
    return ops.concatenate([x2, y1], axis=-1)

  def inverse(self, y, training=False):
    """Reconstructs the unit's input from its output (exact in inference)."""
    x2, y1 = ops.split(y, 2, axis=-1)
    x1 = y1 - self.residual(x2, training=training)
    return ops.concatenate([x1, x2], axis=-1)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "weight_decay": self.weight_decay,
            "sync_batch_norm": self.sync_batch_norm,
            "kernel_initializer": self.kernel_initializer,
            "batch_norm": self.batch_norm, "bn_momentum": self.bn_momentum,
            "bn_group_size": self.bn_group_size}


@keras.saving.register_keras_serializable(package="selfsup")
class ChannelPad(keras.layers.Layer):
  """Doubles the channels with zeros, half before and half after."""

  def call(self, x):
    half = x.shape[-1] // 2
    return ops.pad(x, [[0, 0], [0, 0], [0, 0], [half, half]])

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (2 * input_shape[-1],)


@keras.saving.register_keras_serializable(package="selfsup")
class RevNet(base.Backbone):
  """RevNet50 backbone; outputs a dict of named endpoints.

  Args: as `selfsup.models.resnet.ResNet` (no depth, version or
  skip_connections: the unit is fixed); `batch_norm`, `bn_momentum` and
  `bn_group_size` reach the reversible units' batch norms too. `last_relu=False` is the paper's
  "RevNet50 (-)". `width` must make 16k even (channels split in halves).
  """

  def __init__(self, width=4, last_relu=True, patch=False,
               representation_size=None, num_classes=None, weight_decay=1e-4,
               sync_batch_norm=False, input_shape=(None, None, 3),
               bn_momentum=0.99,
               kernel_initializer=base.DEFAULT_KERNEL_INITIALIZER,
               batch_norm="fused", bn_group_size=None, name=None, **kwargs):
    root_channels = base.check_width(width, multiple_of=2)
    config = dict(last_relu=bool(last_relu), **base.check_common(
        width=width, patch=patch, representation_size=representation_size,
        num_classes=num_classes, weight_decay=weight_decay,
        sync_batch_norm=sync_batch_norm, input_shape=input_shape,
        min_size=8, kernel_initializer=kernel_initializer,
        batch_norm=batch_norm, bn_momentum=bn_momentum,
        bn_group_size=bn_group_size))
    bn_args = dict(sync_batch_norm=sync_batch_norm,
                   kernel_initializer=kernel_initializer,
                   batch_norm=config["batch_norm"],
                   bn_momentum=config["bn_momentum"],
                   bn_group_size=config["bn_group_size"])

    layers = base.Layers(weight_decay=None, **bn_args)
    inputs = keras.Input(shape=config["input_shape"], name="image")
    x = layers.conv(inputs, 4 * root_channels, 7, strides=1 if patch else 2,
                    name="root_conv")
    x = base.max_pool(x, pool_size=3, strides=2, name="root_pool")
    endpoints = {"after_root": x}

    strides = PATCH_STRIDES if patch else STANDARD_STRIDES
    unit_names = []
    for b, units in enumerate(_UNITS, 1):
      if b > 1:
        stride = strides[b - 2]
        if stride > 1:
          x = keras.layers.AveragePooling2D(
              stride, strides=stride, padding="same",
              name=f"transition{b}_pool")(x)
        x = ChannelPad(name=f"transition{b}_pad")(x)
      names = [f"block{b}_unit{u + 1}" for u in range(units)]
      for unit_name in names:
        x = RevUnit(weight_decay, name=unit_name, **bn_args)(x)
      unit_names.append(names)
      endpoints[f"block{b}"] = x

    x = layers.bn(x, "final_bn")
    if last_relu:
      x = keras.layers.ReLU(name="final_relu")(x)
    base.add_head(endpoints, x,
                  representation_size=config["representation_size"],
                  num_classes=config["num_classes"], weight_decay=weight_decay)
    self._init_functional(inputs, endpoints, config, name or "revnet50",
                          **kwargs)
    self._unit_names = unit_names

  def block_units(self, block):
    """The RevUnit layers of block `block` (1..4), in forward order."""
    if block not in (1, 2, 3, 4):
      raise ConfigError(f"block={block!r} is not valid: expected one of "
                        "(1, 2, 3, 4).")
    return [self.get_layer(n) for n in self._unit_names[block - 1]]

  def inverse_block(self, block, y, training=False):
    """Inverts all units of a block: from its output to its input.

    For block1 the input is the `after_root` endpoint; for later blocks it is
    the previous block's output after average pooling and channel padding
    (those transitions are not invertible, the units are).
    """
    for unit in reversed(self.block_units(block)):
      y = unit.inverse(y, training=training)
    return y
