"""TFDS sources: `imagenet2012`, `places365_small` and `tfds` (any TFDS
image-classification dataset by name). Nothing is downloaded unless `tfds`
is given `download=True`.

Each selfsup split is a contiguous range of one TFDS split. TFDS shuffles the
examples once, with a fixed key, when it prepares a dataset, so "the first
50,000 training images" is a fixed random sample, identical on every machine
that prepared the same version, and reading it touches only the shards that
hold it.
"""
import difflib
import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from selfsup.data import base
from selfsup.data import decode
from selfsup.core.checks import ConfigError

# Hashes for subsets are drawn in [0, _BUCKETS).
_BUCKETS = 2**31 - 1


# Text features that name an example, preferred in this order as the key that
# subsets hash; without one, the encoded image itself is hashed.
_KEY_FEATURES = ("file_name", "filename", "image/filename", "id")
# The selfsup names of TFDS' own evaluation splits.
_OFFICIAL = {"test": "test", "validation": "official_val"}


def _prepare_help(tfds_name, builder, can_download=False):
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
  how = ("Prepare it once on a machine with network access (TFDS downloads "
         f"it then):\n  tfds build {tfds_name} --data_dir={data_dir}")
  if can_download:
    how += ("\nor pass download=True (source_kwargs={'download': True} in "
            "gin) to let TFDS download and prepare it there now.")
  return how


def _builder(tfds_name, data_dir, version, download=None):
  """The TFDS builder, or DataNotFoundError saying how to prepare it.

  `download`: True downloads and prepares a dataset that is not prepared in
  `data_dir`; False does not, and the error offers it; None (sources that
  cannot download, such as ImageNet) does not either.
  """
  full_name = f"{tfds_name}:{version}" if version else tfds_name
  try:
    builder = tfds.builder(full_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(tfds_name, tfds.list_builders(), n=5)
    raise ConfigError(  # pylint: disable=raise-missing-from
        f"Unknown TFDS dataset {full_name!r}"
        + (f"; did you mean one of {close}?" if close else "")
        + " tfds.list_builders() lists them all.") from None
  if download and not builder.is_prepared():
    logging.info("Downloading and preparing %s in %s", full_name,
                 builder.data_dir)
    builder.download_and_prepare()
    # Read back what was written, as any later run will.
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
        f"{builder.data_dir}), and selfsup downloads nothing unless asked."
        f"{others}\n" + _prepare_help(tfds_name, builder,
                                      can_download=download is False))
  return builder


class TFDSSource(base.Source):
  """A TFDS dataset whose splits are ranges of the prepared TFDS splits.

  Args:
    name: the selfsup name.
    tfds_name: the TFDS name.
    ranges: split name -> (TFDS split, start, end); None for start/end means
      the start/end of the TFDS split, negative values count from the end.
    key_feature: a string feature naming each example (its file name), which
      subsets hash; it may be `image_key`, whose encoded bytes are hashed.
    data_dir: TFDS data_dir; None for TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    version: a TFDS version; None for the one this TFDS release builds.
    shuffle_buffer: encoded records shuffled in memory, after the shard order
      and interleaving, when `dataset(shuffle=True)`.
    image_key, label_key: the image and class-label features.
    image_size: if given, images are resized (bilinear, antialiased) to
      image_size x image_size; None keeps their own size.
    builder: an already made TFDS builder for `tfds_name` (skips making it).
  """

  def __init__(self, name, tfds_name, ranges, *, key_feature, data_dir=None,
               version=None, shuffle_buffer=10_000, image_key="image",
               label_key="label", image_size=None, builder=None):
    self.name = name
    self.builder = builder or _builder(tfds_name, data_dir, version)
    features = self.builder.info.features
    _check_feature(features, image_key, tfds.features.Image, tfds_name)
    _check_feature(features, label_key, tfds.features.ClassLabel, tfds_name)
    if key_feature not in features:
      raise ConfigError(f"{tfds_name} has no feature {key_feature!r} to name "
                        f"examples by; its features: {sorted(features)}.")
    if image_size is not None and int(image_size) < 1:
      raise ConfigError(f"{name}: image_size must be a positive side or None, "
                        f"got {image_size!r}.")
    self.num_classes = features[label_key].num_classes
    self.key_feature = key_feature
    self.image_key = image_key
    self.label_key = label_key
    self.image_size = None if image_size is None else int(image_size)
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
        raise ConfigError(f"{name}: split {split!r} = {tfds_split}[{start}:"
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
        decoders={self.image_key: tfds.decode.SkipDecoding()},
        read_config=read_config)
    if empty:
      ds = ds.take(0)
    if keep is not None:
      ds = ds.filter(self._keep_fn(*keep))
    if shuffle and self.shuffle_buffer > 1:
      # Encoded records are ~10x smaller than decoded images: mix them here.
      ds = ds.shuffle(self.shuffle_buffer, seed=seed,
                      reshuffle_each_iteration=True)
    return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

  def _decode(self, ex):
    image = decode.decode_rgb(ex[self.image_key])
    if self.image_size is not None:
      size = [self.image_size, self.image_size]
      image = tf.image.resize(tf.cast(image, tf.float32), size,
                              method="bilinear", antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0),
                      tf.uint8)
    return {"image": image, "label": tf.cast(ex[self.label_key], tf.int64)}

  def _keep_fn(self, fraction, seed):
    threshold = int(round(fraction * _BUCKETS))
    key = self.key_feature

    def keep(ex):
      bucket = tf.strings.to_hash_bucket_strong(ex[key], _BUCKETS,
                                                key=[int(seed), 0x5E1F])
      return bucket < threshold

    return keep


