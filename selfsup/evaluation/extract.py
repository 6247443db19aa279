"""Representations of a frozen backbone, cached as sharded TFRecords.

The representation of an image is an endpoint of the backbone (`pre_logits`
by default). A spatial endpoint [H, W, C] with more than 9,000 values is
max-pooled over an adaptive s x s grid so that block1..block4 can be
evaluated with the same linear model. As the authors' evaluation, s is the
integer (floor or ceil of sqrt(9000 / C), at least 1) whose s * s * C is
nearest to 9,000, so it may exceed 9,000 (k=4 block1: 6x6x256 = 9,216);
`pooling_grid.rule = "floor"` (gin) keeps s * s * C <= 9,000 instead, as
selfsup did before. The authors' bins come from TF's fractional max-pooling
(random boundaries); selfsup's are deterministic near-equal bins. Patch models (Jigsaw, Relative Patch Location)
see the image as its 3x3 grid of patches: the representation is the average
of the 9 patches' representations.
"""
import math
import os
import queue
import threading

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from selfsup.evaluation import features as features_lib
from selfsup.preprocess import get as get_spec
from selfsup.train import export as export_lib

MAX_FEATURES = 9_000
# Batches of features computed ahead of the writer.
_AHEAD = 2


GRID_RULES = ("nearest", "floor")


@gin.configurable
def pooling_grid(rule="nearest"):
  """How spatial endpoints are pooled: "nearest" (the authors' evaluation:
  s * s * C nearest to max_features, unpooled when the map already fits) or
  "floor" (the largest s with s * s * C <= max_features, capped by the map)."""
  if rule not in GRID_RULES:
    raise ValueError(f"pooling_grid.rule={rule!r} is not valid: expected one "
                     f"of {GRID_RULES}.")
  return rule


