"""Batch norm of the backbones: its kind, its momentum, the fused layer.

Every backbone takes `batch_norm` and `bn_momentum` as constructor arguments,
stores them in its config and builds every batch norm (RevNet's reversible
units included) through `make`:

* `batch_norm="fused"` (default): `BatchNormalization` below, Keras' layer
  computed by TensorFlow's fused kernel in training (same variables and
  arithmetic, to float rounding; 1.6-2x faster training steps on CPU,
  docs/performance.md). `"keras"`: Keras' own layer
  (benchmarks/train_step.py --nofused_bn measures both). Synchronised batch
  norm is always Keras' layer: the fused kernel sees one replica's batch.
* `bn_momentum`: how fast the moving statistics follow the batches. 0.99
  (Keras' and the authors' default) suits long runs. A run of a few hundred
  steps leaves the moving statistics far behind the weights (the digits demo:
  0.70 training-mode accuracy, 0.10 in inference mode), so short runs want
  e.g. 0.9.
* `bn_group_size` ("ghost" batch norm): in training, normalise each group of
  this many consecutive examples of a replica's batch with the group's own
  statistics, so the statistics do not depend on how many devices share the
  batch (the authors normalised per TPU core: 32 rotated copies for Rotation,
  288 patches for Jigsaw; docs/paper_vs_code.md). None (default) normalises
  the whole replica batch, as before. `GroupedBatchNormalization` below.
"""
import numbers

import keras

from selfsup.core.checks import ConfigError

DEFAULT_MOMENTUM = 0.99
KINDS = ("fused", "keras")
DEFAULT_KIND = "fused"


def check_momentum(momentum):
  if (not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
      or not 0.0 <= momentum < 1.0):
    raise ConfigError(f"bn_momentum={momentum!r} is not valid: expected a "
                      "number in [0, 1), e.g. 0.99 (long runs) or 0.9 (short).")
  return float(momentum)


def check_kind(batch_norm):
  if not isinstance(batch_norm, str) or batch_norm not in KINDS:
    raise ConfigError(
        f"batch_norm={batch_norm!r} is not valid: expected one of {KINDS} "
        "('fused': TensorFlow's fused kernel in training, the default; "
        "'keras': keras.layers.BatchNormalization).")
  return batch_norm


def check_group_size(group_size, *, synchronized=False):
  """None or a positive integer; groups and synchronisation exclude each
  other (one normalises less than a replica's batch, the other more)."""
  if group_size is None:
    return None
  if (not isinstance(group_size, numbers.Integral)
      or isinstance(group_size, bool) or group_size < 1):
    raise ConfigError(
        f"bn_group_size={group_size!r} is invalid: expected None (statistics "
        "over each replica's batch) or a positive integer, the examples per "
        "batch-norm group (e.g. 32 for Rotation: 8 images x 4 rotations).")
  if synchronized:
    raise ConfigError(
        f"bn_group_size={group_size!r} with sync_batch_norm=True is invalid: "
        "expected one of them (groups within a replica, or the global batch).")
  return int(group_size)


def make(name, *, kind=DEFAULT_KIND, momentum=DEFAULT_MOMENTUM,
         synchronized=False, group_size=None, epsilon=1e-3):
  """A batch-norm layer of `kind` (see the module docstring), not yet called.

  `group_size` (not None) gives a `GroupedBatchNormalization` whatever the
  kind; `epsilon` is Keras' default unless given (the authors' patch head
  uses 1e-5).
  """
  if group_size is not None:
    return GroupedBatchNormalization(group_size=group_size, momentum=momentum,
                                     epsilon=epsilon, name=name)
  if kind == "fused" and not synchronized:
    return BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)
  return keras.layers.BatchNormalization(
      momentum=momentum, epsilon=epsilon, synchronized=synchronized,
      name=name)


