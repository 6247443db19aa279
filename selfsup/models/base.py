"""Shared pieces of every backbone: argument checks, layers, the head, config.

A backbone is a functional `keras.Model` (built in `__init__`, keras-hub style)
mapping images to a dict of named endpoints. Subclasses build the trunk; this
module adds pooling, the optional representation layer of section 4.6 and the
optional logits layer, and implements `get_config`/`from_config` from the
constructor arguments.
"""
import numbers

import keras

from selfsup.core import precision
from selfsup.models import norm
# The fused layer lives with the rest of batch norm (norm.py); this name stays.
from selfsup.models.norm import BatchNormalization  # pylint: disable=unused-import
from selfsup.core.checks import ConfigError

ENDPOINTS = ("after_root", "block1", "block2", "block3", "block4",
             "pre_logits", "logits")


def l2(weight_decay):
  """Kernel regulariser matching the paper's weight decay.

  The authors used `tf.contrib.layers.l2_regularizer(scale)`, which adds
  scale * sum(w**2) / 2, so that the gradient is scale * w. Keras' L2(f) adds
  f * sum(w**2): f = scale / 2 keeps the same decay.
  """
  if not weight_decay:
    return None
  return keras.regularizers.L2(weight_decay / 2.0)


def check_width(width, *, multiple_of=1):
  """Widths are scaled so that 16 * width channels is a positive integer."""
  ok = (isinstance(width, numbers.Real) and not isinstance(width, bool)
        and width > 0)
  if ok:
    root = 16 * width
    ok = abs(root - round(root)) < 1e-9 and round(root) % multiple_of == 0
  if not ok:
    raise ConfigError(
        f"width={width!r} is not a valid widening factor: expected a positive "
        f"number k such that 16*k is an integer multiple of {multiple_of} "
        f"(the paper uses k in (4, 8, 12, 16); tests use e.g. 0.25 or 1).")
  return int(round(16 * width))


def check_input_shape(input_shape, *, min_size, need_static=False):
  """Checks an (H, W, C) input shape and returns it as a tuple."""
  expected = ("(height, width, channels) with height/width None or >= "
              f"{min_size}{' (both known)' if need_static else ''} and "
              "channels a positive integer, e.g. (224, 224, 3) or (None, None, 3)")
  try:
    shape = tuple(input_shape)
  except TypeError:
    shape = None
  if shape is None or len(shape) != 3:
    raise ConfigError(f"input_shape={input_shape!r} is not valid: expected "
                      f"{expected}.")
  h, w, c = shape
  for dim in (h, w):
    if dim is None and not need_static:
      continue
    if not isinstance(dim, numbers.Integral) or dim < min_size:
      raise ConfigError(f"input_shape={input_shape!r} is not valid: expected "
                        f"{expected}.")
  if not isinstance(c, numbers.Integral) or c < 1:
    raise ConfigError(f"input_shape={input_shape!r} is not valid: expected "
                      f"{expected}.")
  return shape


def check_optional_positive_int(name, value):
  if value is None:
    return None
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < 1):
    raise ConfigError(f"{name}={value!r} is not valid: expected None or a "
                      "positive integer.")
  return int(value)


def check_choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f"{name}={value!r} is not valid: expected one of "
                      f"{tuple(choices)}.")
  return value


# tf.layers' default (glorot_uniform), which the authors' code kept; the
# paper does not say. "he_normal" is He et al.'s (docs/paper_vs_code.md).
DEFAULT_KERNEL_INITIALIZER = "glorot_uniform"


def check_initializer(kernel_initializer):
  """A Keras initializer name (or config dict) for the trunk's kernels."""
  try:
    keras.initializers.get(kernel_initializer)
  except (ValueError, TypeError) as err:
    raise ConfigError(
        f"kernel_initializer={kernel_initializer!r} is not valid: expected a "
        "Keras initializer name such as 'glorot_uniform' (the authors' code) "
        f"or 'he_normal' ({err}).") from None
  return kernel_initializer


def check_common(*, width, patch, representation_size, num_classes,
                 weight_decay, sync_batch_norm, input_shape, min_size,
                 kernel_initializer=DEFAULT_KERNEL_INITIALIZER,
                 batch_norm=norm.DEFAULT_KIND,
                 bn_momentum=norm.DEFAULT_MOMENTUM, need_static=False,
                 bn_group_size=None):
  """Checks the arguments every backbone takes; returns them as config."""
  return dict(
      width=width, patch=bool(patch),
      kernel_initializer=check_initializer(kernel_initializer),
      representation_size=check_optional_positive_int(
          "representation_size", representation_size),
      num_classes=check_optional_positive_int("num_classes", num_classes),
      weight_decay=weight_decay, sync_batch_norm=bool(sync_batch_norm),
      input_shape=tuple(check_input_shape(input_shape, min_size=min_size,
                                          need_static=need_static)),
      batch_norm=norm.check_kind(batch_norm),
      bn_momentum=norm.check_momentum(bn_momentum),
      bn_group_size=norm.check_group_size(bn_group_size,
                                          synchronized=sync_batch_norm))


