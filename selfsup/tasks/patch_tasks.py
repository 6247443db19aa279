"""Patch tasks: Jigsaw and Relative Patch Location.

Both run the patch variant of the backbone on 64x64 patches (a
1000-dimensional output per patch), concatenate the outputs of the patches
in question and classify them with a two-layer head (FC 4096, batch norm,
ReLU, dropout 0.5, logits) set up as the authors' (`HEAD_SETTINGS`).

Batch-norm groups: the backbone's `bn_group_size` counts patches, a multiple
of 9 (whole images; the authors: 32 images x 9 patches per TPU core = 288);
the head then normalises the examples of the same images together,
bn_group_size / 9 x (examples per image) rows.

Two input formats are accepted, told apart by rank:
* the grid [B, 9, p, p, C] with label [B, K]: the backbone runs once on the
  9 patches and the K examples are made from the 9 outputs (the authors' way,
  K times less backbone work, identical result);
* materialised examples [B, K, n, p, p, C] (n = 9 for Jigsaw, 2 for RPL).
"""
import tensorflow as tf

from selfsup.core.checks import ConfigError
from selfsup.preprocess import load_permutations, pair_patches, permute_patches
from selfsup.preprocess import specs
from selfsup.tasks import base

# The head's settings. "code": the authors' `fully_connected`
# (patch_utils.py:178-207): its own weight decay 5e-4, truncated-normal
# kernels (sigma 0.005), fc1 bias 0.1, batch norm momentum 0.997 and epsilon
# 1e-5. "task": the task's weight decay, Keras' defaults (glorot_uniform, zero
# bias, epsilon 1e-3) and the backbone's bn_momentum (selfsup before 2026-12).
HEAD_SETTINGS = {
    "code": dict(weight_decay=5e-4, bn_momentum=0.997, bn_epsilon=1e-5,
                 hidden_bias=0.1,
                 kernel_initializer={"class_name": "TruncatedNormal",
                                     "config": {"mean": 0.0,
                                                "stddev": 0.005}}),
    "task": dict(bn_epsilon=1e-3, hidden_bias=0.0,
                 kernel_initializer="glorot_uniform"),
}


class _PatchTask(base.Task):
  """A task on the 3x3 grid of patches of an image.

  Pretext specs (`pretext_specs` of each task) take `crop` (side of the
  random square crop split into 3x3 cells), `patch` (side of the patch cut
  at a random place in each cell), `resize` (default crop * 292/255),
  `gray_p` and `gray_per_patch` (see `selfsup.preprocess.specs`).
  `head_settings`: "code" (default) or "task", see `HEAD_SETTINGS`.
  """
  patch_based = True
  num_classes = None
  examples_per_image = None

  @classmethod
  def evaluation_specs(cls, image_size):
    """The 3x3 grid of `image_size` patches of an image scaled by 255/64:
    the representation is the average of the patches'."""
    return specs.patch_representation_specs(
        size=int(round(image_size * 255 / 64)), patch=image_size)

  def __init__(self, image_size=64, embedding_size=1000, hidden_size=4096,
               dropout=0.5, head_settings="code", **kwargs):
    if head_settings not in HEAD_SETTINGS:
      raise ConfigError(f"head_settings={head_settings!r} is invalid: "
                        f"expected one of {tuple(HEAD_SETTINGS)}.")
    self.head_settings = head_settings
    self.embedding_size = embedding_size
    self.hidden_size = hidden_size
    self.dropout = dropout
    super().__init__(image_size=image_size, **kwargs)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("patch", self.image_size)
    # The paper's 85-pixel cells around 64-pixel patches, scaled.
    kwargs.setdefault("crop", 3 * int(round(self.image_size * 85 / 64)))
    return kwargs

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(self.embedding_size, sync_batch_norm,
                                   patch=True)
    settings = dict(weight_decay=self.weight_decay,
                    bn_momentum=self.backbone_kwargs.get("bn_momentum", 0.99))
    settings.update(HEAD_SETTINGS[self.head_settings])
    self.head = base.mlp_head(self.num_classes, name=f"{self.name}_head",
                              hidden=self.hidden_size, dropout=self.dropout,
                              sync_batch_norm=sync_batch_norm,
                              bn_group_size=self.head_group_size(),
                              **settings)

  def head_group_size(self):
    """Head rows per batch-norm group: those of the backbone's images."""
    patches = self.backbone_kwargs.get("bn_group_size")
    if patches is None:
      return None
    if not isinstance(patches, int) or patches % 9:
      raise ConfigError(
          f"bn_group_size={patches!r} is invalid for {self.name!r}: expected "
          "a multiple of 9, the patches of whole images (288 = 32 images in "
          "the authors' runs).")
    return patches // 9 * self.examples_per_image

  def _embed(self, patches, training):
    flat = base.flatten_copies(patches)
    out = self.backbone(flat, training=training)["logits"]
    return tf.cast(out, tf.float32)

  def _combine(self, grid_embeddings, labels):
    """[B, 9, D] grid embeddings, labels [B, K] -> [B, K, n * D] inputs."""
    raise NotImplementedError  # the task's pairing of patches

  def step(self, batch, training):
    images, labels = batch["image"], batch["label"]
    if images.shape.rank == 5:
      grid = self._embed(images, training)
      grid = tf.reshape(grid, [-1, 9, self.embedding_size])
      inputs = self._combine(grid, labels)
    elif images.shape.rank == 6:
      n = images.shape[2]
      inputs = tf.reshape(self._embed(images, training),
                          [-1, n * self.embedding_size])
    else:
      raise ValueError(f"{self.name}: expected image [B, 9, p, p, C] or "
                       f"[B, K, n, p, p, C], got shape {images.shape}.")
    inputs = tf.reshape(inputs, [-1, inputs.shape[-1]])
    logits = self.head(inputs, training=training)
    return base.classification(tf.reshape(labels, [-1]), logits)

  def dummy_batch(self, batch_size):
    p = self.image_size
    return {"image": tf.zeros([batch_size, 9, p, p, 3]),
            "label": tf.zeros([batch_size, self.examples_per_image], tf.int32)}


