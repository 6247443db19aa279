"""Cached features: sharded TFRecords plus one metadata file per split.

Layout of `out_dir` (a local or `gs://` path; all I/O goes through
`tf.io.gfile`):

  <split>-00000.tfrecord, <split>-00001.tfrecord, ...   shards, in order
  <split>.json                                           metadata

Each record is a `tf.train.Example` with `features` (bytes: `dim` float32
values, little-endian) and `label` (int64). The metadata records the layer,
dimension, dtype, total count, whether the split is complete, and per shard
its file, example count, size and sha256. Shards and metadata are written
under a temporary name and renamed when complete, and the metadata is
rewritten after every shard, so an interrupted export resumes shard by shard
and a reader never mistakes a partial split for a whole one.

Provenance: a split may carry a `fingerprint`, a dict of everything that
determines its values (the export's weights, the source and its arguments,
the split, layer, pooling, preprocessing, dtype), and `fingerprint_sha256`.
A reader that passes its own fingerprint never reads a cache made under
another (`FeatureCacheError`); `claim` replaces such a cache atomically (the
metadata first, so no reader sees old shards under the new fingerprint) and
logs which entries differ.
"""
import hashlib
import json
import os
import time
from typing import Callable, Iterable, Tuple, Union

from absl import logging
import numpy as np
import tensorflow as tf

FORMAT = "selfsup-features-v1"
DEFAULT_SHARD_SIZE = 8192
_READ_BATCH = 1024
_HASH_CHUNK = 8 << 20
# Arrays from read_split are aligned so that lbfgs.fit can share their memory
# with TensorFlow instead of copying (TF's CPU kernels need 64-byte alignment).
_ALIGN = 64

_Batches = Iterable[Tuple[np.ndarray, np.ndarray]]


class FeatureCacheError(ValueError):
  """A feature cache that is missing, incomplete, corrupt or inconsistent."""


def metadata_path(out_dir: str, split: str) -> str:
  return os.path.join(out_dir, f"{split}.json")


def _shard_name(split: str, index: int) -> str:
  return f"{split}-{index:05d}.tfrecord"


def _write_json_atomically(path: str, obj) -> None:
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(obj, indent=1))
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def load_metadata(out_dir: str, split: str) -> dict:
  """The metadata of `split`, checked for the keys readers rely on."""
  path = metadata_path(out_dir, split)
  if not tf.io.gfile.exists(path):
    raise FeatureCacheError(f"No feature metadata {path}: split {split!r} was "
                            f"never exported to {out_dir}.")
  try:
    with tf.io.gfile.GFile(path) as f:
      meta = json.loads(f.read())
  except ValueError as e:
    raise FeatureCacheError(f"Feature metadata {path} is not JSON: {e}") from e
  missing = {"format", "layer", "dim", "dtype", "complete", "num_examples",
             "shards"} - set(meta)
  if missing or meta["format"] != FORMAT or meta["dtype"] != "float32":
    raise FeatureCacheError(
        f"Feature metadata {path} is not {FORMAT} with float32 features "
        f"(missing keys {sorted(missing)}, format {meta.get('format')!r}, "
        f"dtype {meta.get('dtype')!r}).")
  return meta


def _check_shard(out_dir: str, entry: dict, dim: int, verify: bool) -> str:
  """Raises FeatureCacheError unless the shard is as the metadata says."""
  path = os.path.join(out_dir, entry["file"])
  if not tf.io.gfile.exists(path):
    raise FeatureCacheError(f"Shard {path} listed in the metadata is missing.")
  size = tf.io.gfile.stat(path).length
  if size != entry["num_bytes"]:
    raise FeatureCacheError(f"Shard {path} has {size} bytes, expected "
                            f"{entry['num_bytes']} (truncated or overwritten).")
  if verify:
    digest = _sha256(path)
    if digest != entry["sha256"]:
      raise FeatureCacheError(f"Shard {path} is corrupt: sha256 {digest}, "
                              f"expected {entry['sha256']}.")
    first = next(iter(tf.data.TFRecordDataset(path).take(1))).numpy()
    raw = tf.train.Example.FromString(first).features.feature["features"]
    got = len(raw.bytes_list.value[0]) // 4 if raw.bytes_list.value else 0
    if got != dim:
      raise FeatureCacheError(f"Shard {path} holds {got}-dimensional "
                              f"features, expected {dim} from the metadata.")
  return path


