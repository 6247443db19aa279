"""Representations of a frozen backbone, cached as sharded TFRecords.

The representation of an image is an endpoint of the backbone (`pre_logits`
by default). A spatial endpoint [H, W, C] is max-pooled over an adaptive
s x s grid with s the largest integer such that s * s * C <= 9,000 (at least
1x1), as the authors' evaluation did, so block1..block4 can be evaluated
with the same linear model. Patch models (Jigsaw, Relative Patch Location)
see the image as its 3x3 grid of patches: the representation is the average
of the 9 patches' representations.
"""
import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

from selfsup.evaluation import features as features_lib
from selfsup.preprocess import get as get_spec
from selfsup.train import export as export_lib

MAX_FEATURES = 9_000


def adaptive_max_pool(x, max_features=MAX_FEATURES):
  """[B, H, W, C] -> [B, s*s*C]: max over s x s near-equal spatial bins.

  Bin i along an axis of size n covers [floor(i*n/s), ceil((i+1)*n/s)), so
  bins tile the map exactly and overlap by at most one pixel.
  """
  _, h, w, c = x.shape
  if h is None or w is None:
    raise ValueError(f"adaptive_max_pool needs a static spatial size, got "
                     f"shape {x.shape}.")
  s = max(1, int(math.isqrt(max_features // c))) if c <= max_features else 1
  s = min(s, h, w)
  rows = []
  for i in range(s):
    y0, y1 = (i * h) // s, -((-(i + 1) * h) // s)
    cols = []
    for j in range(s):
      x0, x1 = (j * w) // s, -((-(j + 1) * w) // s)
      cols.append(tf.reduce_max(x[:, y0:y1, x0:x1, :], axis=[1, 2]))
    rows.append(tf.stack(cols, axis=1))
  pooled = tf.stack(rows, axis=1)  # [B, s, s, C]
  return tf.reshape(pooled, [-1, s * s * c])


def representation(backbone, images, endpoint, max_features=MAX_FEATURES):
  """The frozen `endpoint` representation of `images` as [B, features].

  `images` is [B, H, W, C], or [B, P, p, p, C] for patch models (the P
  patches' representations are averaged).
  """
  patches = images.shape.rank == 5
  flat = tf.reshape(images, [-1] + images.shape[-3:].as_list()) if patches \
      else images
  out = backbone(flat, training=False)
  if endpoint not in out:
    raise ValueError(f"endpoint={endpoint!r} is not an output of the backbone: "
                     f"expected one of {sorted(out)}.")
  value = tf.cast(out[endpoint], tf.float32)
  if value.shape.rank == 4:
    value = adaptive_max_pool(value, max_features)
  if patches:
    value = tf.reduce_mean(
        tf.reshape(value, [-1, images.shape[1], value.shape[-1]]), axis=1)
  return value


def _batches(source, split, spec, batch_size, forward):
  """make_batches(start): features and labels of `split` from example start."""
  preprocess = get_spec(spec, training=False)

  def make_batches(start):
    ds = source.dataset(split, shuffle=False).skip(start)
    ds = ds.map(lambda x: {"image": preprocess(x)["image"],
                           "label": x["label"]},
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for batch in ds:
      yield forward(batch["image"]).numpy(), batch["label"].numpy()

  return make_batches


def export_features(export_dir, source, splits, out_dir, *, endpoint,
                    batch_size=256, max_features=MAX_FEATURES,
                    shard_size=features_lib.DEFAULT_SHARD_SIZE, spec=None):
  """Writes the `endpoint` features of `splits` of `source` under `out_dir`.

  Resumable shard by shard: complete splits and shards are kept. Returns
  {split: metadata}.
  """
  info = export_lib.load_info(export_dir)
  backbone = export_lib.load_backbone(export_dir)
  backbone.trainable = False  # frozen: evaluation never updates it
  if endpoint not in info["endpoints"]:
    raise ValueError(f"endpoint={endpoint!r} is not an endpoint of the "
                     f"exported {info['backbone']}: expected one of "
                     f"{info['endpoints']}.")
  spec = spec or info["eval_specs"]["eval"]
  forward = tf.function(
      lambda images: representation(backbone, images, endpoint, max_features))
  metas = {}
  for split in splits:
    if source.num_examples(split) == 0:
      raise ValueError(f"Split {split!r} of {source.name!r} is empty.")
    logging.info("Exporting %s features of %s:%s (%d images) to %s.",
                 endpoint, source.name, split, source.num_examples(split),
                 out_dir)
    metas[split] = features_lib.write_split(
        out_dir, split, _batches(source, split, spec, batch_size, forward),
        layer=endpoint, shard_size=shard_size)
  return metas


def feature_dir(workdir, endpoint, source_name, fraction=None):
  """Where a workdir caches one endpoint's features of one source."""
  name = source_name if fraction is None else f"{source_name}_frac{fraction}"
  return os.path.join(workdir, "features", name, endpoint)


def as_numpy(out_dir, split):
  """(x, y) of a cached split, checked against its metadata."""
  x, y = features_lib.read_split(out_dir, split)
  return np.asarray(x, np.float32), np.asarray(y, np.int64)
