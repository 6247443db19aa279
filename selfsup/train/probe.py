"""The online linear probe: top-1 of the representation while it trains.

A linear classifier per endpoint (pre_logits by default) trains alongside
the pretext task on the training batches' class labels, with its own
optimizer, on features the backbone computes in inference mode under a stop
gradient. So the probe never changes the backbone: no gradient reaches it and
no batch-norm statistic moves (tests/test_probe.py checks the weights after K
steps are identical with and without it). Its top-1 on the evaluation split,
measured every few steps, shows how the representation improves long before
the linear evaluation at the end.

Which part of a pretext batch the probe sees: the first copy of each image
for whole-image tasks (Rotation's upright copy, a method's first view), the
average over an image's patches for patch tasks (as the evaluation averages
them). Spatial endpoints are averaged over their positions: the probe is a
monitor, not the paper's protocol (`bin/linear_eval` is).
"""
import json

import keras
import tensorflow as tf

from selfsup.core import checks, files

DEFAULT_ENDPOINTS = ("pre_logits",)
DEFAULT_LEARNING_RATE = 1e-3


class OnlineProbe:
  """Linear heads on stop-gradient backbone features, trained per replica.

  Args:
    num_classes: classes of the training source.
    feature_dims: {endpoint: feature size} (channels for spatial endpoints).
    patch_based: whether the task's batches hold patches of one image.
    label_key: the batch key of the class label.
    learning_rate: the probe's Adam learning rate.
  Build inside the strategy scope (its variables are mirrored like the
  task's).
  """

  def __init__(self, num_classes, feature_dims, *, patch_based=False,
               label_key="class_label", learning_rate=DEFAULT_LEARNING_RATE):
    checks.integer("online probe num_classes", num_classes, minimum=2)
    checks.positive("TrainConfig.probe_learning_rate", learning_rate)
    self.endpoints = tuple(feature_dims)
    self.patch_based = patch_based
    self.label_key = label_key
    # Batch norm without scale or shift before the linear layer (as MAE's
    # linear probe): the features' scale differs by orders of magnitude
    # between tasks and steps, and one Adam rate must fit all of them.
    # Still a linear classifier of the features.
    self.heads = {
        name: keras.Sequential([
            keras.Input((dim,)),
            keras.layers.BatchNormalization(center=False, scale=False,
                                            momentum=0.9, name="normalize"),
            keras.layers.Dense(num_classes, name="logits")],
                               name=f"probe_{name}")
        for name, dim in feature_dims.items()}
    self.optimizer = keras.optimizers.Adam(learning_rate)
    self.optimizer.build(self.trainable_variables)
    self._eval_backbone = self._eval_step = None

  @property
  def trainable_variables(self):
    return [v for head in self.heads.values() for v in head.trainable_variables]

  @property
  def modules(self):
    """What a checkpoint keeps of the probe, by name."""
    return {"probe_optimizer": self.optimizer,
            **{f"probe_{k}": v for k, v in self.heads.items()}}

  def log_names(self):
    return tuple(f"probe/{name}/{kind}" for name in self.endpoints
                 for kind in ("loss", "top1"))

  def features(self, backbone, images):
    """{endpoint: [N, D] float32} of `images` [N, H, W, C] or [N, P, H, W, C]
    (patches, averaged), in inference mode, without gradient."""
    patches = None
    if images.shape.rank == 5:
      patches = tf.shape(images)[1]
      images = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
    out = backbone(images, training=False)
    feats = {}
    for name in self.endpoints:
      x = tf.cast(out[name], tf.float32)
      if x.shape.rank == 4:
        x = tf.reduce_mean(x, axis=(1, 2))
      if patches is not None:
        x = tf.reduce_mean(tf.reshape(x, [-1, patches, x.shape[-1]]), axis=1)
      feats[name] = tf.stop_gradient(x)
    return feats

  def batch_images(self, batch):
    """The images of a pretext batch the probe sees (module docstring)."""
    images = batch["image"]
    if images.shape.rank == 5 and not self.patch_based:
      images = images[:, 0]
    return images

  def _logits(self, feats, training):
    return {name: self.heads[name](feats[name], training=training)
            for name in self.endpoints}

  def train_step(self, backbone, batch, replicas):
    """One update on this replica's batch; returns its mean loss and top-1
    per endpoint. The loss is divided by `replicas` (the optimizer sums the
    replicas' gradients, as the trainer's does)."""
    labels = tf.cast(tf.reshape(batch[self.label_key], [-1]), tf.int32)
    feats = self.features(backbone, self.batch_images(batch))
    logs = {}
    with tf.GradientTape() as tape:
      losses = []
      for name, logits in self._logits(feats, training=True).items():
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        losses.append(loss)
        logs[f"probe/{name}/loss"] = loss
        logs[f"probe/{name}/top1"] = _top1(logits, labels)
      total = tf.add_n(losses) / replicas
    variables = self.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(total, variables),
                                       variables))
    return logs

  def evaluate(self, backbone, dataset):
    """{endpoint: top-1} over `dataset` (batches of downstream images with
    "label"); ties count against the probe."""
    # One traced function per backbone, kept: a new tf.function at every
    # evaluation traced the backbone again each time.
    if self._eval_backbone is not backbone:
      self._eval_backbone = backbone
      self._eval_step = tf.function(lambda b: {
          name: _correct(logits, tf.cast(b["label"], tf.int32))
          for name, logits in self._logits(
              self.features(backbone, b["image"]), training=False).items()},
                                    reduce_retracing=True)
    step = self._eval_step
    correct = {name: 0.0 for name in self.endpoints}
    count = 0
    for batch in dataset:
      for name, value in step(batch).items():
        correct[name] += float(tf.reduce_sum(value))
      count += int(batch["label"].shape[0])
    if not count:
      raise checks.ConfigError("the online probe's evaluation split gave no "
                               "batch: it is empty.")
    return {name: value / count for name, value in correct.items()}