def _verified_prefix(out_dir: str, meta: dict) -> list:
  """The leading shards that are present and intact: what resume keeps."""
  kept = []
  for entry in meta["shards"]:
    try:
      _check_shard(out_dir, entry, meta["dim"], verify=True)
    except (FeatureCacheError, tf.errors.OpError) as e:
      logging.warning("Rewriting from shard %s on: %s", entry["file"], e)
      break
    kept.append(entry)
  return kept


def completed_examples(out_dir: str, split: str) -> int:
  """How many leading examples of `split` are already exported and intact.

  A caller resuming an export can start its batches there; `write_split`
  also accepts a callable `make_batches(start_example)` that does this.
  """
  if not tf.io.gfile.exists(metadata_path(out_dir, split)):
    return 0
  meta = load_metadata(out_dir, split)
  if meta["complete"]:
    return meta["num_examples"]
  return sum(s["num_examples"] for s in _verified_prefix(out_dir, meta))


def fingerprint_sha256(fingerprint: dict) -> str:
  """The hash of a fingerprint's canonical JSON."""
  text = json.dumps(fingerprint, sort_keys=True, default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flatten(obj, prefix=""):
  if isinstance(obj, dict):
    out = {}
    for key, value in obj.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: obj}


def differences(old, new) -> list:
  """'key: old -> new' for each entry in which two fingerprints differ."""
  old, new = _flatten(old or {}), _flatten(new or {})
  return [f"{k}: {old.get(k, '(none)')!r} -> {new.get(k, '(none)')!r}"
          for k in sorted(set(old) | set(new))
          if old.get(k, "(none)") != new.get(k, "(none)")]


def _fresh(split, layer, shard_size, fingerprint=None):
  meta = dict(format=FORMAT, split=split, layer=layer, dim=None,
              dtype="float32", complete=False, num_examples=0,
              shard_size=shard_size, shards=[])
  if fingerprint is not None:
    meta.update(fingerprint=fingerprint,
                fingerprint_sha256=fingerprint_sha256(fingerprint))
  return meta


def _replace_split(out_dir, split, old_meta, fresh):
  """Marks `split` as `fresh` (atomically), then deletes its old shards."""
  _write_json_atomically(metadata_path(out_dir, split), fresh)
  for entry in old_meta.get("shards", []):
    path = os.path.join(out_dir, entry["file"])
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def matches(meta: dict, fingerprint: dict) -> bool:
  return meta.get("fingerprint_sha256") == fingerprint_sha256(fingerprint)


def claim(out_dir: str, split: str, fingerprint: dict, *, layer: str,
          shard_size: int = DEFAULT_SHARD_SIZE) -> bool:
  """Makes `out_dir/split` a cache of `fingerprint`; True if it is complete.

  A cache made under the same fingerprint is kept (complete, or partial to
  be resumed by `write_split`). Any other (another fingerprint, none, or
  unreadable metadata) is replaced by an empty one carrying `fingerprint`,
  and the log says which entries differ.
  """
  tf.io.gfile.makedirs(out_dir)
  fresh = _fresh(split, layer, shard_size, fingerprint)
  path = metadata_path(out_dir, split)
  if not tf.io.gfile.exists(path):
    _write_json_atomically(path, fresh)
    return False
  try:
    meta = load_metadata(out_dir, split)
  except FeatureCacheError as e:
    logging.warning("Recomputing %s: %s", path, e)
    _write_json_atomically(path, fresh)
    return False
  if matches(meta, fingerprint) and meta["layer"] == layer:
    return bool(meta["complete"])
  why = (differences(meta.get("fingerprint"), fingerprint)
         if "fingerprint" in meta else ["it records no fingerprint"])
  logging.warning("Recomputing the features of %s: the cache was made with "
                  "other settings (%s).", path, "; ".join(why))
  _replace_split(out_dir, split, meta, fresh)
  return False


