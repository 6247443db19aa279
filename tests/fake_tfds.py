"""Test helpers: a tiny, real TFDS dataset written without any download.

`write_fake_tfds("imagenet2012", tmp_path, {"train": 40, "validation": 10})`
writes TFRecord shards and metadata that `tfds.builder("imagenet2012",
data_dir=tmp_path)` reads like the prepared dataset, so TFDS slicing, shard
shuffling and reading run for real in tests.
"""
import os

import numpy as np
import tensorflow_datasets as tfds


def fake_example(features, split, index, rng, image_shape):
  """One example for a TFDS FeaturesDict; the image is random, so unique."""
  example = {}
  for key, feature in features.items():
    if isinstance(feature, tfds.features.Image):
      example[key] = rng.integers(0, 256, image_shape, dtype=np.uint8)
    elif isinstance(feature, tfds.features.ClassLabel):
      example[key] = index % feature.num_classes
    elif isinstance(feature, tfds.features.Text):
      example[key] = f"{split}_{index:06d}.JPEG"
    else:
      raise NotImplementedError(f"No fake value for {key}: {feature}.")
  return example


def write_fake_tfds(name, data_dir, split_sizes, *, image_shape=(6, 5, 3),
                    examples_per_shard=8, seed=0):
  """Writes a small fake copy of the TFDS dataset `name` into `data_dir`.

  Labels are `index % num_classes`, text features `"<split>_<index>.JPEG"`.

  Args:
    name: a TFDS name, e.g. "imagenet2012".
    data_dir: the TFDS data_dir to write into.
    split_sizes: split name -> number of examples.
    image_shape: shape of every (random) image.
    examples_per_shard: how many examples go into each TFRecord file.
    seed: for the random images.

  Returns:
    The builder's data_dir (the versioned folder).
  """
  builder = tfds.builder(name, data_dir=str(data_dir))
  os.makedirs(builder.data_dir, exist_ok=True)
  writer = tfds.core.SequentialWriter(
      ds_info=builder.info, max_examples_per_shard=examples_per_shard)
  writer.initialize_splits(list(split_sizes))
  rng = np.random.default_rng(seed)
  for split, size in split_sizes.items():
    writer.add_examples({split: [
        fake_example(builder.info.features, split, i, rng, image_shape)
        for i in range(size)]})
  writer.close_all()
  return builder.data_dir
