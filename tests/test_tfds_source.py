"""Tests for the generic `tfds` source: any TFDS image-classification dataset
by name, split like ImageNet. Tiny fake copies written with
`tests.fake_tfds.write_fake_tfds`, and `tfds.testing.mock_data`; nothing
is downloaded."""
import collections
import hashlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from selfsup import data
from tests import fake_tfds as data_testing

FAKES = {  # TFDS name -> (split sizes, image shape)
    "cifar10": ({"train": 40, "test": 10}, (32, 32, 3)),
    "oxford_flowers102": ({"train": 20, "validation": 6, "test": 7},
                          (10, 12, 3)),
    "stl10": ({"train": 20, "test": 5, "unlabelled": 9}, (96, 96, 3)),
    "fashion_mnist": ({"train": 30, "test": 8}, (28, 28, 1)),
}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  for name, (sizes, shape) in FAKES.items():
    data_testing.write_fake_tfds(name, root, sizes, image_shape=shape)
  return str(root)


def _ids(ds):
  return [hashlib.sha1(x["image"].tobytes() + str(x["label"]).encode())
          .hexdigest() for x in ds.as_numpy_iterator()]


def _check(x, shape=None):
  assert x["image"].dtype == np.uint8 and x["image"].ndim == 3
  assert x["image"].shape[-1] == 3
  if shape:
    assert x["image"].shape == shape
  assert x["label"].dtype == np.int64 and x["label"].shape == ()


def test_registered():
  assert {"tfds", "fashion_mnist"} <= set(data.names())