def _remove_partial_shards(out_dir, split):
  """What a killed writer left: `<split>-N.tfrecord.tmp`, `<split>.json.tmp`."""
  for path in tf.io.gfile.glob(os.path.join(out_dir, f"{split}-*.tmp")) + [
      metadata_path(out_dir, split) + ".tmp"]:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def _start(out_dir, split, layer, shard_size, resume, fingerprint) -> dict:
  """Metadata to continue from: the verified part of an earlier run, or new."""
  fresh = _fresh(split, layer, shard_size, fingerprint)
  if not tf.io.gfile.exists(metadata_path(out_dir, split)):
    return fresh
  meta = load_metadata(out_dir, split)
  stale = fingerprint is not None and not matches(meta, fingerprint)
  if not resume or stale:
    if stale:
      logging.warning(
          "Recomputing the features of %s: the cache was made with other "
          "settings (%s).", metadata_path(out_dir, split), "; ".join(
              differences(meta.get("fingerprint"), fingerprint)))
    # Mark the split incomplete before its old shards go.
    _replace_split(out_dir, split, meta, fresh)
    return fresh
  if meta["layer"] != layer or (not meta["complete"]
                                and meta.get("shard_size") != shard_size):
    raise FeatureCacheError(
        f"{metadata_path(out_dir, split)} holds layer {meta['layer']!r} with "
        f"shard_size {meta.get('shard_size')}, asked for {layer!r} with "
        f"{shard_size}; pass resume=False to overwrite it.")
  if not meta["complete"]:
    meta["shards"] = _verified_prefix(out_dir, meta)
    meta["num_examples"] = sum(s["num_examples"] for s in meta["shards"])
  return meta


def _skip(batches, count: int):
  """Drops the first `count` examples of an iterable of batches."""
  for x, y in batches:
    x, y = np.asarray(x), np.asarray(y)
    if count >= len(x):
      count -= len(x)
      continue
    yield x[count:], y[count:]
    count = 0
  if count:
    raise ValueError(f"batches ended {count} examples short of those already "
                     f"written: they must yield the same examples every run.")


def _checked(x, y, dim):
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim != 2 or y.shape != x.shape[:1]:
    raise ValueError(f"Each batch must be (features [b, d], labels [b]), got "
                     f"shapes {x.shape} and {y.shape}.")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"Batch features have dimension {x.shape[1]}, expected "
                     f"{dim} like the shards before.")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"Labels must be integers, got dtype {y.dtype}.")
  return x.astype("<f4", copy=False), y.astype(np.int64, copy=False)


def _example(features: np.ndarray, label: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "features": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[features.tobytes()])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString(deterministic=True)  # map order fixed: same bytes


