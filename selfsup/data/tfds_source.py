"""TFDS sources: `imagenet2012` and `places365_small`, never downloaded.

Each selfsup split is a contiguous range of one TFDS split. TFDS shuffles the
examples once, with a fixed key, when it prepares a dataset, so "the first
50,000 training images" is a fixed random sample, identical on every machine
that prepared the same version, and reading it touches only the shards that
hold it.
"""
import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from selfsup.data import base
from selfsup.data import decode

# Hashes for subsets are drawn in [0, _BUCKETS).
_BUCKETS = 2**31 - 1


def _prepare_help(tfds_name, builder):
  data_dir = os.path.dirname(os.path.dirname(builder.data_dir))
  if builder.name == "imagenet2012":
    manual = os.path.join(data_dir, "downloads", "manual")
    return (
        "ImageNet must be downloaded by hand: get ILSVRC2012_img_train.tar "
        "and ILSVRC2012_img_val.tar from "
        "https://image-net.org/download-images, put both in "
        f"{manual} (or any folder given as --manual_dir), then run\n"
        f"  tfds build imagenet2012 --data_dir={data_dir} "
        f"--manual_dir={manual}")
  return ("Prepare it once on a machine with network access (TFDS downloads "
          f"it then):\n  tfds build {tfds_name} --data_dir={data_dir}")


def _builder(tfds_name, data_dir, version):
  """The TFDS builder, or DataNotFoundError saying how to prepare it."""
  full_name = f"{tfds_name}:{version}" if version else tfds_name
  builder = tfds.builder(full_name, data_dir=data_dir)
  if not builder.is_prepared():
    versions_dir = os.path.dirname(builder.data_dir)
    found = (sorted(v.rstrip("/") for v in tf.io.gfile.listdir(versions_dir))
             if tf.io.gfile.isdir(versions_dir) else [])
    others = (f" Versions found there: {found}; pass version=... to use one."
              if found else "")
    raise decode.DataNotFoundError(
        f"{full_name} is not prepared in the TFDS data_dir "
        f"{os.path.dirname(versions_dir)!r} (no dataset_info.json in "
        f"{builder.data_dir}), and selfsup never downloads data.{others}\n"
        + _prepare_help(tfds_name, builder))
  return builder


class TFDSSource(base.Source):
  """A TFDS dataset whose splits are ranges of the prepared TFDS splits.

  Args:
    name: the selfsup name.
    tfds_name: the TFDS name.
    ranges: split name -> (TFDS split, start, end); None for start/end means
      the start/end of the TFDS split, negative values count from the end.
    key_feature: a string feature naming each example (its file name), which
      subsets hash.
    data_dir: TFDS data_dir; None for TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    version: a TFDS version; None for the one this TFDS release builds.
    shuffle_buffer: encoded records shuffled in memory, after the shard order
      and interleaving, when `dataset(shuffle=True)`.
  """

  def __init__(self, name, tfds_name, ranges, *, key_feature, data_dir=None,
               version=None, shuffle_buffer=10_000):
    self.name = name
    self.builder = _builder(tfds_name, data_dir, version)
    self.num_classes = self.builder.info.features["label"].num_classes
    self.key_feature = key_feature
    self.shuffle_buffer = int(shuffle_buffer)
    available = self.builder.info.splits
    self._ranges = {}
    for split, (tfds_split, start, end) in ranges.items():
      if tfds_split not in available:
        logging.warning("%s: TFDS split %r is not prepared in %s, so split %r "
                        "is not available.", name, tfds_split,
                        self.builder.data_dir, split)
        continue
      total = available[tfds_split].num_examples
      start, end, _ = slice(start, end).indices(total)
      if end <= start:
        raise ValueError(f"{name}: split {split!r} = {tfds_split}[{start}:"
                         f"{end}] is empty ({tfds_split} has {total} images).")
      self._ranges[split] = (tfds_split, start, end)
    self.splits = tuple(self._ranges)

  def _num_examples(self, split):
    _, start, end = self._ranges[split]
    return end - start

  def _dataset(self, split, *, shuffle, seed, input_context, keep=None):
    """See `Source.dataset`; `keep` = (fraction, seed) keeps a hashed subset."""
    tfds_split, start, end = self._ranges[split]
    # Ranges, not TFDS's per-file sharding, so any number of input pipelines
    # works (TFDS needs at least one file per pipeline) and shards are even.
    first = start
    start, end = base.shard_range(start, end, input_context)
    # More pipelines than examples leaves some empty; TFDS refuses an empty
    # range, so read one example and take none of it.
    empty = end <= start
    if empty:
      start, end = first, first + 1
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, try_autocache=False,
        num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE)
    ds = self.builder.as_dataset(
        split=f"{tfds_split}[{start}:{end}]", shuffle_files=shuffle,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config)
    if empty:
      ds = ds.take(0)
    if keep is not None:
      ds = ds.filter(self._keep_fn(*keep))
    if shuffle and self.shuffle_buffer > 1:
      # Encoded records are ~10x smaller than decoded images: mix them here.
      ds = ds.shuffle(self.shuffle_buffer, seed=seed,
                      reshuffle_each_iteration=True)
    return ds.map(lambda ex: {"image": decode.decode_rgb(ex["image"]),
                              "label": tf.cast(ex["label"], tf.int64)},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def _keep_fn(self, fraction, seed):
    threshold = int(round(fraction * _BUCKETS))
    key = self.key_feature

    def keep(ex):
      bucket = tf.strings.to_hash_bucket_strong(ex[key], _BUCKETS,
                                                key=[int(seed), 0x5E1F])
      return bucket < threshold

    return keep


def imagenet2012(data_dir=None, *, holdout=50_000, version=None,
                 shuffle_buffer=10_000):
  """ImageNet (ILSVRC-2012) from TFDS.

  Splits: `val` = the first `holdout` images of TFDS `train` (the paper's own
  validation split), `train` = the rest, `trainval` = all of TFDS `train`,
  `official_val` = TFDS `validation` (50,000; for comparison with the
  literature, Table 2 of the paper).
  """
  return TFDSSource(
      "imagenet2012", "imagenet2012",
      {"train": ("train", holdout, None), "val": ("train", 0, holdout),
       "trainval": ("train", None, None),
       "official_val": ("validation", None, None)},
      key_feature="file_name", data_dir=data_dir, version=version,
      shuffle_buffer=shuffle_buffer)


def places365_small(data_dir=None, *, holdout=36_500, version=None,
                    shuffle_buffer=10_000):
  """Places365 (256x256 images) from TFDS, split like ImageNet.

  `val` = the first `holdout` images of TFDS `train` (as many as the official
  validation set), `train` = the rest, `trainval` = all of TFDS `train`,
  `official_val` = TFDS `validation` (36,500).
  """
  return TFDSSource(
      "places365_small", "places365_small",
      {"train": ("train", holdout, None), "val": ("train", 0, holdout),
       "trainval": ("train", None, None),
       "official_val": ("validation", None, None)},
      key_feature="filename", data_dir=data_dir, version=version,
      shuffle_buffer=shuffle_buffer)