def _check_feature(features, key, kind, tfds_name):
  if key not in features or not isinstance(features[key], kind):
    found = {k: type(v).__name__ for k, v in features.items()}
    raise ConfigError(f"{tfds_name}: expected a {kind.__name__} feature "
                      f"{key!r}; its features are {found}. Pass image_key= / "
                      "label_key= to name them.")


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


def _key_feature(features, image_key):
  for key in _KEY_FEATURES:
    if key in features and isinstance(features[key], tfds.features.Text):
      return key
  return image_key


def tfds_dataset(dataset, data_dir=None, *, holdout=None, image_size=None,
                 version=None, download=False, shuffle_buffer=10_000,
                 image_key="image", label_key="label"):
  """Any TFDS image-classification dataset, split like ImageNet.

  Splits: `val` = the first `holdout` examples of TFDS `train` (a fixed random
  sample: TFDS shuffles when it prepares), `train` = the rest, `trainval` =
  all of TFDS `train`; TFDS `test` stays `test` and TFDS `validation` becomes
  `official_val`. Any other TFDS split (STL-10's `unlabelled`, SVHN's
  `extra`) keeps its TFDS name and its labels as TFDS gives them (STL-10's
  unlabelled images have label -1).

  Args:
    dataset: the TFDS name, e.g. "cifar10", "stl10", "oxford_flowers102".
    data_dir: the TFDS data_dir it is prepared in; None for TFDS's default.
    holdout: how many TFDS `train` examples form `val`; default 10%.
    image_size: if given, images are resized to image_size x image_size.
    version: a TFDS version; None for the one this TFDS release builds.
    download: if the dataset is not prepared in `data_dir`, let TFDS download
      and prepare it there (network). Never done by default.
    shuffle_buffer: see `TFDSSource`.
    image_key, label_key: the image and class-label features.

  Raises:
    DataNotFoundError: not prepared, and `download` is False.
    ValueError: unknown dataset, no `train` split, features that are not an
      image and a class label, or a `holdout` that leaves nothing.
  """
  if not isinstance(dataset, str) or not dataset:
    raise ConfigError(f"tfds: dataset must be a TFDS name such as 'cifar10', "
                      f"got {dataset!r}.")
  builder = _builder(dataset, data_dir, version, download=bool(download))
  available = builder.info.splits
  if "train" not in available:
    raise ConfigError(f"{dataset} has no TFDS split 'train' to hold `val` out "
                      f"of; its splits: {sorted(available)}.")
  n_train = available["train"].num_examples
  if holdout is None:
    holdout = max(1, int(round(0.1 * n_train)))
  if not 0 < int(holdout) < n_train:
    raise ConfigError(f"{dataset}: holdout must be in [1, {n_train}) (the "
                      f"TFDS train split), got {holdout!r}.")
  holdout = int(holdout)
  ranges = {"train": ("train", holdout, None), "val": ("train", 0, holdout),
            "trainval": ("train", None, None)}
  for tfds_split in available:
    if tfds_split == "train":
      continue
    name = _OFFICIAL.get(tfds_split, tfds_split)
    if name in ranges:
      logging.warning("%s: TFDS split %r is left out: its name is taken by a "
                      "selfsup split.", dataset, tfds_split)
      continue
    ranges[name] = (tfds_split, None, None)
  features = builder.info.features
  return TFDSSource(
      dataset, dataset, ranges,
      key_feature=_key_feature(features, image_key), version=version,
      shuffle_buffer=shuffle_buffer, image_key=image_key, label_key=label_key,
      image_size=image_size, builder=builder)
