"""Whole-image tasks: Rotation, Exemplar and the supervised baseline."""
import tensorflow as tf

from selfsup.core.checks import ConfigError
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
  """The fully supervised baseline: classify the images' own labels.

  As the authors' recipe (config/supervised/imagenet.sh:30,
  `inception_preprocess`): random area crop, flip and slim's colour jitter.
  `spec_kwargs={"color": False}` drops the jitter (selfsup before 2026-12).
  The recipe also trains on `trainval` (gin/supervised.gin).
  """

  name = "supervised"
  class_label_key = "label"  # its pretext labels are the class labels

  @classmethod
  def pretext_specs(cls, size=224, color=True):
    """Random area crop, flip and (`color`) colour jitter; central crop to
    evaluate."""
    return {"train": specs.join("decode",
                                specs.inception_train(size, color=color)),
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
  batch axis (of each mining group: a TPU core's batch in their code).

  Negatives are mined within groups of `mining_group` consecutive images
  (with all their copies), not within whatever a replica holds: the authors
  built the loss per TPU core, 512 images on 32 cores = 16 images x 8
  copies = 128 embeddings, so 16 is the default and one GPU, eight GPUs or a
  TPU pod compute the same loss. A replica holding fewer images than one
  group mines among all it holds; None mines among the whole replica batch
  (selfsup before 2026-12). The pretext accuracy is the fraction of
  embeddings whose nearest other embedding in their group comes from the
  same image.

  Args:
    copies: augmented copies per image (8 in the paper).
    embedding_size: size of the embedding (1000 in the paper).
    margin: triplet loss margin (0.5).
    normalize: "embedding" or "batch".
    mining_group: images per mining group (16), or None.
    preprocessing: "paper" (Inception augmentation per copy, no grayscale) or
      "code" (the authors' configs: to_gray(0.66) on the image, slim's
      Inception preprocessing per copy, each copy standardised); see
      `pretext_specs`.
  """

  name = "exemplar"
  PREPROCESSING = ("paper", "code")
  # The authors' per-copy chain (config/exemplar/imagenet.sh:32; slim's
  # crop keeps >= 10% of the area, bilinear resize without antialiasing).
  CODE_COPY = ("inception_crop({size}, area_min=10, antialias=False)|flip_lr|"
               "color_distort|standardize")
  CODE_GRAY_P = 0.66

  @classmethod
  def pretext_specs(cls, size=224, copies=8, gray_p=None,
                    preprocessing="paper"):
    """`copies` augmented views of each image.

    preprocessing: "paper": each copy through the Inception augmentation,
      values in [-1, 1]; "code": the authors' `to_gray,
      crop_inception_preprocess_patches, standardization` (each copy
      standardised to zero mean and unit variance).
    gray_p: probability of turning the image grayscale before the copies
      are made (all copies share the coin); None: 0 for "paper" (the paper
      mentions none), 0.66 for "code" (the authors' configs).
    """
    if preprocessing not in cls.PREPROCESSING:
      raise ConfigError(f"preprocessing={preprocessing!r} is invalid: "
                        f"expected one of {cls.PREPROCESSING}.")
    code = preprocessing == "code"
    if gray_p is None:
      gray_p = cls.CODE_GRAY_P if code else 0.0
    augment = (cls.CODE_COPY.format(size=size) if code
               else specs.inception_train(size))
    gray = f"to_gray({specs.num(gray_p)})" if gray_p else ""
    # The authors' to_gray ignores the mode: their evaluation grays too.
    eval_gray = f"to_gray({specs.num(gray_p)}, training=True)" if (
        gray_p and code) else ""
    # The pretext is only a task with distinct views: evaluation keeps the
    # augmentation (training=True), made repeatable by the pipeline's seed.
    return {
        "train": specs.join("decode", gray,
                            f'exemplar({copies}, spec="{augment}")'),
        "eval": specs.join(
            "decode", eval_gray,
            f'exemplar({copies}, spec="{augment}", training=True)'),
        "batch": "",
    }

  def __init__(self, copies=8, embedding_size=1000, margin=0.5,
               normalize="embedding", mining_group=16, preprocessing="paper",
               **kwargs):
    if normalize not in ("embedding", "batch"):
      raise ConfigError(f"normalize={normalize!r} is invalid: expected one "
                        "of ('embedding', 'batch').")
    if not isinstance(copies, int) or copies < 2:
      raise ConfigError(f"copies={copies!r} is invalid: the triplet loss "
                        "needs an integer >= 2 copies of each image.")
    if mining_group is not None and (
        not isinstance(mining_group, int) or isinstance(mining_group, bool)
        or mining_group < 1):
      raise ConfigError(f"mining_group={mining_group!r} is invalid: expected "
                        "None or a positive integer (images per mining group, "
                        "16 in the authors' runs).")
    self.copies = copies
    self.embedding_size = embedding_size
    self.margin = margin
    self.normalize = normalize
    self.mining_group = mining_group
    self.preprocessing = preprocessing
    super().__init__(**kwargs)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("copies", self.copies)
    kwargs.setdefault("preprocessing", self.preprocessing)
    return super()._spec_kwargs(kwargs)

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(self.embedding_size, sync_batch_norm)

  def group_images(self, num_images, training=True):
    """Images per mining group for a replica batch of `num_images`.

    A batch holding fewer images than one group is one group. In training
    the group must divide the batch (ConfigError otherwise); an evaluation
    batch (its last one may be short) ends with a smaller group.
    """
    if self.mining_group is None or num_images is None:
      return num_images
    group = min(self.mining_group, num_images)
    if training and num_images % group:
      raise ConfigError(
          f"mining_group={self.mining_group} is invalid for a replica batch "
          f"of {num_images} images: expected a group that divides each "
          "replica's batch (or is larger than it).")
    return group

  def step(self, batch, training):
    images = batch["image"]
    copies = images.shape[1]
    group = self.group_images(images.shape[0], training)
    flat = base.flatten_copies(images)
    embeddings = tf.cast(self.backbone(flat, training=training)["logits"],
                         tf.float32)
    labels = tf.repeat(tf.range(tf.shape(images)[0]), copies)
    if group is None:  # unknown batch size: one group
      return self._mine(labels, embeddings, None)
    size, total = group * copies, images.shape[0] * copies
    full = total - total % size
    parts = [(0, full, size), (full, total, total - full)]
    results = [(self._mine(labels[a:b], embeddings[a:b], n), (b - a) // n,
                b - a) for a, b, n in parts if b > a]
    # The loss is a mean over groups, the accuracy over embeddings.
    loss = sum(l * g for (l, _), g, _ in results) / sum(
        g for _, g, _ in results)
    accuracy = sum(m["accuracy"] * e for (_, m), _, e in results) / total
    return loss, {"accuracy": accuracy}

  def _mine(self, labels, embeddings, size):
    """Loss and accuracy of embeddings in consecutive groups of `size`."""
    grouped = tf.reshape(embeddings, [-1, size or tf.shape(embeddings)[0],
                                      embeddings.shape[-1]])
    axis = -1 if self.normalize == "embedding" else 1
    grouped = tf.math.l2_normalize(grouped, axis=axis)
    loss = triplet_semihard_loss(
        labels, tf.reshape(grouped, [-1, embeddings.shape[-1]]),
        margin=self.margin, group_size=size)
    dist = pairwise_distances(grouped)
    dist += tf.linalg.diag(tf.fill(tf.shape(dist)[:-1], float("inf")))
    group_labels = tf.reshape(labels, tf.shape(dist)[:-1])
    nearest = tf.gather(group_labels,
                        tf.argmin(dist, axis=-1, output_type=tf.int32),
                        batch_dims=1)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(nearest, group_labels),
                                      tf.float32))
    return loss, {"accuracy": accuracy}

  def dummy_batch(self, batch_size):
    s = self.image_size
    return {"image": tf.zeros([batch_size, self.copies, s, s, 3])}