class Jigsaw(_PatchTask):
  """Which of the 100 maximal-Hamming permutations shuffled the 9 patches."""

  name = "jigsaw"
  num_classes = 100
  examples_per_image = 16

  @classmethod
  def pretext_specs(cls, crop=255, patch=64, resize=None, gray_p=specs.GRAY_P,
                    gray_per_patch=False, num_perms=16, shared_perms=None,
                    permute_images=False):
    """Jigsaw preprocessing (see `_PatchTask` for the patch arguments).

    Args:
      num_perms: permutations per image (16 in the paper).
      shared_perms: if set, reproduce the authors' code instead: no
        per-image permutations; the "batch" spec draws this many (8 in the
        code) for the whole batch.
      permute_images: False: image [9, p, p, C] and label [num_perms]; the
        model permutes the patch embeddings. True: image
        [num_perms, 9, p, p, C], the permuted copies (16x the memory and
        backbone work).
    """
    permute = "" if permute_images else ", permute=False"
    if shared_perms is None:
      pretext, batch = f"jigsaw({num_perms}{permute})", ""
    else:
      pretext, batch = "", f"jigsaw_shared({shared_perms}{permute})"
    return specs.patch_specs(pretext, batch=batch, crop=crop, patch=patch,
                             resize=resize, gray_p=gray_p,
                             gray_per_patch=gray_per_patch)

  def __init__(self, num_perms=16, shared_perms=None, **kwargs):
    """num_perms: permutations per image (paper: 16); shared_perms: if set,
    the authors' code instead: this many (8) drawn once per batch."""
    self._perms = tf.constant(load_permutations(), tf.int32)
    self.num_perms = num_perms
    self.shared_perms = shared_perms
    self.examples_per_image = shared_perms or num_perms
    super().__init__(**kwargs)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("num_perms", self.num_perms)
    kwargs.setdefault("shared_perms", self.shared_perms)
    return super()._spec_kwargs(kwargs)

  def _combine(self, grid_embeddings, labels):
    permuted = permute_patches(grid_embeddings, tf.cast(labels, tf.int32),
                               self._perms)  # [B, K, 9, D]
    shape = tf.shape(permuted)
    return tf.reshape(permuted, [shape[0], shape[1],
                                 9 * self.embedding_size])


class RelativePatchLocation(_PatchTask):
  """Where a neighbour patch lies relative to the centre patch (8 classes)."""

  name = "relative_patch_location"
  num_classes = 8
  examples_per_image = 8

  @classmethod
  def pretext_specs(cls, crop=255, patch=64, resize=None, gray_p=specs.GRAY_P,
                    gray_per_patch=False, pair_images=False):
    """Relative Patch Location preprocessing (see `_PatchTask`).

    pair_images: False: image [9, p, p, C] and label [8] = 0..7; the model
    pairs the embeddings. True: image [8, 2, p, p, C], the pairs.
    """
    pretext = ("relative_patch_location" if pair_images else
               "relative_patch_location(pairs=False)")
    return specs.patch_specs(pretext, crop=crop, patch=patch, resize=resize,
                             gray_p=gray_p, gray_per_patch=gray_per_patch)

  def _combine(self, grid_embeddings, labels):
    # Pair l is (neighbour NEIGHBOURS[l], centre); the labels pick the pairs.
    pairs = tf.gather(pair_patches(grid_embeddings, axis=1),
                      tf.cast(labels, tf.int32), batch_dims=1)  # [B, K, 2, D]
    shape = tf.shape(pairs)
    return tf.reshape(pairs, [shape[0], shape[1], 2 * self.embedding_size])

  def dummy_batch(self, batch_size):
    batch = super().dummy_batch(batch_size)
    batch["label"] = tf.tile(tf.range(8)[None], [batch_size, 1])
    return batch
