"""`fashion_mnist`: Zalando's Fashion-MNIST read from its four IDX files.

60,000 training and 10,000 test images of clothes, 28x28 grayscale, 10
classes. The files are looked for in `data_dir` if given, else in the folder
of the Debian/Ubuntu package `dataset-fashion-mnist`, else in Keras' cache
folder; nothing is downloaded unless `download=True` is passed.

The held-out `val` split is chosen from the images' contents (a keyed hash of
each image and its label), not from their order in the file, so every copy of
the dataset (the apt package, Keras' download, TFDS' reshuffled one) gives the
same split.
"""
import gzip
import hashlib
import os
import struct
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from selfsup.core import errors
from selfsup.data import base
from selfsup.data import decode
from selfsup.core.checks import ConfigError

SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# The IDX type code of unsigned bytes, the only one Fashion-MNIST uses.
_UBYTE = 0x08


class IDXError(errors.DataError):
  """An IDX file is not what it should be (format, sizes or labels)."""


def keras_dir():
  """Where `keras.datasets.fashion_mnist` keeps the files it downloads."""
  home = os.environ.get("KERAS_HOME") or os.path.join(
      os.path.expanduser("~"), ".keras")
  return os.path.join(home, "datasets", "fashion-mnist")


def default_dirs():
  """The folders searched, in order, when no `data_dir` is given."""
  return [SYSTEM_DIR, keras_dir()]