class Layers:
  """Makes the trunk's layers with one weight decay and one batch norm.

  Args:
    weight_decay: L2 decay on every kernel (see `l2`).
    sync_batch_norm: synchronise batch statistics across replicas, so that the
      moving statistics agree on every replica after training.
    kernel_initializer: initializer of every convolution kernel.
    batch_norm: "fused" or "keras" (see `selfsup.models.norm`).
    bn_momentum: momentum of every batch norm's moving statistics.
    bn_group_size: None, or the examples per batch-norm group in training
      (`selfsup.models.norm.GroupedBatchNormalization`).
  """

  def __init__(self, weight_decay, sync_batch_norm=False,
               kernel_initializer=DEFAULT_KERNEL_INITIALIZER,
               batch_norm=norm.DEFAULT_KIND,
               bn_momentum=norm.DEFAULT_MOMENTUM, bn_group_size=None):
    self.weight_decay = weight_decay
    self.sync_batch_norm = sync_batch_norm
    self.kernel_initializer = kernel_initializer
    self.batch_norm = batch_norm
    self.bn_momentum = bn_momentum
    self.bn_group_size = bn_group_size

  def conv(self, x, filters, kernel_size, *, name, strides=1, use_bias=False):
    """Convolution with the authors' fixed padding for strided layers.

    Keras' 'same' padding puts the extra pixel at the end for even inputs; the
    reference ResNet pads (k-1)//2 before and the rest after, then uses
    'valid'. For stride 1 the two are identical.
    """
    if strides > 1 and kernel_size > 1:
      total = kernel_size - 1
      begin = total // 2
      pad = ((begin, total - begin), (begin, total - begin))
      x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
      padding = "valid"
    else:
      padding = "same"
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding,
        use_bias=use_bias, kernel_initializer=self.kernel_initializer,
        kernel_regularizer=l2(self.weight_decay), name=name)(x)

  def bn(self, x, name):
    return norm.make(name, kind=self.batch_norm, momentum=self.bn_momentum,
                     synchronized=self.sync_batch_norm,
                     group_size=self.bn_group_size)(x)

  def bn_relu(self, x, name):
    return keras.layers.ReLU(name=f"{name}_relu")(self.bn(x, name))


def max_pool(x, *, pool_size, strides, name):
  """Max-pooling with the same fixed zero padding as `conv` (as the authors)."""
  total = pool_size - 1
  if total:
    begin = total // 2
    pad = ((begin, total - begin), (begin, total - begin))
    x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
  return keras.layers.MaxPooling2D(pool_size, strides=strides, padding="valid",
                                   name=name)(x)


def add_head(endpoints, features, *, representation_size, num_classes,
             weight_decay, pool=True):
  """Pools `features`, then the optional representation and logits layers.

  Args:
    endpoints: dict to add `pre_logits` (and `logits`) to.
    features: the last feature map [B, H, W, C] (or already pooled [B, C]).
    representation_size: if set, a linear layer (section 4.6) maps the pooled
      features to this size, decoupling representation size from width.
    num_classes: if set, a `logits` layer with bias.
    weight_decay: L2 decay for the new kernels.
    pool: whether `features` still needs global average pooling.
  """
  x = features
  if pool:
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
  if representation_size:
    x = keras.layers.Dense(
        representation_size, kernel_regularizer=l2(weight_decay),
        name="representation")(x)
  endpoints["pre_logits"] = x
  if num_classes:
    # Logits in float32 even under a bfloat16 policy: the losses need it.
    endpoints["logits"] = keras.layers.Dense(
        num_classes, kernel_regularizer=l2(weight_decay), dtype="float32",
        name="logits")(x)
  return endpoints


class Backbone(keras.Model):
  """Base class: a functional model whose output is a dict of endpoints.

  Subclasses call `self._init_functional(inputs, endpoints, config, name)` at
  the end of their constructor, with `config` holding every constructor
  argument so that `get_config`/`from_config` round-trip.

  `fixed_input_size` says whether the backbone needs a known input height and
  width (`input_shape` with no None), so that callers pass the image size.
  """

  fixed_input_size = False

  def _init_functional(self, inputs, endpoints, config, name, **kwargs):
    ordered = {k: endpoints[k] for k in ENDPOINTS if k in endpoints}
    super().__init__(inputs=inputs, outputs=ordered, name=name, **kwargs)
    self._selfsup_config = dict(config)
    # The layers took the global policy in force while they were made; the
    # config must carry it, or a model saved under mixed_bfloat16 reloads
    # under whatever policy the loading process has.
    self._selfsup_dtype = keras.config.dtype_policy().name

  @property
  def endpoint_names(self):
    return tuple(self.output.keys())

  def get_config(self):
    return {"name": self.name, "trainable": self.trainable,
            "dtype": self._selfsup_dtype, **self._selfsup_config}

  @classmethod
  def from_config(cls, config):
    """Rebuilds the backbone under the dtype policy it was made with
    (configs written before the policy was recorded: the current one)."""
    config = dict(config)
    trainable = config.pop("trainable", True)
    dtype = config.pop("dtype", None)
    if isinstance(dtype, dict):  # a serialized DTypePolicy
      dtype = keras.dtype_policies.deserialize(dtype).name
    with precision.dtype_policy(dtype or keras.config.dtype_policy().name):
      model = cls(**config)
    model.trainable = trainable
    return model