def grid_size(h, w, c, max_features=MAX_FEATURES, rule=None):
  """(rows, cols) of the pooled map of an [h, w, c] endpoint."""
  rule = pooling_grid(rule) if rule else pooling_grid()
  if rule == "floor":
    s = max(1, int(math.isqrt(max_features // c))) if c <= max_features else 1
    s = min(s, h, w)
    return s, s
  if h * w * c <= max_features:
    return h, w
  target = math.sqrt(max_features / c)
  low, high = math.floor(target), math.ceil(target)
  s = low if abs(max_features - c * low ** 2) < abs(
      max_features - c * high ** 2) else high
  s = min(max(s, 1), h, w)
  return s, s


def adaptive_max_pool(x, max_features=MAX_FEATURES, rule=None):
  """[B, H, W, C] -> [B, r*s*C]: max over r x s near-equal spatial bins.

  (r, s) is `grid_size` under `rule` (default: the gin-bound
  `pooling_grid.rule`). Bin i along an axis of size n covers
  [floor(i*n/s), ceil((i+1)*n/s)), so bins tile the map exactly and overlap
  by at most one pixel.
  """
  _, h, w, c = x.shape
  if h is None or w is None:
    raise ValueError(f"adaptive_max_pool needs a static spatial size, got "
                     f"shape {x.shape}.")
  rows_n, cols_n = grid_size(h, w, c, max_features, rule)
  if (rows_n, cols_n) == (h, w):
    return tf.reshape(x, [-1, h * w * c])
  rows = []
  for i in range(rows_n):
    y0, y1 = (i * h) // rows_n, -((-(i + 1) * h) // rows_n)
    cols = []
    for j in range(cols_n):
      x0, x1 = (j * w) // cols_n, -((-(j + 1) * w) // cols_n)
      cols.append(tf.reduce_max(x[:, y0:y1, x0:x1, :], axis=[1, 2]))
    rows.append(tf.stack(cols, axis=1))
  pooled = tf.stack(rows, axis=1)  # [B, r, s, C]
  return tf.reshape(pooled, [-1, rows_n * cols_n * c])


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


def in_background(iterable, depth):
  """Yields the items of `iterable`, produced up to `depth` ahead in a thread.

  An exception in the producer is raised here, at the item it replaced.
  Closing this generator early (an error in the consumer) stops the producer
  after the item it is working on.
  """
  items = queue.Queue(depth)
  stop = threading.Event()

  def put(item):
    while not stop.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    it = iter(iterable)
    try:
      for item in it:
        if not put((True, item)):
          return
      put((False, None))
    except BaseException as e:  # pylint: disable=broad-except
      put((False, e))
    finally:  # a generator is closed in the thread that ran it
      getattr(it, "close", lambda: None)()

  thread = threading.Thread(target=produce, daemon=True,
                            name="selfsup-feature-batches")
  thread.start()
  try:
    while True:
      ok, item = items.get()
      if not ok:
        if item is not None:
          raise item
        return
      yield item
  finally:
    stop.set()
    thread.join()


class FeatureExtractor:
  """Images -> the frozen `endpoint` representation of `backbone`, [B, d].

  Traced once per image shape, with the batch dimension left open: a split's
  last, smaller batch reuses the trace instead of adding one (a retrace of a
  ResNet-50 costs about as much as 3 batches of 64 at 64x64 on 2 cores).
  """

  def __init__(self, backbone, endpoint, max_features=MAX_FEATURES):
    self.backbone = backbone
    self.endpoint = endpoint
    self.max_features = max_features
    self._traced = {}

  def __call__(self, images):
    images = tf.convert_to_tensor(images)
    key = (tuple(images.shape[1:]), images.dtype)
    if key not in self._traced:
      spec = tf.TensorSpec([None, *key[0]], images.dtype)
      self._traced[key] = tf.function(
          lambda x: representation(self.backbone, x, self.endpoint,
                                   self.max_features),
          input_signature=[spec])
    return self._traced[key](images)

  def batches(self, source, split, spec, batch_size):
    """make_batches(start): numpy (features, labels) of `split` from `start`.

    What `features.write_split` consumes.
    """
    preprocess = get_spec(spec, training=False)

    def computed(start):
      ds = source.dataset(split, shuffle=False).skip(start)
      ds = ds.map(lambda x: {"image": preprocess(x)["image"],
                             "label": x["label"]},
                  num_parallel_calls=tf.data.AUTOTUNE)
      ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
      for batch in ds:
        yield self(batch["image"]).numpy(), batch["label"].numpy()

    # The writer serialises, writes and hashes while the next batches are
    # computed. On 2 CPU cores that work is only 1.5-4% of an export
    # (pre_logits to block4, ResNet-50 at 64x64); where an accelerator
    # computes and the host only writes, it is a larger share.
    return lambda start: in_background(computed(start), _AHEAD)

  def export_split(self, source, split, out_dir, *, spec, batch_size=256,
                   shard_size=features_lib.DEFAULT_SHARD_SIZE):
    """Writes the features of one split; returns its metadata."""
    if source.num_examples(split) == 0:
      raise ValueError(f"Split {split!r} of {source.name!r} is empty.")
    logging.info("Exporting %s features of %s:%s (%d images) to %s.",
                 self.endpoint, source.name, split, source.num_examples(split),
                 out_dir)
    return features_lib.write_split(
        out_dir, split, self.batches(source, split, spec, batch_size),
        layer=self.endpoint, shard_size=shard_size)


def export_features(export_dir, source, splits, out_dir, *, endpoint,
                    batch_size=256, max_features=MAX_FEATURES,
                    shard_size=features_lib.DEFAULT_SHARD_SIZE, spec=None):
  """Writes the `endpoint` features of `splits` of `source` under `out_dir`.

  Resumable shard by shard: complete splits and shards are kept. Returns
  {split: metadata}.
  """
  info = export_lib.load_info(export_dir)
  if endpoint not in info["endpoints"]:
    raise ValueError(f"endpoint={endpoint!r} is not an endpoint of the "
                     f"exported {info['backbone']}: expected one of "
                     f"{info['endpoints']}.")
  backbone = export_lib.load_backbone(export_dir)
  backbone.trainable = False  # frozen: evaluation never updates it
  extractor = FeatureExtractor(backbone, endpoint, max_features)
  spec = spec or info["eval_specs"]["eval"]
  return {split: extractor.export_split(source, split, out_dir, spec=spec,
                                        batch_size=batch_size,
                                        shard_size=shard_size)
          for split in splits}


def feature_dir(workdir, endpoint, source_name, fraction=None):
  """Where a workdir caches one endpoint's features of one source."""
  name = source_name if fraction is None else f"{source_name}_frac{fraction}"
  return os.path.join(workdir, "features", name, endpoint)


def as_numpy(out_dir, split):
  """(x, y) of a cached split, checked against its metadata."""
  x, y = features_lib.read_split(out_dir, split)
  return np.asarray(x, np.float32), np.asarray(y, np.int64)