def test_splits_like_imagenet(tfds_dir):
  source = data.get("tfds", dataset="cifar10", data_dir=tfds_dir, holdout=8)
  assert source.name == "cifar10" and source.num_classes == 10
  assert source.splits == ("train", "val", "trainval", "test")
  sizes = {s: source.num_examples(s) for s in source.splits}
  assert sizes == {"train": 32, "val": 8, "trainval": 40, "test": 10}
  ids = {s: _ids(source.dataset(s, shuffle=False)) for s in source.splits}
  assert {s: len(v) for s, v in ids.items()} == sizes
  assert not set(ids["train"]) & set(ids["val"])
  assert sorted(ids["train"] + ids["val"]) == sorted(ids["trainval"])
  assert not set(ids["test"]) & set(ids["trainval"])
  _check(next(source.dataset("val", shuffle=False).as_numpy_iterator()),
         (32, 32, 3))
  # Sharded: disjoint halves covering the split; a seed fixes the order.
  shards = [_ids(source.dataset("train", shuffle=True, seed=1,
                                input_context=tf.distribute.InputContext(
                                    2, i, 2))) for i in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == sorted(ids["train"])


def test_default_holdout_is_a_tenth(tfds_dir):
  source = data.get("tfds", dataset="cifar10", data_dir=tfds_dir)
  assert source.num_examples("val") == 4
  assert source.num_examples("train") == 36
  for holdout in (0, 40):
    with pytest.raises(ValueError, match=r"holdout must be in \[1, 40\)"):
      data.get("tfds", dataset="cifar10", data_dir=tfds_dir, holdout=holdout)


def test_official_validation_and_extra_splits(tfds_dir):
  flowers = data.get("tfds", dataset="oxford_flowers102", data_dir=tfds_dir,
                     holdout=5)
  assert flowers.splits == ("train", "val", "trainval", "official_val",
                            "test")
  assert flowers.num_classes == 102 and flowers.key_feature == "file_name"
  assert flowers.num_examples("official_val") == 6
  stl = data.get("tfds", dataset="stl10", data_dir=tfds_dir, holdout=5)
  assert stl.splits == ("train", "val", "trainval", "test", "unlabelled")
  assert len(list(stl.dataset("unlabelled", shuffle=False))) == 9


def test_grayscale_and_image_size(tfds_dir):
  source = data.get("tfds", dataset="fashion_mnist", data_dir=tfds_dir,
                    holdout=10, image_size=16)
  ds = source.dataset("test", shuffle=False)
  assert ds.element_spec["image"].shape == (16, 16, 3)
  for x in ds.as_numpy_iterator():
    _check(x, (16, 16, 3))
    np.testing.assert_array_equal(x["image"][..., 0], x["image"][..., 1])
  native = data.get("tfds", dataset="fashion_mnist", data_dir=tfds_dir,
                    holdout=10)
  _check(next(native.dataset("test", shuffle=False).as_numpy_iterator()),
         (28, 28, 3))
  with pytest.raises(ValueError, match="image_size"):
    data.get("tfds", dataset="fashion_mnist", data_dir=tfds_dir,
             image_size=-1)


@pytest.mark.parametrize("name, key", [("cifar10", "id"),
                                       ("stl10", "image")])
def test_subset(tfds_dir, name, key):
  source = data.get("tfds", dataset=name, data_dir=tfds_dir, holdout=4)
  assert source.key_feature == key  # without a name, the image bytes
  half = data.get("tfds", dataset=name, data_dir=tfds_dir, holdout=4,
                  fraction=0.5)
  picked = _ids(half.dataset("train", shuffle=False))
  assert picked == _ids(half.dataset("train", shuffle=False))
  assert set(picked) <= set(_ids(source.dataset("train", shuffle=False)))
  n = source.num_examples("train")
  assert half.num_examples("train") == round(n / 2)
  assert 0 < len(picked) < n
  assert half.num_examples("test") == source.num_examples("test")


def test_under_mock_data(tfds_dir):
  with tfds.testing.mock_data(num_examples=6, data_dir=tfds_dir):
    source = data.get("tfds", dataset="oxford_flowers102", data_dir="/ignored",
                      holdout=5, image_size=8)
    examples = list(source.dataset("train", shuffle=False)
                    .as_numpy_iterator())
  assert source.num_examples("train") == 15  # from the metadata
  assert len(examples) == 6  # records are mocked
  for x in examples:
    _check(x, (8, 8, 3))
    assert 0 <= x["label"] < 102


def test_not_prepared_says_how(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      _no_network)
  with pytest.raises(data.DataNotFoundError) as error:
    data.get("tfds", dataset="cifar10", data_dir=str(tmp_path))
  message = str(error.value)
  assert f"tfds build cifar10 --data_dir={tmp_path}" in message
  assert "download=True" in message
  # ImageNet cannot be downloaded by TFDS: its message does not offer it.
  with pytest.raises(data.DataNotFoundError) as error:
    data.get("imagenet2012", data_dir=str(tmp_path))
  assert "download=True" not in str(error.value)


def _no_network(*args, **kwargs):
  raise AssertionError("tried to download")


def test_download_only_when_asked(tmp_path, monkeypatch):
  calls = []

  def fake_download(builder, *args, **kwargs):
    del args, kwargs
    calls.append(builder.name)
    data_testing.write_fake_tfds(builder.name, tmp_path,
                                 {"train": 12, "test": 3},
                                 image_shape=(32, 32, 3))

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      fake_download)
  with pytest.raises(data.DataNotFoundError):
    data.get("tfds", dataset="cifar10", data_dir=str(tmp_path))
  assert not calls
  source = data.get("tfds", dataset="cifar10", data_dir=str(tmp_path),
                    download=True)
  assert calls == ["cifar10"]
  assert collections.Counter({s: source.num_examples(s)
                              for s in source.splits}) == {
                                  "train": 11, "val": 1, "trainval": 12,
                                  "test": 3}
  data.get("tfds", dataset="cifar10", data_dir=str(tmp_path), download=True)
  assert calls == ["cifar10"]  # prepared now: not fetched again


def test_bad_names(tfds_dir):
  with pytest.raises(ValueError, match=r"Unknown TFDS dataset 'cifar11'.*"
                     "'cifar10'"):
    data.get("tfds", dataset="cifar11", data_dir=tfds_dir)
  with pytest.raises(ValueError, match="TFDS name such as"):
    data.get("tfds", dataset="", data_dir=tfds_dir)
  with pytest.raises(ValueError, match=r"Image feature 'img'.*'image': "
                     "'Image'"):
    data.get("tfds", dataset="cifar10", data_dir=tfds_dir, image_key="img")
  with pytest.raises(ValueError, match=r"ClassLabel feature 'id'"):
    data.get("tfds", dataset="cifar10", data_dir=tfds_dir, label_key="id")
