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
"""
import numbers

import keras

DEFAULT_MOMENTUM = 0.99
KINDS = ("fused", "keras")
DEFAULT_KIND = "fused"


def check_momentum(momentum):
  if (not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
      or not 0.0 <= momentum < 1.0):
    raise ValueError(f"bn_momentum={momentum!r} is not valid: expected a "
                     "number in [0, 1), e.g. 0.99 (long runs) or 0.9 (short).")
  return float(momentum)


def check_kind(batch_norm):
  if not isinstance(batch_norm, str) or batch_norm not in KINDS:
    raise ValueError(
        f"batch_norm={batch_norm!r} is not valid: expected one of {KINDS} "
        "('fused': TensorFlow's fused kernel in training, the default; "
        "'keras': keras.layers.BatchNormalization).")
  return batch_norm


def make(name, *, kind=DEFAULT_KIND, momentum=DEFAULT_MOMENTUM,
         synchronized=False):
  """A batch-norm layer of `kind` (see the module docstring), not yet called."""
  if kind == "fused" and not synchronized:
    return BatchNormalization(momentum=momentum, name=name)
  return keras.layers.BatchNormalization(
      momentum=momentum, synchronized=synchronized, name=name)


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
