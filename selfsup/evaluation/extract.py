"""Representations of a frozen backbone, cached as sharded feature files.

The representation of an image is an endpoint of the backbone (`pre_logits`
by default). A spatial endpoint [H, W, C] is max-pooled to about 9,000
values by the rule given as an argument (`selfsup.core.pooling`: "nearest",
the authors' adaptive grid and the default; "floor"; "max", the authors'
`--pool_mode max`), so that block1..block4 can be evaluated with the same
linear model. Patch models (Jigsaw, Relative Patch Location) see the image
as its 3x3 grid of patches: the representation is the average of the 9
patches' representations.
"""
import os
import queue
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from selfsup.core import pooling
from selfsup.evaluation import features as features_lib
from selfsup.evaluation import host
from selfsup.preprocess import get as get_spec
from selfsup.workdir import export as export_lib
from selfsup.core.checks import ConfigError

MAX_FEATURES = pooling.MAX_FEATURES
# Batches of features computed ahead of the writer.
_AHEAD = 2
# Public names of this module since the first release; they live below now.
in_background = host.in_background
adaptive_max_pool = pooling.pool


def representations(backbone, images, endpoints, max_features=MAX_FEATURES,
                    rule=pooling.DEFAULT_RULE):
  """The frozen representations of `images` at each of `endpoints`, from one
  forward pass: {endpoint: [B, features] float32}.

  This is THE evaluation representation, used by the feature export (for
  L-BFGS and cached SGD/MLP heads) and by SGD on the fly alike: a spatial
  endpoint is max-pooled under `rule` (`selfsup.core.pooling.pool`), and
  `images` [B, P, p, p, C] (patch models) give the average of the P
  patches' representations.
  """
  patches = images.shape.rank == 5
  flat = tf.reshape(images, [-1] + images.shape[-3:].as_list()) if patches \
      else images
  out = backbone(flat, training=False)
  if not isinstance(out, dict):
    raise ConfigError(f"backbone must return a dict of named endpoints, got "
                      f"{type(out).__name__}.")
  reps = {}
  for endpoint in endpoints:
    if endpoint not in out:
      raise ConfigError(f"endpoint={endpoint!r} is not an output of the "
                        f"backbone: expected one of {sorted(out)}.")
    value = tf.cast(out[endpoint], tf.float32)
    if value.shape.rank == 4:
      value = pooling.pool(value, max_features, rule)
    elif value.shape.rank != 2:
      raise ConfigError(f"endpoint {endpoint!r} has rank {value.shape.rank}: "
                        "expected [batch, features] or [batch, h, w, c].")
    if patches:
      value = tf.reduce_mean(
          tf.reshape(value, [-1, images.shape[1], value.shape[-1]]), axis=1)
    reps[endpoint] = value
  return reps


def representation(backbone, images, endpoint, max_features=MAX_FEATURES,
                   rule=pooling.DEFAULT_RULE):
  """The frozen `endpoint` representation of `images` as [B, features]
  (see `representations`)."""
  return representations(backbone, images, (endpoint,), max_features,
                         rule)[endpoint]


