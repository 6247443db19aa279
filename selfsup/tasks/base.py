"""A pretext task: preprocessing specs, a backbone (+ head) and a loss.

Everything that makes a task lives on its class: its pretext specs
(`pretext_specs`), the downstream specs its representation needs
(`evaluation_specs`), whether it works on patches (`patch_based`), its
model and its loss. Lower layers (preprocess, data) know ops and sources,
never task names.

A task knows nothing of strategies or optimizers: `step(batch, training)`
runs on one replica's batch and returns the replica's mean loss and metrics;
the trainer scales, all-reduces and applies them.
"""
import inspect

import keras
import tensorflow as tf

import selfsup.models
from selfsup.preprocess import specs as specs_lib
from selfsup.preprocess.pretext_ops import CLASS_LABEL_KEY


class Task:
  """Base class. Subclasses set `name` and implement `_build` and `step`.

  Args:
    backbone: a name of `selfsup.models.BACKBONES`.
    width: widening factor k.
    image_size: side of the images the backbone sees (for patch tasks, the
      side of a patch).
    weight_decay: L2 decay of the backbone and head kernels.
    backbone_kwargs: more arguments for the backbone (e.g.
      representation_size, skip_connections).
    spec_kwargs: arguments of the task's `pretext_specs`; by default the
      paper's sizes for `image_size`.
  """

  name = None
  patch_based = False
  # Where a pretext batch keeps the images' class labels (the online probe's
  # targets); the pretext ops move the source's `label` there.
  class_label_key = CLASS_LABEL_KEY

  def __init__(self, backbone="resnet50_v2", width=4, image_size=224,
               weight_decay=1e-4, backbone_kwargs=None, spec_kwargs=None):
    if backbone not in selfsup.models.BACKBONES:
      raise ValueError(f"Unknown backbone {backbone!r} for task {self.name!r}: "
                       f"expected one of {selfsup.models.BACKBONES.names()}.")
    self.backbone_name = backbone
    self.width = width
    self.image_size = int(image_size)
    self.weight_decay = weight_decay
    self.backbone_kwargs = dict(backbone_kwargs or {})
    self.specs = self._make_specs(self._spec_kwargs(dict(spec_kwargs or {})))
    specs_lib.check(self.specs)
    self.backbone = None
    self.head = None
    self.metric_names = None  # the keys of `step`'s metrics, once built

  @classmethod
  def pretext_specs(cls, **kwargs):
    """The task's pretext preprocessing: {"train", "eval", "batch"} specs."""
    raise NotImplementedError  # each task defines its preprocessing

  @classmethod
  def evaluation_specs(cls, image_size):
    """Downstream specs (representation extraction, linear evaluation) of a
    backbone trained by this task on `image_size` images."""
    return specs_lib.linear_eval_specs(size=image_size)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("size", self.image_size)
    return kwargs

  def _make_specs(self, kwargs):
    params = inspect.signature(self.pretext_specs).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
      raise ValueError(f"Task {self.name!r} takes no spec argument "
                       f"{', '.join(map(repr, unknown))}: expected some of "
                       f"{sorted(params)}.")
    return self.pretext_specs(**kwargs)

  def _backbone(self, num_classes, sync_batch_norm, patch=False):
    size = self.image_size
    builder, _ = selfsup.models.BACKBONES.lookup(self.backbone_name)
    static = getattr(builder, "fixed_input_size", False)
    kwargs = dict(width=self.width, num_classes=num_classes,
                  weight_decay=self.weight_decay, patch=patch,
                  sync_batch_norm=sync_batch_norm,
                  input_shape=(size, size, 3) if static else (None, None, 3))
    kwargs.update(self.backbone_kwargs)
    return selfsup.models.get(self.backbone_name, **kwargs)

  def build(self, sync_batch_norm=False):
    """Creates the backbone (and head). Call inside the strategy scope."""
    self._build(sync_batch_norm)
    dummy = self.dummy_batch(2)
    _, metrics = self.step(dummy, training=False)  # creates every variable
    self.metric_names = tuple(sorted(metrics))
    return self

  def _build(self, sync_batch_norm):
    raise NotImplementedError  # each task defines its model

  @property
  def modules(self):
    """The Keras objects holding the task's variables, by name."""
    mods = {"backbone": self.backbone}
    if self.head is not None:
      mods["head"] = self.head
    return mods

  @property
  def trainable_variables(self):
    return [v for m in self.modules.values() for v in m.trainable_variables]

  @property
  def regularization_losses(self):
    return [l for m in self.modules.values() for l in m.losses]

  def step(self, batch, training):
    """Returns (mean loss over this replica's examples, {metric: mean})."""
    raise NotImplementedError  # each task defines its loss

  def dummy_batch(self, batch_size):
    """A batch of zeros shaped like the training pipeline's output."""
    raise NotImplementedError  # shapes depend on the task

  def after_update(self, step, total_steps):
    """State a task updates after each optimizer step, in the train step.

    The trainer calls it per replica right after applying the gradients,
    with `step` the 0-based index of the update just made (a tensor) and
    `total_steps` the run's length. BYOL moves its target network here; the
    paper's tasks have nothing to do.
    """
    del step, total_steps


def flatten_copies(images, labels=None, keep=3):
  """[B, copies, ...] -> [B * copies, ...] keeping the last `keep` dims."""
  shape = tf.shape(images)
  inner = images.shape[-keep:]
  flat = tf.reshape(images, tf.concat([[-1], shape[-keep:]], 0))
  flat.set_shape([None] + list(inner))
  if labels is None:
    return flat
  return flat, tf.reshape(labels, [-1])


def classification(labels, logits):
  """Mean cross-entropy (float32) and top-1 accuracy."""
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))
  correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                             labels), tf.float32)
  return loss, {"accuracy": tf.reduce_mean(correct)}


def mlp_head(num_classes, weight_decay, name, hidden=4096, dropout=0.5,
             sync_batch_norm=False, bn_momentum=0.99,
             kernel_initializer="glorot_uniform", hidden_bias=0.0,
             bn_epsilon=1e-3, bn_group_size=None):
  """The patch tasks' head: FC `hidden`, batch norm, ReLU, dropout, logits.

  The authors' head (patch_utils.py:178-209, `fully_connected`) is this with
  weight_decay=5e-4, kernel_initializer TruncatedNormal(stddev=0.005) on
  both layers, hidden_bias=0.1 (the logits' bias starts at 0),
  bn_momentum=0.997 and bn_epsilon=1e-5; the patch tasks pass those by
  default (`head_settings="code"`). The decay is the authors' convention
  (gradient weight_decay * w). `bn_group_size`: rows per batch-norm group
  in training (`selfsup.models.norm.GroupedBatchNormalization`), or None.
  """
  from selfsup.models import norm  # pylint: disable=g-import-not-at-top
  reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
  init = lambda: keras.initializers.get(kernel_initializer)  # noqa: E731
  return keras.Sequential([
      keras.layers.Dense(hidden, kernel_regularizer=reg, name="fc1",
                         kernel_initializer=init(),
                         bias_initializer=keras.initializers.Constant(
                             hidden_bias)),
      norm.make("fc1_bn", kind="keras", momentum=bn_momentum,
                synchronized=sync_batch_norm, group_size=bn_group_size,
                epsilon=bn_epsilon),
      keras.layers.ReLU(name="fc1_relu"),
      keras.layers.Dropout(dropout, name="dropout"),
      keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32",
                         kernel_initializer=init(), name="logits"),
  ], name=name)
