"""Tests for selfsup.data: sources, splits, bad files, subsets, sharding and
the input pipeline. Everything runs offline on tiny data."""
import collections
import hashlib
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from selfsup import data
from tests import fake_tfds as data_testing

IMAGENET_SIZES = {"train": 40, "validation": 10}
HOLDOUT = 12


def _contexts(n):
  return [tf.distribute.InputContext(n, i, n) for i in range(n)]


def _ids(ds):
  """A fingerprint per example (image bytes + shape + label), in order."""
  return [hashlib.sha1(x["image"].tobytes() + str(x["image"].shape).encode()
                       + str(x["label"]).encode()).hexdigest()
          for x in ds.as_numpy_iterator()]


def _check_example(x):
  assert x["image"].dtype == np.uint8 and x["image"].ndim == 3
  assert x["image"].shape[-1] == 3
  assert x["label"].dtype == np.int64 and x["label"].shape == ()


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  data_testing.write_fake_tfds("imagenet2012", root, IMAGENET_SIZES)
  return str(root)


@pytest.fixture(scope="module")
def digits():
  return data.get("digits", image_size=16)


def _save(path, image, fmt, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, fmt, **kwargs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """train/{a,b} with every awkward kind of file, val/{a,b}, one corrupt."""
  root = str(tmp_path_factory.mktemp("images"))
  rng = np.random.default_rng(0)
  rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
  train = os.path.join(root, "train")
  _save(f"{train}/a/rgb.jpg", rgb(12, 10), "JPEG")
  _save(f"{train}/a/gray.png", rgb(9, 7).convert("L"), "PNG")
  _save(f"{train}/a/cmyk.JPG", rgb(8, 8).convert("CMYK"), "JPEG")
  _save(f"{train}/a/tiny.png", rgb(2, 3), "PNG")
  _save(f"{train}/b/rgba.png", rgb(6, 11).convert("RGBA"), "PNG")
  _save(f"{train}/b/gray.jpeg", rgb(7, 7).convert("L"), "JPEG")
  for i in range(3):
    _save(f"{train}/b/more{i}.jpg", rgb(5, 5), "JPEG")
  with open(f"{train}/b/corrupt.jpg", "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  with open(f"{train}/b/notes.txt", "w") as f:
    f.write("not an image, and not listed")
  _save(f"{root}/val/a/x.jpg", rgb(5, 6), "JPEG")
  _save(f"{root}/val/b/y.png", rgb(6, 5), "PNG")
  return root


def test_registry():
  assert set(data.names()) == {"digits", "fashion_mnist", "image_folder",
                              "imagenet2012", "places205", "places365_small",
                              "tfds"}
  with pytest.raises(ValueError, match=r"'nope'.*digits.*imagenet2012"):
    data.get("nope")


def test_unknown_split(digits):
  with pytest.raises(ValueError, match=r"'valid'.*'train', 'val'"):
    digits.dataset("valid", shuffle=False)


def test_digits(digits):
  assert digits.num_classes == 10
  sizes = {s: digits.num_examples(s) for s in digits.splits}
  assert sizes == {"train": 1438, "val": 359, "test": 359, "trainval": 1797}
  train_keys, train_labels = digits.index("train")
  val_keys, val_labels = digits.index("val")
  assert not set(train_keys) & set(val_keys)
  # Stratified: every class has round(20%) of its examples in val.
  for c in range(10):
    n = np.sum(train_labels == c) + np.sum(val_labels == c)
    assert np.sum(val_labels == c) == np.floor(0.2 * n + 0.5)
  examples = list(digits.dataset("val", shuffle=False).as_numpy_iterator())
  assert len(examples) == 359
  _check_example(examples[0])
  assert examples[0]["image"].shape == (16, 16, 3)
  again = data.get("digits", image_size=16)
  assert _ids(again.dataset("val", shuffle=False)) == [
      hashlib.sha1(x["image"].tobytes() + str(x["image"].shape).encode()
                   + str(x["label"]).encode()).hexdigest() for x in examples]


def test_imagenet_splits(imagenet_dir):
  source = data.get("imagenet2012", data_dir=imagenet_dir, holdout=HOLDOUT)
  assert source.splits == ("train", "val", "trainval", "official_val")
  assert source.num_classes == 1000
  sizes = {s: source.num_examples(s) for s in source.splits}
  assert sizes == {"train": 28, "val": HOLDOUT, "trainval": 40,
                   "official_val": 10}
  ids = {s: _ids(source.dataset(s, shuffle=False)) for s in source.splits}
  assert {s: len(v) for s, v in ids.items()} == sizes
  assert not set(ids["train"]) & set(ids["val"])
  assert sorted(ids["train"] + ids["val"]) == sorted(ids["trainval"])
  assert not set(ids["official_val"]) & set(ids["trainval"])
  _check_example(next(source.dataset("val", shuffle=False).as_numpy_iterator()))
  # Sharded over two pipelines: disjoint halves that cover the split.
  shards = [_ids(source.dataset("train", shuffle=True, seed=3, input_context=c))
            for c in _contexts(2)]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(ids["train"])
  # A seed fixes the shuffled order.
  first, second = (_ids(source.dataset("trainval", shuffle=True, seed=5))
                   for _ in range(2))
  assert first == second and first != ids["trainval"]


def test_imagenet_not_prepared(tmp_path):
  with pytest.raises(data.DataNotFoundError) as error:
    data.get("imagenet2012", data_dir=str(tmp_path))
  message = str(error.value)
  for expected in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                   os.path.join(str(tmp_path), "downloads", "manual"),
                   f"tfds build imagenet2012 --data_dir={tmp_path}"):
    assert expected in message


def test_imagenet_under_mock_data(imagenet_dir):
  # mock_data replaces the records with random ones; the metadata (split
  # sizes) still comes from data_dir.
  with tfds.testing.mock_data(num_examples=5, data_dir=imagenet_dir):
    source = data.get("imagenet2012", data_dir="/ignored", holdout=HOLDOUT)
    examples = list(source.dataset("val", shuffle=False).as_numpy_iterator())
  assert source.num_examples("val") == HOLDOUT and len(examples) == 5
  for x in examples:
    _check_example(x)


def test_folder_decodes_everything(folder, caplog):
  source = data.get("image_folder", root=folder, max_bad_fraction=0.2)
  assert source.splits == ("train", "val")
  assert source.class_names == ("a", "b") and source.num_classes == 2
  with caplog.at_level("WARNING"):
    examples = list(source.dataset("train", shuffle=False).as_numpy_iterator())
  assert len(examples) == source.num_examples("train") == 9
  for x in examples:
    _check_example(x)
  assert sorted(x["image"].shape for x in examples)[0] == (2, 3, 3)
  assert [os.path.basename(p) for p in source.bad_files["train"]] == [
      "corrupt.jpg"]
  assert "Skipping 1 of 10 files" in caplog.text
  assert "corrupt.jpg" in caplog.text
  assert sorted(source.index("val")[0]) == ["a/x.jpg", "b/y.png"]


def test_folder_too_many_bad_files(folder):
  source = data.get("image_folder", root=folder)  # at most 1% bad
  with pytest.raises(data.BadImagesError, match=r"1 of 10 files.*corrupt\.jpg"):
    source.dataset("train", shuffle=False)


def test_folder_missing(tmp_path):
  with pytest.raises(data.DataNotFoundError, match=r"does not exist.*<label>"):
    data.get("image_folder", root=str(tmp_path / "nowhere"))
  with pytest.raises(data.DataNotFoundError, match=r"no images found"):
    data.get("image_folder", root=str(tmp_path))
  with pytest.raises(data.DataNotFoundError, match=r"places205.*train/"):
    data.get("places205", root=str(tmp_path / "nowhere"))


def test_places205_holdout(folder):
  source = data.get("places205", root=folder, holdout=3, max_bad_fraction=0.2)
  assert source.splits == ("train", "val", "trainval", "official_val")
  assert source.num_classes == 205
  keys = {s: list(source.index(s)[0]) for s in source.splits}
  assert len(keys["val"]) == 3 and len(keys["train"]) == 6
  assert sorted(keys["val"] + keys["train"]) == sorted(keys["trainval"])
  assert sorted(keys["official_val"]) == ["a/x.jpg", "b/y.png"]
  # The held-out images depend only on their names.
  again = data.get("places205", root=folder, holdout=3, max_bad_fraction=0.2)
  assert list(again.index("val")[0]) == keys["val"]


def test_sharding_indexed_sources(digits, folder):
  source = data.get("image_folder", root=folder, max_bad_fraction=0.2)
  for src, split in ((digits, "val"), (source, "train")):
    whole = _ids(src.dataset(split, shuffle=False))
    shards = [_ids(src.dataset(split, shuffle=True, seed=1, input_context=c))
              for c in _contexts(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(whole)


def test_subset_is_balanced_and_deterministic(digits):
  keys, labels = digits.index("train")
  ten = data.subset(digits, 0.1, seed=0)
  chosen = ten.indices("train")
  counts = collections.Counter(labels[chosen])
  for c in range(10):
    assert counts[c] == np.floor(0.1 * np.sum(labels == c) + 0.5)
  assert ten.num_examples("train") == len(chosen) == 145
  assert len(list(ten.dataset("train", shuffle=False))) == 145
  assert ten.num_examples("val") == 359  # evaluation splits stay whole
  same = data.get("digits", image_size=16, fraction=0.1, subset_seed=0)
  assert np.array_equal(same.indices("train"), chosen)
  assert not np.array_equal(data.subset(digits, 0.1, seed=1).indices("train"),
                            chosen)
  five = data.subset(digits, 0.05, seed=0).indices("train")
  assert set(keys[five]) <= set(keys[chosen])
  with pytest.raises(ValueError, match="fraction"):
    data.subset(digits, 1.5)


def test_subset_tfds(imagenet_dir):
  source = data.get("imagenet2012", data_dir=imagenet_dir, holdout=HOLDOUT)
  half = data.subset(source, 0.5, seed=0)
  assert half.num_examples("train") == 14
  picked = _ids(half.dataset("train", shuffle=False))
  assert picked == _ids(half.dataset("train", shuffle=False))
  assert set(picked) <= set(_ids(source.dataset("train", shuffle=False)))
  assert 4 <= len(picked) <= 24
  assert half.num_examples("val") == HOLDOUT
  assert half.num_classes == 1000 and half.builder is source.builder


def _random_flip_crop(features):
  """A random op that follows the `_seed` contract of selfsup.preprocess."""
  seed = features["_seed"]
  image = tf.image.stateless_random_flip_left_right(features["image"], seed)
  image = tf.image.stateless_random_crop(image, [12, 12, 3], seed + 1)
  return {"image": image, "label": features["label"], "_seed": seed + 2}


def _batches(ds, n):
  return list(ds.take(n).as_numpy_iterator())


def test_make_pipeline_training_deterministic(digits):
  make = lambda seed: data.make_pipeline(
      digits, "train", _random_flip_crop, batch_size=8, training=True,
      seed=seed)
  first, again, other = _batches(make(0), 3), _batches(make(0), 3), _batches(
      make(1), 3)
  assert set(first[0]) == {"image", "label"}
  assert make(0).element_spec["image"].shape == (8, 12, 12, 3)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert any(not np.array_equal(a["image"], b["image"])
             for a, b in zip(first, other))
  # Repeats forever: more batches than one epoch holds.
  assert len(_batches(make(0), 200)) == 200


def test_make_pipeline_evaluation(digits):
  ds = data.make_pipeline(digits, "val", None, batch_size=64, training=False)
  batches = list(ds.as_numpy_iterator())
  assert [len(b["label"]) for b in batches] == [64] * 5 + [39]
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, digits.index("val")[1])


def test_make_pipeline_input_context(digits):
  shards = []
  for ctx in _contexts(2):
    ds = data.make_pipeline(digits, "val", None, batch_size=8, training=False,
                            input_context=ctx)
    assert len(next(iter(ds))["label"]) == 4  # global batch 8 / 2 replicas
    shards.append(_ids(ds.unbatch()))
  assert not set(shards[0]) & set(shards[1])
  assert len(shards[0]) + len(shards[1]) == 359


def test_make_pipeline_cache(digits):
  ds = data.make_pipeline(digits, "val", _random_flip_crop, batch_size=100,
                          training=True, seed=0, cache=True)
  epoch = [b["label"] for b in _batches(ds, 7)]
  assert all(len(b) == 100 for b in epoch)


def test_make_pipeline_with_preprocess_specs(digits):
  import selfsup.tasks  # pylint: disable=g-import-not-at-top
  ds = data.make_pipeline(digits, "train", "resize(32)|rotate", batch_size=4,
                          training=True, seed=0)
  batch = next(iter(ds))
  assert batch["image"].shape == (4, 4, 32, 32, 3)
  np.testing.assert_array_equal(batch["label"][0], [0, 1, 2, 3])
  jigsaw = selfsup.tasks.Jigsaw.pretext_specs(crop=24, patch=6, shared_perms=2)
  make = lambda: data.make_pipeline(
      digits, "train", jigsaw["train"], batch_spec=jigsaw["batch"],
      batch_size=4, training=True, seed=0)
  first, again = _batches(make(), 2), _batches(make(), 2)
  assert "_seed" not in first[0]
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