class FeatureExtractor:
  """Images -> the frozen representations of `backbone` at `endpoints`.

  `endpoints` is one name (calls return a [B, d] tensor) or a sequence of
  names (calls return {endpoint: [B, d]}, all from one forward pass).
  Traced once per image shape, with the batch dimension left open: a split's
  last, smaller batch reuses the trace instead of adding one (a retrace of a
  ResNet-50 costs about as much as 3 batches of 64 at 64x64 on 2 cores).
  """

  def __init__(self, backbone, endpoints, max_features=MAX_FEATURES,
               rule=pooling.DEFAULT_RULE):
    self.backbone = backbone
    self.rule = pooling.check_rule(rule, "pooling rule")
    self.single = isinstance(endpoints, str)
    self.endpoints = (endpoints,) if self.single else tuple(endpoints)
    if not self.endpoints:
      raise ConfigError("endpoints must name at least one endpoint.")
    self.max_features = max_features
    self._traced = {}

  @property
  def endpoint(self):
    return self.endpoints[0]

  def all(self, images):
    """{endpoint: [B, d]} of every endpoint, from one forward pass."""
    images = tf.convert_to_tensor(images)
    key = (tuple(images.shape[1:]), images.dtype)
    if key not in self._traced:
      spec = tf.TensorSpec([None, *key[0]], images.dtype)
      self._traced[key] = tf.function(
          lambda x: representations(self.backbone, x, self.endpoints,
                                    self.max_features, self.rule),
          input_signature=[spec])
    return self._traced[key](images)

  def __call__(self, images):
    out = self.all(images)
    return out[self.endpoint] if self.single else out

  def _computed(self, source, split, spec, batch_size, start):
    """numpy ({endpoint: features}, labels) batches of `split` from `start`."""
    preprocess = get_spec(spec, training=False)
    ds = source.dataset(split, shuffle=False).skip(start)
    ds = ds.map(lambda x: {"image": preprocess(x)["image"],
                           "label": x["label"]},
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for batch in ds:
      out = self.all(batch["image"])
      yield {k: v.numpy() for k, v in out.items()}, batch["label"].numpy()

  def export_split(self, source, split, out_dirs, *, spec, batch_size=256,
                   shard_size=features_lib.DEFAULT_SHARD_SIZE,
                   **storage):
    """Writes the features of one split for every endpoint in one pass.

    `out_dirs` is {endpoint: folder} (or one folder for a single endpoint).
    Each endpoint's cache resumes on its own: the pass starts at the
    earliest example any of them lacks, and endpoints whose cache is
    complete are not computed. `storage` (dtype, shard_format) goes to
    `features.write_split`. Returns {endpoint: metadata} (one metadata for a
    single endpoint).
    """
    single = isinstance(out_dirs, str)
    if single:
      out_dirs = {self.endpoint: out_dirs}
    unknown = sorted(set(out_dirs) - set(self.endpoints))
    if unknown:
      raise ConfigError(f"out_dirs names endpoints {unknown} this extractor "
                        f"does not compute: expected some of {self.endpoints}.")
    if source.num_examples(split) == 0:
      raise ConfigError(f"Split {split!r} of {source.name!r} is empty.")
    logging.info("Exporting %s features of %s:%s (%d images) in one pass.",
                 ", ".join(out_dirs), source.name, split,
                 source.num_examples(split))
    metas = _write_endpoints(
        out_dirs, split, lambda start: self._computed(
            source, split, spec, batch_size, start), shard_size, storage)
    return metas[self.endpoint] if single else metas


class _Fanout:
  """One pass of computed batches feeding one `write_split` per endpoint.

  Each writer runs in its own thread and asks for its batches from the
  example it resumes at (`make_batches(start)`); the producer computes from
  the earliest of those starts and hands each writer its endpoint's
  features, dropping the examples that writer already has. The starts are
  known before the pass (`features.completed_examples`); a writer asking
  for another start is an error, never a misaligned cache.
  """

  def __init__(self, starts, begin):
    self.starts, self.begin = starts, begin
    self.queues = {k: queue.Queue(_AHEAD) for k in starts}
    self.stop = threading.Event()
    self.done = set()  # writers that returned: nothing more goes to them

  def put(self, endpoint, item):
    return host.put(self.queues[endpoint], item, self.stop,
                    lambda: endpoint in self.done)

  def make_batches(self, endpoint):
    def make(start):
      if start != self.starts[endpoint]:
        raise features_lib.FeatureCacheError(
            f"The {endpoint} cache resumes at example {start}, expected "
            f"{self.starts[endpoint]}: it changed during the export.")
      return self._consume(endpoint, start - self.begin)
    return make

  def _consume(self, endpoint, skip):
    for x, y in host.drain(self.queues[endpoint]):
      if skip >= len(y):
        skip -= len(y)
        continue
      yield x[skip:], y[skip:]
      skip = 0


def _write_endpoints(out_dirs, split, compute, shard_size, storage):
  """Writes every endpoint's cache of `split` from one pass of
  `compute(start)` ({endpoint: x}, y) batches; {endpoint: metadata}."""
  metas, starts = {}, {}
  for endpoint, out_dir in out_dirs.items():
    meta_path = features_lib.metadata_path(out_dir, split)
    if tf.io.gfile.exists(meta_path) and features_lib.load_metadata(
        out_dir, split)["complete"]:
      metas[endpoint] = features_lib.write_split(
          out_dir, split, [], layer=endpoint, shard_size=shard_size,
          **storage)
    else:
      starts[endpoint] = features_lib.completed_examples(out_dir, split)
  if not starts:
    return metas
  fan = _Fanout(starts, min(starts.values()))
  errors = []

  def write(endpoint):
    try:
      metas[endpoint] = features_lib.write_split(
          out_dirs[endpoint], split, fan.make_batches(endpoint),
          layer=endpoint, shard_size=shard_size, **storage)
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
      fan.stop.set()
    finally:
      # A writer that stopped early must not block the producer.
      fan.done.add(endpoint)
      while True:
        try:
          fan.queues[endpoint].get_nowait()
        except queue.Empty:
          break

  threads = [threading.Thread(target=write, args=(k,), daemon=True,
                              name=f"selfsup-features-{k}") for k in starts]
  for t in threads:
    t.start()
  try:
    for reps, labels in compute(fan.begin):
      for endpoint in starts:
        if not fan.put(endpoint, (True, (reps[endpoint], labels))):
          break
      if fan.stop.is_set():
        break
    end = (False, None)
  except BaseException as e:  # pylint: disable=broad-except
    end = (False, e)
  if end[1] is None and fan.stop.is_set():
    # Another writer failed: the others must not mark a partial split done.
    end = (False, features_lib.FeatureCacheError(
        f"The export of {split!r} stopped: another endpoint's writer failed."))
  for endpoint in starts:
    # Past `stop`, yet every writer still reading must get its end marker,
    # or it waits for a batch forever.
    host.put(fan.queues[endpoint], end, threading.Event(),
             lambda e=endpoint: e in fan.done)
  for t in threads:
    t.join()
  if errors:  # the first is the cause (a later one may be our stop notice)
    raise errors[0]
  if end[1] is not None:
    raise end[1]
  return metas


def export_features(export_dir, source, splits, out_dir, *, endpoint,
                    batch_size=256, max_features=MAX_FEATURES,
                    shard_size=features_lib.DEFAULT_SHARD_SIZE, spec=None,
                    dtype="float32", shard_format="tfrecord",
                    pooling_rule=pooling.DEFAULT_RULE):
  """Writes the features of `splits` of `source` for one or more endpoints.

  `endpoint` is one name with `out_dir` one folder, or a sequence of names
  with `out_dir` a {endpoint: folder} mapping: then every endpoint comes
  from the same forward pass (layer-wise evaluation costs one pass, not one
  per layer). `dtype` and `shard_format` say how the cache stores them
  (`features.write_split`); `pooling_rule` how spatial endpoints are pooled
  (`selfsup.core.pooling`). Resumable shard by shard: complete splits and
  shards are kept. Returns {split: metadata} (one endpoint) or
  {split: {endpoint: metadata}}.
  """
  info = export_lib.load_info(export_dir)
  single = isinstance(endpoint, str)
  endpoints = (endpoint,) if single else tuple(endpoint)
  out_dirs = {endpoint: out_dir} if single else dict(out_dir)
  if set(out_dirs) != set(endpoints):
    raise ConfigError(f"out_dir must map each endpoint {endpoints} to a "
                      f"folder, got {sorted(out_dirs)}.")
  for name in endpoints:
    if name not in info["endpoints"]:
      raise ConfigError(f"endpoint={name!r} is not an endpoint of the "
                        f"exported {info['backbone']}: expected one of "
                        f"{info['endpoints']}.")
  backbone = export_lib.load_backbone(export_dir)
  backbone.trainable = False  # frozen: evaluation never updates it
  extractor = FeatureExtractor(backbone, endpoints, max_features,
                               pooling_rule)
  spec = spec or info["eval_specs"]["eval"]
  metas = {split: extractor.export_split(source, split, out_dirs, spec=spec,
                                         batch_size=batch_size,
                                         shard_size=shard_size, dtype=dtype,
                                         shard_format=shard_format)
           for split in splits}
  if single:
    return {split: m[endpoint] for split, m in metas.items()}
  return metas


def feature_dir(workdir, endpoint, source_name, fraction=None):
  """Where a workdir caches one endpoint's features of one source."""
  name = source_name if fraction is None else f"{source_name}_frac{fraction}"
  return os.path.join(workdir, "features", name, endpoint)


def as_numpy(out_dir, split):
  """(x, y) of a cached split, checked against its metadata."""
  x, y = features_lib.read_split(out_dir, split)
  return np.asarray(x, np.float32), np.asarray(y, np.int64)
