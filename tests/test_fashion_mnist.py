"""Tests for the `fashion_mnist` source: IDX files the tests write (valid and
corrupt in every way), the folders it searches, the download switch, and the
real files when the Debian package is installed. Nothing is downloaded."""
import collections
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from selfsup import data
from selfsup.data import fashion_mnist as fm

STEMS = fm.FILES
SHAPE = (7, 9)  # rows, cols: not square, so the resize is visible


def _arrays(n_train=60, n_test=20, seed=0):
  """Random images; labels cycle through the 10 classes (n_train/10 each)."""
  rng = np.random.default_rng(seed)
  return {
      "train_images": rng.integers(0, 256, (n_train,) + SHAPE, np.uint8),
      "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
      "test_images": rng.integers(0, 256, (n_test,) + SHAPE, np.uint8),
      "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
  }


def _write(folder, arrays, gz=("train_images", "train_labels")):
  """The four files; those in `gz` gzipped, the others plain."""
  os.makedirs(folder, exist_ok=True)
  for key, stem in STEMS.items():
    fm.write_idx(os.path.join(folder, stem + (".gz" if key in gz else "")),
                 arrays[key])
  return str(folder)


def _path(folder, key):
  found = [os.path.join(folder, n) for n in os.listdir(folder)
           if n.startswith(STEMS[key])]
  assert len(found) == 1
  return found[0]


@pytest.fixture(scope="module")
def arrays():
  return _arrays()


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory, arrays):
  return _write(tmp_path_factory.mktemp("fmnist"), arrays)


@pytest.fixture(scope="module")
def source(idx_dir):
  return data.get("fashion_mnist", data_dir=idx_dir, holdout=20)


def _examples(source, split, **kwargs):
  return list(source.dataset(split, shuffle=False, **kwargs)
              .as_numpy_iterator())