def write_split(out_dir: str, split: str,
                batches: Union[_Batches, Callable[[int], _Batches]], *,
                layer: str, shard_size: int = DEFAULT_SHARD_SIZE,
                resume: bool = True, progress: bool = True,
                fingerprint: dict = None) -> dict:
  """Writes `split`'s features as shards of `shard_size` examples.

  Args:
    out_dir: directory (created if needed), local or `gs://`.
    split: name of the split, used in the file names.
    batches: an iterable of (features [b, d] float, labels [b] int), or a
      callable `make_batches(start_example)` returning one that starts at
      that example. On resume a callable is asked only for what is missing;
      a plain iterable is run from the start and the examples already written
      are dropped. Either must produce the same examples on every run.
    layer: name of the endpoint the features come from.
    shard_size: examples per shard (the last one may hold fewer).
    resume: keep the complete, verified shards of an earlier run of the same
      layer and shard size, and write only the rest. False rewrites all.
    progress: log each finished shard with counts and rate.
    fingerprint: what determines the values (see the module docstring): an
      earlier run under another fingerprint is discarded, not resumed. None
      keeps whatever fingerprint an earlier run recorded (see `claim`).

  Returns:
    The split's metadata, as written to `<out_dir>/<split>.json`.
  """
  if not split or "/" in split:
    raise ValueError(f"split must be a non-empty name without '/', got "
                     f"{split!r}.")
  if shard_size < 1:
    raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
  tf.io.gfile.makedirs(out_dir)
  _remove_partial_shards(out_dir, split)
  meta = _start(out_dir, split, layer, shard_size, resume, fingerprint)
  if meta["complete"]:
    logging.info("%s: already complete (%d examples), nothing to do.",
                 metadata_path(out_dir, split), meta["num_examples"])
    return meta
  done = meta["num_examples"]
  if callable(batches):
    batches = batches(done)
  elif done:
    logging.warning("%s: skipping %d examples already written; pass a callable"
                    " make_batches(start) to avoid computing them again.",
                    split, done)
    batches = _skip(batches, done)
  _write_json_atomically(metadata_path(out_dir, split), meta)

  start, written = time.perf_counter(), 0
  writer, tmp, count = None, None, 0

  def finish_shard():
    nonlocal writer, written
    writer.close()
    writer = None
    entry = dict(file=_shard_name(split, len(meta["shards"])),
                 num_examples=count, num_bytes=tf.io.gfile.stat(tmp).length,
                 sha256=_sha256(tmp))
    tf.io.gfile.rename(tmp, os.path.join(out_dir, entry["file"]),
                       overwrite=True)
    meta["shards"].append(entry)
    meta["num_examples"] += count
    _write_json_atomically(metadata_path(out_dir, split), meta)
    written += count
    if progress:
      rate = written / max(time.perf_counter() - start, 1e-9)
      logging.info("%s: %d examples in %d shards (%.0f examples/s)", split,
                   meta["num_examples"], len(meta["shards"]), rate)

  try:
    for x, y in batches:
      x, y = _checked(x, y, meta["dim"])
      meta["dim"] = x.shape[1]
      for features, label in zip(x, y):
        if writer is None:
          name = _shard_name(split, len(meta["shards"]))
          tmp = os.path.join(out_dir, name + ".tmp")
          writer, count = tf.io.TFRecordWriter(tmp), 0
        writer.write(_example(features, int(label)))
        count += 1
        if count == shard_size:
          finish_shard()
    if writer is not None:
      finish_shard()
  finally:
    if writer is not None:  # interrupted: drop the partial shard
      writer.close()
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.remove(tmp)
  if meta["num_examples"] == 0:
    raise ValueError(f"batches for split {split!r} yielded no examples.")
  meta["complete"] = True
  _write_json_atomically(metadata_path(out_dir, split), meta)
  return meta


def _complete_shards(out_dir, split, verify, fingerprint=None):
  """The metadata and shard paths of a complete, non-empty, intact split."""
  meta = load_metadata(out_dir, split)
  where = metadata_path(out_dir, split)
  if fingerprint is not None and not matches(meta, fingerprint):
    raise FeatureCacheError(
        f"{where} was made with other settings than those asked for ("
        + "; ".join(differences(meta.get("fingerprint"), fingerprint))
        + "); export the features again.")
  if not meta["complete"]:
    raise FeatureCacheError(
        f"{where} is incomplete ({meta['num_examples']} examples in "
        f"{len(meta['shards'])} shards so far); run the export again to "
        f"resume it.")
  counted = sum(s["num_examples"] for s in meta["shards"])
  if meta["num_examples"] == 0 or counted == 0:
    raise FeatureCacheError(f"{where} describes an empty split.")
  if counted != meta["num_examples"]:
    raise FeatureCacheError(f"{where} lists shards of {counted} examples in "
                            f"all, expected {meta['num_examples']}.")
  paths = [_check_shard(out_dir, s, meta["dim"], verify)
           for s in meta["shards"]]
  return meta, paths


