"""Tests for selfsup.evaluation.features."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from selfsup.evaluation import features as F

DIM, N, SHARD = 6, 50, 8  # 50 examples: six full shards and one of two


def _data(n=N, dim=DIM, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, dim)).astype(np.float32),
          rng.integers(0, 10, size=n))


def _batches(x, y, size=7, start=0, fail_at=None):
  """Batches of 7 (they straddle shards); raises once `fail_at` is reached."""
  for i in range(start, len(x), size):
    if fail_at is not None and i >= fail_at:
      raise RuntimeError("simulated interruption")
    yield x[i:i + size], y[i:i + size]


def _write(out_dir, x, y, **kw):
  return F.write_split(str(out_dir), "train", _batches(x, y), layer="block4",
                       shard_size=SHARD, progress=False, **kw)


def _meta(out_dir, split="train"):
  with open(os.path.join(out_dir, f"{split}.json")) as f:
    return json.load(f)


def _edit_meta(out_dir, **changes):
  meta = _meta(out_dir)
  meta.update(changes)
  with open(os.path.join(out_dir, "train.json"), "w") as f:
    json.dump(meta, f)


def test_round_trip(tmp_path):
  x, y = _data()
  meta = _write(tmp_path, x, y)
  assert meta["complete"] and meta["num_examples"] == N and meta["dim"] == DIM
  assert meta["layer"] == "block4" and meta["dtype"] == "float32"
  assert [s["num_examples"] for s in meta["shards"]] == [8] * 6 + [2]
  assert [s["file"] for s in meta["shards"]][:2] == [
      "train-00000.tfrecord", "train-00001.tfrecord"]
  assert _meta(tmp_path) == meta
  assert sorted(os.listdir(tmp_path)) == sorted(
      ["train.json"] + [s["file"] for s in meta["shards"]])  # no temp files
  got_x, got_y = F.read_split(str(tmp_path), "train")
  np.testing.assert_array_equal(got_x, x)
  np.testing.assert_array_equal(got_y, y)
  assert got_x.dtype == np.float32 and got_y.dtype == np.int64
  assert got_x.ctypes.data % 64 == 0
  assert F.completed_examples(str(tmp_path), "train") == N


def test_dataset_matches_read_split(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y)
  batches = list(F.dataset(str(tmp_path), "train", batch_size=16))
  assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
  np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
  dropped = list(F.dataset(str(tmp_path), "train", 16, drop_remainder=True))
  assert [len(b[1]) for b in dropped] == [16, 16, 16]
  # Shuffled: same examples, another order.
  shuffled = list(F.dataset(str(tmp_path), "train", 16, shuffle_buffer=64,
                            seed=1))
  sx = np.concatenate([b[0] for b in shuffled])
  sy = np.concatenate([b[1] for b in shuffled])
  order = np.lexsort(sx.T)
  np.testing.assert_array_equal(sx[order], x[np.lexsort(x.T)])
  np.testing.assert_array_equal(np.sort(sy), np.sort(y))
  assert not np.array_equal(sx, x)


def _interrupted(out_dir, x, y, fail_at=30):
  with pytest.raises(RuntimeError, match="simulated"):
    F.write_split(str(out_dir), "train", _batches(x, y, fail_at=fail_at),
                  layer="block4", shard_size=SHARD, progress=False)


def test_resume_with_callable_matches_uninterrupted(tmp_path):
  x, y = _data()
  _write(tmp_path / "whole", x, y)
  _interrupted(tmp_path / "resumed", x, y)
  # 35 examples were consumed: four shards complete, the fifth dropped.
  meta = _meta(tmp_path / "resumed")
  assert not meta["complete"] and meta["num_examples"] == 32
  assert not any(name.endswith(".tmp")
                 for name in os.listdir(tmp_path / "resumed"))
  with pytest.raises(F.FeatureCacheError, match="incomplete"):
    F.read_split(str(tmp_path / "resumed"), "train")
  with pytest.raises(F.FeatureCacheError, match="incomplete"):
    F.dataset(str(tmp_path / "resumed"), "train", 4)
  assert F.completed_examples(str(tmp_path / "resumed"), "train") == 32

  starts = []

  def make_batches(start):
    starts.append(start)
    return _batches(x, y, start=start)

  resumed = F.write_split(str(tmp_path / "resumed"), "train", make_batches,
                          layer="block4", shard_size=SHARD, progress=False)
  assert starts == [32]
  whole = _meta(tmp_path / "whole")
  assert resumed == whole  # same files, counts and checksums
  got_x, got_y = F.read_split(str(tmp_path / "resumed"), "train")
  np.testing.assert_array_equal(got_x, x)
  np.testing.assert_array_equal(got_y, y)
  # Complete: a further run neither asks for batches nor changes anything.
  F.write_split(str(tmp_path / "resumed"), "train", make_batches,
                layer="block4", shard_size=SHARD, progress=False)
  assert starts == [32] and _meta(tmp_path / "resumed") == whole


def test_resume_with_iterable_skips_done_examples(tmp_path):
  x, y = _data()
  _interrupted(tmp_path, x, y, fail_at=20)
  assert F.completed_examples(str(tmp_path), "train") == 16
  _write(tmp_path, x, y)
  got_x, got_y = F.read_split(str(tmp_path), "train")
  np.testing.assert_array_equal(got_x, x)
  np.testing.assert_array_equal(got_y, y)


def test_resume_rewrites_from_a_damaged_shard(tmp_path):
  x, y = _data()
  _interrupted(tmp_path, x, y, fail_at=30)
  with open(tmp_path / "train-00001.tfrecord", "r+b") as f:
    f.seek(40)
    f.write(b"\xff")
  assert F.completed_examples(str(tmp_path), "train") == 8
  _write(tmp_path, x, y)
  np.testing.assert_array_equal(F.read_split(str(tmp_path), "train")[0], x)


def test_resume_refuses_another_layer_and_resume_false_overwrites(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y)
  with pytest.raises(F.FeatureCacheError, match="layer 'block4'"):
    F.write_split(str(tmp_path), "train", _batches(x, y), layer="block3",
                  shard_size=SHARD, progress=False)
  x2, y2 = _data(n=12, seed=1)
  F.write_split(str(tmp_path), "train", _batches(x2, y2), layer="block3",
                shard_size=SHARD, progress=False, resume=False)
  got_x, got_y = F.read_split(str(tmp_path), "train")
  np.testing.assert_array_equal(got_x, x2)
  np.testing.assert_array_equal(got_y, y2)
  assert len(os.listdir(tmp_path)) == 3  # old shards 2..6 are gone


def test_writer_rejects_bad_batches(tmp_path):
  x, y = _data()
  with pytest.raises(ValueError, match="dimension 5, expected 6"):
    F.write_split(str(tmp_path), "a", [(x[:8], y[:8]), (x[8:16, :5], y[8:16])],
                  layer="l", shard_size=SHARD, progress=False)
  with pytest.raises(ValueError, match="shapes"):
    F.write_split(str(tmp_path), "b", [(x[:8], y[:7])], layer="l",
                  progress=False)
  with pytest.raises(ValueError, match="yielded no examples"):
    F.write_split(str(tmp_path), "c", [], layer="l", progress=False)


# Each corruption: how to damage a written split, and the error it must give.
def _missing_shard(d):
  os.remove(d / "train-00002.tfrecord")
  return "train-00002.tfrecord listed in the metadata is missing"


def _flipped_byte(d):
  with open(d / "train-00003.tfrecord", "r+b") as f:
    f.seek(30)
    byte = f.read(1)
    f.seek(30)
    f.write(bytes([byte[0] ^ 1]))
  return "train-00003.tfrecord is corrupt: sha256"


def _truncated(d):
  with open(d / "train-00004.tfrecord", "r+b") as f:
    f.truncate(100)
  return "train-00004.tfrecord has 100 bytes, expected"


def _wrong_dim(d):
  _edit_meta(d, dim=DIM + 1)
  return "train-00000.tfrecord holds 6-dimensional features, expected 7"


def _empty(d):
  _edit_meta(d, shards=[], num_examples=0)
  return "empty split"


def _no_metadata(d):
  os.remove(d / "train.json")
  return "No feature metadata .*train.json"


def _incomplete(d):
  _edit_meta(d, complete=False)
  return "train.json is incomplete"


@pytest.mark.parametrize("damage", [
    _missing_shard, _flipped_byte, _truncated, _wrong_dim, _empty,
    _no_metadata, _incomplete])
@pytest.mark.parametrize("reader", ["read_split", "dataset"])
def test_corruption_is_named(tmp_path, damage, reader):
  x, y = _data()
  _write(tmp_path, x, y)
  match = damage(tmp_path)
  with pytest.raises(F.FeatureCacheError, match=match):
    if reader == "read_split":
      F.read_split(str(tmp_path), "train")
    else:
      F.dataset(str(tmp_path), "train", 16)


def test_wrong_dim_unverified_fails_at_read_naming_the_shard(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y)
  _edit_meta(tmp_path, dim=DIM + 1)
  with pytest.raises(F.FeatureCacheError, match="train-00000.tfrecord"):
    F.read_split(str(tmp_path), "train", verify=False)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="train-00000.tfrecord"):
    list(F.dataset(str(tmp_path), "train", 16, verify=False))


def test_corrupt_shard_unverified_fails_at_read_naming_the_shard(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y)
  _flipped_byte(tmp_path)  # the record's CRC no longer matches
  with pytest.raises(F.FeatureCacheError,
                     match="train-00003.tfrecord cannot be read"):
    F.read_split(str(tmp_path), "train", verify=False)


def test_feature_cache_error_is_a_value_error():
  assert issubclass(F.FeatureCacheError, ValueError)


def test_resume_with_a_shorter_iterable_is_refused(tmp_path):
  x, y = _data()
  _interrupted(tmp_path, x, y, fail_at=30)
  with pytest.raises(ValueError, match="short of those already written"):
    _write(tmp_path, x[:20], y[:20])
  with pytest.raises(F.FeatureCacheError, match="incomplete"):
    F.read_split(str(tmp_path), "train")


@pytest.mark.parametrize("shard_format,dtype", [
    ("raw", "float32"), ("raw", "float16"), ("raw", "bfloat16"),
    ("tfrecord", "float16")])
def test_v2_storage_round_trip(tmp_path, shard_format, dtype):
  x, y = _data()
  meta = _write(tmp_path, x, y, dtype=dtype, shard_format=shard_format)
  assert meta["format"] == F.FORMAT_V2 and meta["dtype"] == dtype
  expected = x.astype(F._np_dtype(dtype)).astype(np.float32)
  got_x, got_y = F.read_split(str(tmp_path), "train")
  assert got_x.dtype == np.float32
  np.testing.assert_array_equal(got_x, expected)
  np.testing.assert_array_equal(got_y, y)
  ds_x = np.concatenate([b.numpy() for b, _ in F.dataset(str(tmp_path),
                                                         "train", 16)])
  np.testing.assert_array_equal(ds_x, expected)
  # Chunks of 5 rows (across the shards of 8), read ahead.
  source = F.ShardedFeatures(str(tmp_path), "train")
  chunks = list(source.chunks(5, prefetch=2))
  assert max(len(c[1]) for c in chunks) == 5
  np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]),
                                expected)
  np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), y)
  if shard_format == "raw":  # records of dim values and an int64 label
    itemsize = 4 if dtype == "float32" else 2
    assert sum(s["num_bytes"] for s in meta["shards"]) == N * (
        DIM * itemsize + 8)


def test_v1_cache_streams_and_other_storage_is_rewritten(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y)
  assert _meta(tmp_path)["format"] == F.FORMAT  # v1 stays the default
  chunks = list(F.ShardedFeatures(str(tmp_path), "train").chunks(16))
  np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)
  _write(tmp_path, x, y, shard_format="raw")
  assert _meta(tmp_path)["shard_format"] == "raw"
  assert not any(n.endswith(".tfrecord") for n in os.listdir(tmp_path))


def test_raw_shard_damage_is_named(tmp_path):
  x, y = _data()
  _write(tmp_path, x, y, shard_format="raw")
  _truncated_raw = tmp_path / "train-00001.raw"
  with open(_truncated_raw, "r+b") as f:
    f.truncate(10)
  with pytest.raises(F.FeatureCacheError, match="train-00001.raw has 10"):
    F.ShardedFeatures(str(tmp_path), "train", verify=False)
  with pytest.raises(ValueError, match="dtype must be one of"):
    _write(tmp_path / "b", x, y, dtype="int8")


@pytest.mark.parametrize("name", ["../../victim", "/tmp/victim",
                                  "train-00009.tfrecord", "x/../victim"])
def test_shard_names_not_of_the_writers_form_are_refused(tmp_path, name):
  """A crafted record's shard paths are never read, and a stale-cache
  cleanup never deletes outside the cache's folder."""
  cache = tmp_path / "a" / "b"
  x, y = _data()
  _write(cache, x, y)
  # Where the names lead: above the folder, or to a file in it not a shard.
  victims = [tmp_path / "victim", cache / "victim"]
  for victim in victims:
    victim.write_text("keep me")
  meta = _meta(cache)
  meta["shards"][1]["file"] = name.replace("/tmp/victim",
                                           str(tmp_path / "victim"))
  _edit_meta(cache, shards=meta["shards"])
  for read in (lambda: F.read_split(str(cache), "train"),
               lambda: F.ShardedFeatures(str(cache), "train", verify=False),
               lambda: F.completed_examples(str(cache), "train")):
    with pytest.raises(F.FeatureCacheError, match="expected 'train-00001"):
      read()
  # Another fingerprint: the cache is recomputed, nothing outside deleted.
  assert not F.claim(str(cache), "train", {"other": 1}, layer="block4")
  assert all(victim.read_text() == "keep me" for victim in victims)
  assert _meta(cache)["shards"] == [] and not _meta(cache)["complete"]