def read_idx(path, ndim):
  """Reads an unsigned-byte IDX file with `ndim` dimensions, gzipped or not.

  Returns:
    A uint8 numpy array of the shape the header gives.

  Raises:
    IDXError: for a broken gzip stream, a wrong magic number, or a payload
      whose length does not match the header.
  """
  with tf.io.gfile.GFile(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":  # gzip's magic number, whatever the file's name
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
      raise IDXError(f"{path}: corrupt gzip data ({e}); fetch the file "
                     "again.") from e
  expected_magic = bytes([0, 0, _UBYTE, ndim])
  if raw[:4] != expected_magic:
    raise IDXError(f"{path}: magic number 0x{raw[:4].hex()} is not that of "
                   f"an unsigned-byte IDX file with {ndim} dimension(s) "
                   f"(0x{expected_magic.hex()}).")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IDXError(f"{path}: truncated header ({len(raw)} bytes, expected "
                   f"{header}).")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  size = int(np.prod(shape, dtype=np.int64))
  if len(raw) - header != size:
    raise IDXError(f"{path}: the header gives shape {shape}, {size} bytes of "
                   f"data, but the file holds {len(raw) - header}; it is "
                   "truncated or corrupt.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def write_idx(path, array):
  """Writes a uint8 array as an IDX file; gzipped when `path` ends in .gz."""
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ConfigError(f"write_idx: expected a uint8 array, got {array.dtype}.")
  raw = (bytes([0, 0, _UBYTE, array.ndim])
         + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())
  if path.endswith(".gz"):
    raw = gzip.compress(raw)
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(raw)


def _find_file(folder, stem):
  for name in (stem + ".gz", stem):
    path = os.path.join(folder, name)
    if tf.io.gfile.exists(path):
      return path
  return None


def _find_files(folder):
  """(paths by FILES key, None) if `folder` has all four, else (None, why)."""
  if not tf.io.gfile.isdir(folder):
    return None, "does not exist"
  paths = {key: _find_file(folder, stem) for key, stem in FILES.items()}
  missing = [FILES[k] for k, p in paths.items() if p is None]
  if missing:
    return None, "missing " + ", ".join(missing)
  return paths, None


def find(data_dir=None):
  """The folder the source would read (`data_dir` or the first default
  folder holding all four files), or None when there is none."""
  for folder in [data_dir] if data_dir else default_dirs():
    if _find_files(folder)[0]:
      return folder
  return None


def _not_found(looked):
  where = "\n".join(f"  {folder} ({why})" for folder, why in looked)
  files = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
  return decode.DataNotFoundError(
      f"Fashion-MNIST not found. Looked for {files} in:\n{where}\n"
      "selfsup downloads nothing unless asked. To get the files:\n"
      "  offline (Debian/Ubuntu): apt-get install dataset-fashion-mnist "
      f"(puts them in {SYSTEM_DIR})\n"
      "  online: pass download=True (e.g. data.get(\"fashion_mnist\", "
      "download=True), or source_kwargs={\"download\": True} in gin), which "
      "fetches them through keras.datasets, or TFDS if that fails, into "
      f"{keras_dir()}\n"
      "  or put the four files in a folder and pass data_dir=<folder>.")


def _fetch():
  """Downloads Fashion-MNIST: (train images, train labels, test images,
  test labels), uint8 arrays."""
  try:
    import keras  # pylint: disable=g-import-not-at-top
    (x_train, y_train), (x_test, y_test) = (
        keras.datasets.fashion_mnist.load_data())
    return x_train, y_train, x_test, y_test
  except Exception as e:  # pylint: disable=broad-except
    # Network failures come as many types (URLError, OSError, HTTP errors).
    keras_error = e
    logging.warning("keras.datasets.fashion_mnist failed (%s); trying TFDS.",
                    e)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    train, test = tfds.as_numpy(tfds.load(
        "fashion_mnist", split=["train", "test"], batch_size=-1))
    return (train["image"][..., 0], train["label"].astype(np.uint8),
            test["image"][..., 0], test["label"].astype(np.uint8))
  except Exception as e:  # pylint: disable=broad-except
    raise decode.DataNotFoundError(
        f"Could not download Fashion-MNIST: keras.datasets said "
        f"{keras_error!r}, TFDS said {e!r}. Without network access, "
        "apt-get install dataset-fashion-mnist.") from e


def download(folder=None):
  """Fetches Fashion-MNIST and writes the IDX files missing in `folder`.

  Args:
    folder: where to put the files; default Keras' cache folder (which
      keras.datasets fills itself).

  Returns:
    The folder.
  """
  folder = folder or keras_dir()
  arrays = dict(zip(["train_images", "train_labels", "test_images",
                     "test_labels"], _fetch()))
  tf.io.gfile.makedirs(folder)
  for key, stem in FILES.items():
    if _find_file(folder, stem) is None:
      write_idx(os.path.join(folder, stem + ".gz"),
                np.asarray(arrays[key], np.uint8))
  return folder


def _load_pair(images_path, labels_path, num_classes):
  images = read_idx(images_path, 3)
  labels = read_idx(labels_path, 1)
  if len(images) != len(labels):
    raise IDXError(f"{images_path} holds {len(images)} images but "
                   f"{labels_path} holds {len(labels)} labels.")
  if not len(labels):
    raise IDXError(f"{labels_path} holds no examples.")
  bad = np.flatnonzero(labels >= num_classes)
  if bad.size:
    raise IDXError(f"{labels_path}: label {labels[bad[0]]} at position "
                   f"{bad[0]} (and {bad.size - 1} more) is outside "
                   f"[0, {num_classes}).")
  return images, labels.astype(np.int64)


def content_keys(images, labels):
  """A stable name per example: a hash of its pixels and label.

  Identical examples are told apart by their rank among themselves (`-1`,
  `-2`, ...), which is all the order they can depend on.
  """
  keys, seen = [], {}
  for image, label in zip(images, labels):
    digest = hashlib.sha256(image.tobytes() + bytes([int(label)])).hexdigest()
    count = seen.get(digest, 0)
    seen[digest] = count + 1
    keys.append(digest[:24] + (f"-{count}" if count else ""))
  return np.array(keys)


def stratified_holdout(keys, labels, holdout):
  """Boolean mask of exactly `holdout` examples, proportionally per class.

  Each class gives its share, rounded by largest remainder so the total is
  exact; within a class, the examples whose keys hash lowest.
  """
  classes, counts = np.unique(labels, return_counts=True)
  share = holdout * counts / counts.sum()
  quota = np.floor(share).astype(np.int64)
  extra = holdout - quota.sum()
  # Largest remainders first; ties go to the smaller class id.
  quota[np.argsort(-(share - quota), kind="stable")[:extra]] += 1
  scores = np.array([hashlib.sha256(f"holdout/{k}".encode()).hexdigest()
                     for k in keys])
  held = np.zeros(len(labels), bool)
  for c, q in zip(classes, quota):
    members = np.flatnonzero(labels == c)
    held[members[np.argsort(scores[members], kind="stable")[:q]]] = True
  return held


class FashionMNIST(base.IndexedSource):
  """Fashion-MNIST from its IDX files, as RGB uint8 images.

  Splits:
    train: the 60,000 training images minus `val` (50,000).
    val: `holdout` (10,000) training images, the same share of every class
      (1,000 each), fixed by the images' contents.
    trainval: all 60,000 training images.
    test: the official 10,000 test images.

  Args:
    data_dir: a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
      t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each gzipped (.gz)
      or not. Default: search `default_dirs()`.
    image_size: side of the square output images; None keeps 28x28. Resized
      bilinearly (antialiased when shrinking) and repeated over three channels.
    holdout: how many training images form `val`.
    download: when the files are not found, fetch them (network) into
      `data_dir` or Keras' cache folder. Never done by default.

  Raises:
    DataNotFoundError: the files are not there (the message says how to get
      them).
    IDXError: a file is corrupt (bad gzip, magic number, sizes or labels).
  """

  name = "fashion_mnist"
  num_classes = 10
  splits = ("train", "val", "trainval", "test")
  class_names = CLASS_NAMES

  def __init__(self, data_dir=None, *, image_size=None, holdout=10_000,
               download=False):
    if image_size is not None and int(image_size) < 1:
      raise ConfigError(f"fashion_mnist: image_size must be a positive side "
                        f"or None, got {image_size!r}.")
    self.image_size = None if image_size is None else int(image_size)
    self.data_dir = self._locate(data_dir, download)
    paths, _ = _find_files(self.data_dir)
    logging.info("fashion_mnist: reading %s", self.data_dir)
    self._images = {}
    self._labels = {}
    for part in ("train", "test"):
      self._images[part], self._labels[part] = _load_pair(
          paths[f"{part}_images"], paths[f"{part}_labels"], self.num_classes)
    n_train = len(self._labels["train"])
    if not 0 < int(holdout) < n_train:
      raise ConfigError(f"fashion_mnist: holdout must be in [1, {n_train}) "
                       f"(the training images), got {holdout!r}.")
    self.holdout = int(holdout)
    self._keys = {part: content_keys(self._images[part], self._labels[part])
                  for part in ("train", "test")}
    held = stratified_holdout(self._keys["train"], self._labels["train"],
                              self.holdout)
    everything = np.arange(n_train)
    self._members = {
        "train": ("train", everything[~held]),
        "val": ("train", everything[held]),
        "trainval": ("train", everything),
        "test": ("test", np.arange(len(self._labels["test"]))),
    }

  @staticmethod
  def _locate(data_dir, download_if_missing):
    folders = [data_dir] if data_dir else default_dirs()
    looked = []
    for folder in folders:
      paths, why = _find_files(folder)
      if paths:
        return folder
      looked.append((folder, why))
    if not download_if_missing:
      raise _not_found(looked)
    return download(data_dir)

  def index(self, split):
    self.check_split(split)
    part, members = self._members[split]
    return self._keys[part][members], self._labels[part][members]

  def _read(self, split, indices):
    part, members = self._members[split]
    members = tf.constant(members, tf.int64)
    images = tf.constant(self._images[part])
    labels = tf.constant(self._labels[part])
    size = self.image_size
    resize = size is not None and tuple(self._images[part].shape[1:]) != (
        size, size)

    def load(i):
      j = tf.gather(members, i)
      image = tf.gather(images, j)[..., None]
      if resize:
        image = tf.image.resize(tf.cast(image, tf.float32), [size, size],
                                method="bilinear", antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0),
                        tf.uint8)
      return {"image": tf.image.grayscale_to_rgb(image),
              "label": tf.gather(labels, j)}

    return indices.map(load, num_parallel_calls=tf.data.AUTOTUNE)