def _parse_batch(serialized, path, dim):
  """Batch of records -> (features [b, dim] float32, labels [b] int64)."""
  parsed = tf.io.parse_example(serialized, {
      "features": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64)})
  lengths = tf.strings.length(parsed["features"])
  check = tf.debugging.Assert(
      tf.reduce_all(tf.equal(lengths, 4 * dim)),
      [f"feature bytes per example differ from 4 * dim = {4 * dim} "
       f"(dim from the metadata) in shard", path, "got", lengths])
  with tf.control_dependencies([check]):
    features = tf.io.decode_raw(parsed["features"], tf.float32)
  return tf.reshape(features, [-1, dim]), parsed["label"]


def _shard_dataset(path, dim):
  return tf.data.TFRecordDataset(path).batch(_READ_BATCH).map(
      lambda s: _parse_batch(s, path, dim), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).prefetch(tf.data.AUTOTUNE)


def read_split(out_dir: str, split: str, *, verify: bool = True,
               fingerprint: dict = None):
  """Loads a complete split: (features [N, d] float32, labels [N] int64).

  The features are 64-byte aligned. `verify` checks every shard's sha256,
  which reads each file twice. Raises FeatureCacheError, naming the file, on
  missing or incomplete metadata, an empty split, or a shard that is missing,
  corrupt or inconsistent with the metadata, or (when `fingerprint` is
  given) a split made under another fingerprint.
  """
  meta, paths = _complete_shards(out_dir, split, verify, fingerprint)
  n, dim = meta["num_examples"], meta["dim"]
  buf = np.empty(n * dim * 4 + _ALIGN, np.uint8)
  offset = (-buf.ctypes.data) % _ALIGN
  x = buf[offset:offset + n * dim * 4].view(np.float32).reshape(n, dim)
  y = np.empty([n], np.int64)
  row = 0
  for path, entry in zip(paths, meta["shards"]):
    end = row + entry["num_examples"]
    try:
      for features, labels in _shard_dataset(path, dim):
        size = len(labels)
        if row + size > end:
          raise FeatureCacheError(f"Shard {path} holds more than the "
                                  f"{entry['num_examples']} examples the "
                                  f"metadata lists.")
        x[row:row + size], y[row:row + size] = features.numpy(), labels.numpy()
        row += size
    except tf.errors.OpError as e:
      raise FeatureCacheError(
          f"Shard {path} cannot be read: {e.message}") from e
    if row != end:
      raise FeatureCacheError(f"Shard {path} does not hold the "
                              f"{entry['num_examples']} examples the metadata "
                              f"lists.")
  return x, y


def dataset(out_dir: str, split: str, batch_size: int, *,
            shuffle_buffer: int = 0, seed=None, drop_remainder: bool = False,
            verify: bool = True, fingerprint: dict = None) -> tf.data.Dataset:
  """A `tf.data.Dataset` of (features [b, d] float32, labels [b] int64).

  Args:
    out_dir: directory given to `write_split`.
    split: split name.
    batch_size: examples per batch.
    shuffle_buffer: if > 0, shuffle the shards, then the examples through a
      buffer of this size. Otherwise the order is that of `read_split`.
    seed: seed of the shuffles.
    drop_remainder: drop a last batch smaller than `batch_size`.
    verify: check every shard's sha256 and dimension now; a record of the
      wrong size still fails at iteration, naming its shard.

  Raises:
    FeatureCacheError: as `read_split`, when called.
  """
  meta, paths = _complete_shards(out_dir, split, verify, fingerprint)
  dim = meta["dim"]
  files = tf.data.Dataset.from_tensor_slices(paths)
  if shuffle_buffer:
    files = files.shuffle(len(paths), seed=seed)
  ds = files.interleave(lambda p: _shard_dataset(p, dim), cycle_length=1)
  if shuffle_buffer:
    ds = ds.unbatch().shuffle(shuffle_buffer, seed=seed).batch(
        batch_size, drop_remainder=drop_remainder)
  else:
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE)
