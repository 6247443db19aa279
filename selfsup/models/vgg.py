"""VGG19 with batch normalisation and the widening factor k (section 3.1).

Five blocks of (2, 2, 4, 4, 4) 3x3 convolutions (conv, batch norm, ReLU) with
8k, 16k, 32k, 64k, 64k channels, each followed by 2x2 max-pooling, then two
fully connected layers of 512k channels written as convolutions (the first
spans the whole remaining map, the second is 1x1), each with batch norm and
ReLU and without dropout. k = 8 is the original VGG19.

Endpoints follow the paper, not the authors' code: block1..block4 are the
inputs of the 2nd..5th max-pooling and pre_logits the input of the last fully
connected layer (the logits). `after_root` is the output of the first
max-pooling (the first block plays the role of a root).

The patch variant of the ResNets has no counterpart here: the authors ran the
same VGG on 64x64 patches, so `patch=True` is accepted and changes nothing.
"""
import keras

from selfsup.models import base

_CONVS = (2, 2, 4, 4, 4)
_MULTIPLIERS = (1, 2, 4, 8, 8)


@keras.saving.register_keras_serializable(package="selfsup")
class VGG(base.Backbone):
  """VGG19-BN backbone; outputs a dict of named endpoints.

  Args: as `selfsup.models.resnet.ResNet` (no depth, version, last_relu or
  skip_connections). `input_shape` needs a known height and width >= 32: the
  first fully connected layer's kernel covers the map left after 5 poolings.
  """

  fixed_input_size = True

  def __init__(self, width=8, patch=False, representation_size=None,
               num_classes=None, weight_decay=1e-4, sync_batch_norm=False,
               input_shape=(224, 224, 3), bn_momentum=0.99,
               kernel_initializer=base.DEFAULT_KERNEL_INITIALIZER,
               batch_norm="fused", bn_group_size=None, name=None, **kwargs):
    base_channels = base.check_width(width, multiple_of=2) // 2
    config = base.check_common(
        width=width, patch=patch, representation_size=representation_size,
        num_classes=num_classes, weight_decay=weight_decay,
        sync_batch_norm=sync_batch_norm, input_shape=input_shape,
        min_size=32, need_static=self.fixed_input_size,
        kernel_initializer=kernel_initializer,
        batch_norm=batch_norm, bn_momentum=bn_momentum,
        bn_group_size=bn_group_size)

    layers = base.Layers(weight_decay, sync_batch_norm, kernel_initializer,
                         config["batch_norm"], config["bn_momentum"],
                         config["bn_group_size"])
    inputs = keras.Input(shape=config["input_shape"], name="image")
    x = inputs
    endpoints = {}
    for b, (convs, mult) in enumerate(zip(_CONVS, _MULTIPLIERS)):
      for c in range(convs):
        name = f"conv{b + 1}_{c + 1}"
        x = layers.bn_relu(layers.conv(x, base_channels * mult, 3, name=name),
                           f"{name}_bn")
      if b > 0:
        endpoints[f"block{b}"] = x
      x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{b + 1}")(x)
      if b == 0:
        endpoints["after_root"] = x

    fc_channels = 64 * base_channels  # 512k
    kernel = (x.shape[1], x.shape[2])
    x = keras.layers.Conv2D(
        fc_channels, kernel, padding="valid", use_bias=False,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=base.l2(weight_decay), name="fc6")(x)
    x = layers.bn_relu(x, "fc6_bn")
    x = layers.bn_relu(layers.conv(x, fc_channels, 1, name="fc7"), "fc7_bn")
    x = keras.layers.Flatten(name="fc7_flatten")(x)
    base.add_head(endpoints, x,
                  representation_size=config["representation_size"],
                  num_classes=config["num_classes"], weight_decay=weight_decay,
                  pool=False)
    self._init_functional(inputs, endpoints, config, name or "vgg19_bn",
                          **kwargs)
