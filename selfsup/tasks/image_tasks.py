"""Whole-image tasks: Rotation, Exemplar and the supervised baseline."""
import tensorflow as tf

from selfsup.preprocess import specs
from selfsup.tasks import base
from selfsup.tasks.losses import pairwise_distances, triplet_semihard_loss


class Rotation(base.Task):
  """Predict which of 4 rotations (0, 90, 180, 270 degrees) was applied.

  The batch holds every image 4 times, once per rotation (image
  [B, 4, H, W, C], label [B, 4] from the `rotate` op).
  """

  name = "rotation"
  num_classes = 4

  @classmethod
  def pretext_specs(cls, size=224):
    """The Inception augmentation at `size`, then 4 rotated copies."""
    return {"train": specs.join("decode", specs.inception_train(size),
                                "rotate"),
            "eval": specs.join(specs.central_eval(size), "rotate"),
            "batch": ""}

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(self.num_classes, sync_batch_norm)

  def step(self, batch, training):
    images, labels = base.flatten_copies(batch["image"], batch["label"])
    logits = self.backbone(images, training=training)["logits"]
    return base.classification(labels, logits)

  def dummy_batch(self, batch_size):
    s = self.image_size
    return {"image": tf.zeros([batch_size, 4, s, s, 3]),
            "label": tf.zeros([batch_size, 4], tf.int32)}


class Supervised(base.Task):
  """The fully supervised baseline: classify the images' own labels."""

  name = "supervised"

  @classmethod
  def pretext_specs(cls, size=224):
    """Random area crop and flip (no colour jitter); central crop to eval."""
    return {"train": specs.join("decode",
                                specs.inception_train(size, color=False)),
            "eval": specs.central_eval(size),
            "batch": ""}

  def __init__(self, num_classes=1000, **kwargs):
    if not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes={num_classes!r} is not valid: expected an "
                       "integer >= 2 (the dataset's number of classes).")
    self.num_classes = num_classes
    super().__init__(**kwargs)

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(self.num_classes, sync_batch_norm)

  def step(self, batch, training):
    logits = self.backbone(batch["image"], training=training)["logits"]
    return base.classification(batch["label"], logits)

  def dummy_batch(self, batch_size):
    s = self.image_size
    return {"image": tf.zeros([batch_size, s, s, 3]),
            "label": tf.zeros([batch_size], tf.int64)}


class Exemplar(base.Task):
  """Every image is its own class; a triplet loss over its augmented copies.

  The embedding is the backbone's 1000-dimensional logits layer, L2-normalised
  per embedding (`normalize="embedding"`, what the triplet loss is meant for);
  `normalize="batch"` reproduces the authors' code, which normalised over the
  batch axis. The pretext accuracy is the fraction of embeddings whose nearest
  other embedding in the replica's batch comes from the same image.

  Args:
    copies: augmented copies per image (8 in the paper).
    embedding_size: size of the embedding (1000 in the paper).
    margin: triplet loss margin (0.5).
    normalize: "embedding" or "batch".
  """

  name = "exemplar"

  @classmethod
  def pretext_specs(cls, size=224, copies=8, gray_p=0.0):
    """`copies` Inception-augmented views of each image.

    gray_p: probability of turning the image grayscale before the copies
    are made (the authors' code used 0.66; the paper mentions none).
    """
    augment = specs.inception_train(size)
    gray = f"to_gray({specs.num(gray_p)})" if gray_p else ""
    # The pretext is only a task with distinct views: evaluation keeps the
    # augmentation (training=True), made repeatable by the pipeline's seed.
    return {
        "train": specs.join("decode", gray,
                            f'exemplar({copies}, spec="{augment}")'),
        "eval": specs.join(
            "decode", f'exemplar({copies}, spec="{augment}", training=True)'),
        "batch": "",
    }

  def __init__(self, copies=8, embedding_size=1000, margin=0.5,
               normalize="embedding", **kwargs):
    if normalize not in ("embedding", "batch"):
      raise ValueError(f"normalize={normalize!r} is not valid: expected one of "
                       "('embedding', 'batch').")
    if not isinstance(copies, int) or copies < 2:
      raise ValueError(f"copies={copies!r} is not valid: the triplet loss needs "
                       "an integer >= 2 copies of each image.")
    self.copies = copies
    self.embedding_size = embedding_size
    self.margin = margin
    self.normalize = normalize
    super().__init__(**kwargs)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("copies", self.copies)
    return super()._spec_kwargs(kwargs)

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(self.embedding_size, sync_batch_norm)

  def step(self, batch, training):
    images = batch["image"]
    num_images = tf.shape(images)[0]
    copies = images.shape[1]
    flat = base.flatten_copies(images)
    embeddings = tf.cast(self.backbone(flat, training=training)["logits"],
                         tf.float32)
    axis = -1 if self.normalize == "embedding" else 0
    embeddings = tf.math.l2_normalize(embeddings, axis=axis)
    labels = tf.repeat(tf.range(num_images), copies)
    loss = triplet_semihard_loss(labels, embeddings, margin=self.margin)
    dist = pairwise_distances(embeddings)
    dist += tf.linalg.diag(tf.fill([tf.shape(dist)[0]], float("inf")))
    nearest = tf.gather(labels, tf.argmin(dist, axis=1, output_type=tf.int32))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(nearest, labels), tf.float32))
    return loss, {"accuracy": accuracy}

  def dummy_batch(self, batch_size):
    s = self.image_size
    return {"image": tf.zeros([batch_size, self.copies, s, s, 3])}