@keras.saving.register_keras_serializable(package="selfsup")
class BatchNormalization(keras.layers.BatchNormalization):
  """Keras' batch norm computed by TensorFlow's fused kernel where it can be.

  In training, same variables, same arithmetic (biased batch variance for
  normalisation and for the moving average, Keras' momentum update), but one
  FusedBatchNormV3 op forward and one backward (oneDNN on CPU, cuDNN on GPU)
  instead of Keras' moments + normalise graph, and no float32 round trip of
  bfloat16 activations under `mixed_bfloat16`. Falls back to Keras' code for
  inference, other backends, masks, renorm, synchronised statistics and
  non-4D inputs.
  benchmarks/train_step.py measures the difference (docs/performance.md).
  """

  def _fusable(self, inputs, mask):
    return (keras.backend.backend() == "tensorflow" and mask is None
            and not self.renorm and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype in ("float32", "bfloat16", "float16"))

  def call(self, inputs, training=None, mask=None):
    # Inference keeps Keras' arithmetic, so that exported models and served
    # SavedModels compute exactly what they did.
    if not (training and self.trainable and self._fusable(inputs, mask)):
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    channels = inputs.shape[-1]
    gamma = (tf.cast(self.gamma, tf.float32) if self.scale
             else tf.ones([channels], tf.float32))
    beta = (tf.cast(self.beta, tf.float32) if self.center
            else tf.zeros([channels], tf.float32))
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=gamma, offset=beta,
        mean=tf.constant([], tf.float32), variance=tf.constant([],
                                                               tf.float32),
        epsilon=self.epsilon, data_format="NHWC", is_training=True)
    # The kernel returns the unbiased variance; Keras averages the biased.
    shape = tf.shape(inputs)
    n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
    variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
    momentum = self.momentum
    self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum
                            + mean * (1.0 - momentum))
    self.moving_variance.assign(
        tf.cast(self.moving_variance, tf.float32) * momentum
        + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="selfsup")
class GroupedBatchNormalization(keras.layers.BatchNormalization):
  """Batch norm whose training statistics come from groups of examples.

  In training the replica's batch [N, ...] is cut into N / group_size
  consecutive groups and each is normalised with its own mean and biased
  variance over every axis but the last (channels). Tasks lay out their
  batches image-major (an image's rotations, copies or patches are
  consecutive), so a group holds whole images when group_size is a multiple
  of the copies per image. A replica holding fewer than `group_size`
  examples forms one group; a batch that is not a multiple of the group is
  refused (ConfigError).

  Moving statistics: mean <- momentum * mean + (1 - momentum) * m and the
  same for the variance, where m (v) is the mean over all groups of the
  global batch of the groups' means (biased variances). Each replica
  averages its groups and the replicas average theirs (one small all-reduce
  of 2 x channels values), so every replica holds the same moving statistics
  and 1, 2 or 8 replicas with the same groups update them identically.
  Inference uses the moving statistics, as any batch norm. Computed with
  Keras' arithmetic (moments in float32), not the fused kernel.
  """

  def __init__(self, group_size, **kwargs):
    super().__init__(**kwargs)
    self.group_size = check_group_size(group_size)
    if self.group_size is None:
      raise ConfigError("GroupedBatchNormalization needs a group_size: "
                        "expected a positive integer.")
    if self.axis not in (-1,) or self.renorm or self.synchronized:
      raise ConfigError(
          f"GroupedBatchNormalization {self.name!r} is invalid with "
          f"axis={self.axis!r}, renorm={self.renorm!r}, synchronized="
          f"{self.synchronized!r}: expected axis=-1, no renorm, not "
          "synchronized.")

  def call(self, inputs, training=None, mask=None):
    if not (training and self.trainable) or mask is not None:
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    x = tf.cast(inputs, tf.float32)
    groups = self._grouped(x)
    axes = list(range(1, len(groups.shape) - 1))
    mean, variance = tf.nn.moments(groups, axes=axes, keepdims=True)
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else None
    beta = tf.cast(self.beta, tf.float32) if self.center else None
    y = tf.nn.batch_normalization(groups, mean, variance, beta, gamma,
                                  self.epsilon)
    y = tf.reshape(y, tf.shape(x))
    y.set_shape(inputs.shape)
    self._update_moving(tf.reduce_mean(mean, axis=[0] + axes),
                        tf.reduce_mean(variance, axis=[0] + axes))
    return tf.cast(y, self.compute_dtype)

  def _grouped(self, x):
    """[N, ...] -> [N / g, g, ...] with g = min(group_size, N)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    n = x.shape[0]
    if n is not None:
      size = min(self.group_size, n)
      if n % size:
        raise ConfigError(
            f"bn_group_size={self.group_size} is invalid for a replica batch "
            f"of {n} examples in layer {self.name!r}: expected a group size "
            "that divides each replica's batch (or is larger than it).")
    else:
      n = tf.shape(x)[0]
      size = tf.minimum(self.group_size, n)
      tf.debugging.assert_equal(
          n % size, 0, message=f"bn_group_size={self.group_size} does not "
          f"divide the replica batch in layer {self.name!r}")
    return tf.reshape(x, tf.concat([[-1, size], tf.shape(x)[1:]], 0))

  def _update_moving(self, mean, variance):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      mean, variance = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                          [mean, variance])
    m = self.momentum
    self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * m
                            + mean * (1.0 - m))
    self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * m
                                + variance * (1.0 - m))

  def get_config(self):
    return {**super().get_config(), "group_size": self.group_size}