def _correct(logits, labels):
  """1 where the label's logit is strictly above every other (a tie, or a
  NaN, counts as wrong: a constant classifier scores 0, not 100%)."""
  true = tf.gather(logits, labels, batch_dims=1)
  others = tf.where(tf.one_hot(labels, tf.shape(logits)[-1]) > 0,
                    tf.fill(tf.shape(logits), float("-inf")), logits)
  return tf.cast(true > tf.reduce_max(others, axis=-1), tf.float32)


def _top1(logits, labels):
  return tf.reduce_mean(_correct(logits, labels))


def feature_dims(backbone, image_shape, endpoints):
  """{endpoint: size} of the features the probe sees (channels of spatial
  endpoints), from one inference call on zeros."""
  out = backbone(tf.zeros((1,) + tuple(image_shape)), training=False)
  missing = [e for e in endpoints if e not in out]
  if missing:
    raise checks.ConfigError(
        f"TrainConfig.probe_endpoints={tuple(endpoints)!r} is invalid: the "
        f"backbone has no {missing}; expected some of {sorted(out)}.")
  return {e: int(out[e].shape[-1]) for e in endpoints}


HISTORY_FILE = "online_probe.json"


class ProbeHistory:
  """The probe's evaluations, kept in `workdir/online_probe.json`.

  Written (atomically, by the chief) before the checkpoint of the same step,
  so a killed run never loses an entry it has checkpointed past; on resume,
  entries after the restored step are dropped and made again, so a resumed
  run reports what an uninterrupted one does.
  """

  def __init__(self, workdir, endpoints, eval_split, write):
    self.path = workdir.rstrip("/") + "/" + HISTORY_FILE
    self.endpoints, self.eval_split, self.write = endpoints, eval_split, write
    self.entries = []

  def resume(self, step):
    """Keeps the recorded entries up to `step` (the restored step)."""
    if not tf.io.gfile.exists(self.path):
      self.entries = []
      return
    with tf.io.gfile.GFile(self.path) as f:
      record = json.load(f)
    self.entries = [e for e in record.get("history", [])
                    if isinstance(e, dict) and e.get("step", step + 1) <= step]

  def add(self, step, top1):
    self.entries = [e for e in self.entries if e["step"] != step]
    self.entries.append({"step": int(step), "top1": dict(top1)})
    if self.write:
      files.write_json(self.path, self.record(), indent=2)

  def record(self):
    return {"endpoints": list(self.endpoints), "eval_split": self.eval_split,
            "history": list(self.entries)}