def test_idx_round_trip(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  for name in ("a.gz", "b"):
    fm.write_idx(str(tmp_path / name), array)
    np.testing.assert_array_equal(fm.read_idx(str(tmp_path / name), 3), array)
  with open(tmp_path / "b", "rb") as f:
    assert f.read(4) == b"\x00\x00\x08\x03"
  with open(tmp_path / "a.gz", "rb") as f:
    assert f.read(2) == b"\x1f\x8b"


def test_splits(source, arrays):
  assert source.name == "fashion_mnist" and source.num_classes == 10
  assert source.splits == ("train", "val", "trainval", "test")
  assert len(source.class_names) == 10
  sizes = {s: source.num_examples(s) for s in source.splits}
  assert sizes == {"train": 40, "val": 20, "trainval": 60, "test": 20}
  keys = {s: source.index(s)[0] for s in source.splits}
  assert not set(keys["train"]) & set(keys["val"])
  assert sorted(np.concatenate([keys["train"], keys["val"]])) == sorted(
      keys["trainval"])
  # Stratified: 20 of 60 held out, 2 of each class's 6.
  assert collections.Counter(source.index("val")[1]) == {c: 2
                                                         for c in range(10)}
  # test is the official test file, in its order.
  np.testing.assert_array_equal(source.index("test")[1],
                                arrays["test_labels"])


def test_examples_are_the_files_pixels(source, arrays):
  examples = _examples(source, "trainval")
  assert len(examples) == 60
  for x, image, label in zip(examples, arrays["train_images"],
                             arrays["train_labels"]):
    assert x["image"].dtype == np.uint8 and x["image"].shape == SHAPE + (3,)
    assert x["label"].dtype == np.int64 and x["label"] == label
    for channel in range(3):  # gray, repeated as RGB
      np.testing.assert_array_equal(x["image"][..., channel], image)


def test_image_size(idx_dir, arrays):
  source = data.get("fashion_mnist", data_dir=idx_dir, holdout=20,
                    image_size=16)
  ds = source.dataset("test", shuffle=False)
  assert ds.element_spec["image"].shape == (16, 16, 3)
  x = next(ds.as_numpy_iterator())
  assert x["image"].dtype == np.uint8
  np.testing.assert_array_equal(x["image"][..., 0], x["image"][..., 2])
  # A resize keeps the picture: its mean brightness moves by little.
  assert abs(x["image"].mean() - arrays["test_images"][0].mean()) < 20
  with pytest.raises(ValueError, match="image_size"):
    data.get("fashion_mnist", data_dir=idx_dir, image_size=0)


def test_holdout_depends_on_contents_not_order(tmp_path, source, arrays):
  order = np.random.default_rng(1).permutation(60)
  shuffled = dict(arrays, train_images=arrays["train_images"][order],
                  train_labels=arrays["train_labels"][order])
  again = data.get("fashion_mnist", holdout=20,
                   data_dir=_write(tmp_path, shuffled, gz=()))
  assert sorted(again.index("val")[0]) == sorted(source.index("val")[0])
  assert (sorted(x["image"].tobytes() for x in _examples(again, "val"))
          == sorted(x["image"].tobytes() for x in _examples(source, "val")))


def test_duplicate_images_get_distinct_keys(tmp_path, arrays):
  twice = dict(arrays)
  twice["train_images"] = arrays["train_images"].copy()
  twice["train_images"][10] = twice["train_images"][0]  # both label 0
  source = data.get("fashion_mnist", holdout=20,
                    data_dir=_write(tmp_path, twice))
  keys = source.index("trainval")[0]
  assert len(set(keys)) == 60 and keys[10] == keys[0] + "-1"


def test_subset_and_sharding(idx_dir, source):
  half = data.get("fashion_mnist", data_dir=idx_dir, holdout=20, fraction=0.5)
  labels = source.index("train")[1][half.indices("train")]
  assert collections.Counter(labels) == {c: 2 for c in range(10)}
  assert len(_examples(half, "train")) == half.num_examples("train") == 20
  assert half.num_examples("test") == 20
  contexts = [tf.distribute.InputContext(2, i, 2) for i in range(2)]
  shards = [[x["image"].tobytes() for x in _examples(source, "val",
                                                      input_context=c)]
            for c in contexts]
  assert not set(shards[0]) & set(shards[1])
  assert len(shards[0]) + len(shards[1]) == 20


def test_pipeline(source):
  ds = data.make_pipeline(source, "train", None, batch_size=8, training=True,
                          seed=0)
  batch = next(iter(ds))
  assert batch["image"].shape == (8,) + SHAPE + (3,)


def test_bad_holdout(idx_dir):
  for holdout in (0, 60):
    with pytest.raises(ValueError, match=r"holdout must be in \[1, 60\)"):
      data.get("fashion_mnist", data_dir=idx_dir, holdout=holdout)


def _corrupt(folder, key, mutate):
  path = _path(folder, key)
  with open(path, "rb") as f:
    raw = f.read()
  if path.endswith(".gz"):
    raw = gzip.decompress(raw)
  raw = mutate(raw)
  with open(path, "wb") as f:
    f.write(gzip.compress(raw) if path.endswith(".gz") else raw)
  return path


@pytest.mark.parametrize("key, mutate, message", [
    ("train_images", lambda r: b"\x00\x00\x08\x01" + r[4:],
     r"magic number 0x00000801 .* 3 dimension\(s\) \(0x00000803\)"),
    ("test_labels", lambda r: b"\x00\x00\x0d\x01" + r[4:],
     r"magic number 0x00000d01"),
    ("train_labels", lambda r: r[:-5], r"shape \(60,\), 60 bytes .* 55"),
    ("test_images", lambda r: r + b"\x00", r"truncated or corrupt"),
    ("test_images", lambda r: r[:10], r"truncated header"),
    ("train_labels", lambda r: r[:4] + struct.pack(">I", 59) + r[8:-1],
     r"60 images but .* 59 labels"),
    ("test_labels", lambda r: r[:-1] + b"\x0a",
     r"label 10 at position 19 .* outside \[0, 10\)"),
    ("test_labels", lambda r: b"\x00\x00\x08\x02" + r[4:],
     r"magic number 0x00000802 .* 1 dimension\(s\) \(0x00000801\)"),
])
def test_corrupt_files(tmp_path, arrays, key, mutate, message):
  folder = _write(tmp_path, arrays)
  path = _corrupt(folder, key, mutate)
  with pytest.raises(data.IDXError, match=message) as error:
    data.get("fashion_mnist", data_dir=folder, holdout=20)
  assert os.path.basename(path) in str(error.value)


def test_corrupt_gzip(tmp_path, arrays):
  folder = _write(tmp_path, arrays)
  path = _path(folder, "train_images")
  with open(path, "rb") as f:
    raw = f.read()
  with open(path, "wb") as f:
    f.write(raw[:len(raw) // 2])
  with pytest.raises(data.IDXError, match=r"images-idx3-ubyte.gz: corrupt "
                     "gzip data"):
    data.get("fashion_mnist", data_dir=folder, holdout=20)


def test_empty_test_file(tmp_path, arrays):
  empty = dict(arrays, test_images=arrays["test_images"][:0],
               test_labels=arrays["test_labels"][:0])
  with pytest.raises(data.IDXError, match="holds no examples"):
    data.get("fashion_mnist", data_dir=_write(tmp_path, empty), holdout=20)


@pytest.fixture
def search_dirs(tmp_path, monkeypatch):
  """Points the default folders (system, Keras) at two empty temp folders."""
  system, home = tmp_path / "system", tmp_path / "keras_home"
  monkeypatch.setattr(fm, "SYSTEM_DIR", str(system))
  monkeypatch.setenv("KERAS_HOME", str(home))
  return str(system), os.path.join(str(home), "datasets", "fashion-mnist")


def test_not_found_says_how_to_get_it(tmp_path, search_dirs, monkeypatch):
  monkeypatch.setattr(fm, "_fetch", _no_network)
  with pytest.raises(data.DataNotFoundError) as error:
    data.get("fashion_mnist")
  message = str(error.value)
  for expected in ("apt-get install dataset-fashion-mnist", "download=True",
                   f"{search_dirs[0]} (does not exist)", search_dirs[1],
                   "t10k-labels-idx1-ubyte[.gz]", "data_dir=<folder>"):
    assert expected in message
  # An explicit data_dir is the only place looked in; a partial copy says
  # what it lacks.
  _write(search_dirs[1], _arrays())
  partial = _write(tmp_path / "partial", _arrays())
  os.remove(_path(partial, "test_labels"))
  with pytest.raises(data.DataNotFoundError,
                     match=r"partial \(missing t10k-labels-idx1-ubyte\)"):
    data.get("fashion_mnist", data_dir=partial)


def test_search_order(search_dirs):
  system, keras_dir = search_dirs
  _write(keras_dir, _arrays(seed=1))
  assert data.get("fashion_mnist", holdout=20).data_dir == keras_dir
  _write(system, _arrays(seed=2), gz=())
  assert data.get("fashion_mnist", holdout=20).data_dir == system


def _no_network():
  raise AssertionError("tried to download")


def test_download_only_when_asked(search_dirs, monkeypatch):
  _, keras_dir = search_dirs
  monkeypatch.setattr(fm, "_fetch", _no_network)
  with pytest.raises(data.DataNotFoundError):
    data.get("fashion_mnist", holdout=20)
  fetched = _arrays(seed=3)
  monkeypatch.setattr(fm, "_fetch", lambda: (
      fetched["train_images"], fetched["train_labels"],
      fetched["test_images"], fetched["test_labels"]))
  source = data.get("fashion_mnist", holdout=20, download=True)
  assert source.data_dir == keras_dir
  assert sorted(os.listdir(keras_dir)) == sorted(
      s + ".gz" for s in STEMS.values())
  np.testing.assert_array_equal(source.index("test")[1],
                                fetched["test_labels"])
  # Once there, no download is needed (nor tried).
  monkeypatch.setattr(fm, "_fetch", _no_network)
  again = data.get("fashion_mnist", holdout=20, download=True)
  assert list(again.index("val")[0]) == list(source.index("val")[0])


def _installed():
  paths, _ = fm._find_files(fm.SYSTEM_DIR)  # pylint: disable=protected-access
  return paths is not None


@pytest.mark.skipif(not _installed(), reason=(
    f"Fashion-MNIST is not installed in {fm.SYSTEM_DIR} "
    "(apt-get install dataset-fashion-mnist)"))
def test_real_files():
  source = data.get("fashion_mnist", data_dir=fm.SYSTEM_DIR, image_size=32)
  sizes = {s: source.num_examples(s) for s in source.splits}
  assert sizes == {"train": 50_000, "val": 10_000, "trainval": 60_000,
                   "test": 10_000}
  for split, per_class in (("val", 1_000), ("trainval", 6_000),
                           ("test", 1_000)):
    assert collections.Counter(source.index(split)[1]) == {
        c: per_class for c in range(10)}
  batch = next(iter(source.dataset("test", shuffle=False).batch(64)))
  assert batch["image"].shape == (64, 32, 32, 3)
  assert batch["image"].dtype == tf.uint8
  # Clothes on a black background: dark borders, a brighter middle.
  images = batch["image"].numpy().astype(float)
  assert images[:, :, :2].mean() < images[:, 8:24, 8:24].mean()
