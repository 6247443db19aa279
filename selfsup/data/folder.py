"""Image folders: `image_folder` (any layout root/<split>/<label>/<image>) and
`places205` (the same layout, plus the paper's held-out validation split).

Files are listed when the source is made, so a missing or empty folder fails
at once. `contents_sha256` hashes that listing (each split folder's (class,
file) index with every file's size and modification time), and the
workdir's source record carries it: a renamed class, an added, removed or
rewritten image makes another record, so cached features of the old
contents are recomputed and results of the two are kept apart.

Each folder is scanned once, on first use: every file is decoded, the ones
that do not decode are skipped and logged, and too many stop the run with
their names (see `decode.check_bad_images`).
"""
import hashlib
import os

from absl import logging
import numpy as np
import tensorflow as tf

from selfsup.data import base
from selfsup.data import decode
from selfsup.core.checks import ConfigError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

_LAYOUT = ("Expected layout: <root>/<split>/<label>/<image>, e.g. "
           "<root>/train/cat/001.jpg and <root>/val/cat/007.png, with images "
           f"ending in one of {EXTENSIONS} (any case).")


def _subdirs(path):
  return sorted(e.rstrip("/") for e in tf.io.gfile.listdir(path)
                if tf.io.gfile.isdir(os.path.join(path, e)))


def _images_in(path):
  """Names of the image files in `path` (by extension), not directories.

  Locally the directory entries say which are folders without a stat per
  file (too slow for millions); remote listings mark folders with a '/'.
  Files that cannot be read are found by the scan (bad files).
  """
  if "://" not in path:
    with os.scandir(path) as entries:
      return sorted(e.name for e in entries
                    if e.name.lower().endswith(EXTENSIONS)
                    and not _is_dir(e))
  return sorted(e for e in tf.io.gfile.listdir(path)
                if e.lower().endswith(EXTENSIONS))


def _is_dir(entry):
  try:
    return entry.is_dir()
  except OSError:  # a broken link or an unreadable entry: a bad file
    return False


def _size_and_time(path):
  """`size mtime_ns` of a local file ("" remotely or when it cannot be
  read: the scan finds such files)."""
  if "://" in path:
    return ""
  try:
    info = os.stat(path)
  except OSError:
    return ""
  return f"{info.st_size} {info.st_mtime_ns}"


def _stable_rank(keys):
  """Orders keys by a hash of their name: random, but independent of where
  the root lives and of the order the file system lists them in."""
  digests = [hashlib.sha256(k.encode("utf-8")).hexdigest() for k in keys]
  return np.argsort(np.array(digests), kind="stable")


class ImageFolder(base.IndexedSource):
  """Images in class folders: <root>/<split folder>/<label>/<image>.

  Labels are the class folder names, sorted over all split folders, numbered
  from 0 (`class_names`). Without `holdout` the splits are the split folders.
  With `holdout=N` the folder `train` gives three splits, as in the paper:
  `val` (N images of it, chosen by a hash of their path), `train` (the rest)
  and `trainval` (all of it); a folder named `val` becomes `official_val`, and
  other folders keep their names.

  Args:
    root: the folder (local, or any `tf.io.gfile` file system such as gs://).
    name: the name in messages and `self.name`.
    num_classes: if given, the number of classes the labels count; an error if
      more class folders are found, a warning if fewer.
    holdout: size of the validation split held out of `train`, or None.
    verify: decode every file once, on first use of its folder, and skip the
      bad ones. With False nothing is scanned, and the pipeline drops files
      that fail to decode as it meets them (tf.data logs each; they are not
      counted, and `num_examples` still counts them).
    max_bad_fraction: more bad files than this fraction of a folder raises
      `BadImagesError` naming them.
  """

  def __init__(self, root, *, name="image_folder", num_classes=None,
               holdout=None, verify=True, max_bad_fraction=0.01):
    self.name = name
    self.root = str(root)
    self.verify = bool(verify)
    self.max_bad_fraction = float(max_bad_fraction)
    if not tf.io.gfile.isdir(self.root):
      raise decode.DataNotFoundError(
          f"{name}: folder {self.root!r} does not exist. {_LAYOUT}")
    self._listing = {}  # split folder -> {class name: [file names]}
    for folder in _subdirs(self.root):
      classes = {c: _images_in(os.path.join(self.root, folder, c))
                 for c in _subdirs(os.path.join(self.root, folder))}
      classes = {c: files for c, files in classes.items() if files}
      if classes:
        self._listing[folder] = classes
    if not self._listing:
      raise decode.DataNotFoundError(
          f"{name}: no images found in class folders under {self.root!r}. "
          f"{_LAYOUT}")
    self.class_names = tuple(sorted(
        set().union(*(classes for classes in self._listing.values()))))
    self.num_classes = len(self.class_names)
    if num_classes is not None:
      if self.num_classes > num_classes:
        raise ConfigError(
            f"{name}: found {self.num_classes} class folders under "
            f"{self.root!r}, more than the dataset's {num_classes}.")
      if self.num_classes < num_classes:
        logging.warning("%s: found only %d of %d class folders under %s.",
                        name, self.num_classes, num_classes, self.root)
      self.num_classes = int(num_classes)
    self.holdout = holdout
    self._where = self._split_folders(holdout)
    self.splits = tuple(self._where)
    self.bad_files = {}  # split folder -> paths skipped by the scan
    self._good = {}
    self._index = {}

  def contents_sha256(self):
    """{split folder: sha256 of its (class/file, label, size, mtime) index}.

    Local folders stat every file (a few seconds per million); on remote
    file systems (gs://) only the names count, a stat per object being
    too slow: there an image rewritten under its old name goes unnoticed.
    """
    label_of = {c: i for i, c in enumerate(self.class_names)}
    out = {}
    for folder, classes in sorted(self._listing.items()):
      digest = hashlib.sha256()
      for c, names in sorted(classes.items()):
        base = os.path.join(self.root, folder, c)
        for name in names:
          digest.update(f"{c}/{name}\0{label_of[c]}\0"
                        f"{_size_and_time(os.path.join(base, name))}\n"
                        .encode("utf-8", "surrogateescape"))
      out[folder] = digest.hexdigest()
    return out

  def _split_folders(self, holdout):
    """Maps split name -> (folder, part); part is None, "train" or "val"."""
    folders = list(self._listing)
    if holdout is None:
      return {f: (f, None) for f in folders}
    if "train" not in self._listing:
      raise decode.DataNotFoundError(
          f"{self.name}: holdout={holdout} needs a 'train' folder under "
          f"{self.root!r}; found {folders}. {_LAYOUT}")
    where = {"train": ("train", "train"), "val": ("train", "val"),
             "trainval": ("train", None)}
    for f in folders:
      if f != "train":
        where["official_val" if f == "val" else f] = (f, None)
    return where

  def _folder_entries(self, folder):
    """(keys, labels) of the decodable files of a split folder, scanned once."""
    if folder not in self._good:
      keys = [f"{c}/{f}" for c, files in sorted(self._listing[folder].items())
              for f in files]
      if self.verify:
        paths = [os.path.join(self.root, folder, k) for k in keys]
        bad = decode.check_bad_images(
            paths, where=os.path.join(self.root, folder),
            max_bad_fraction=self.max_bad_fraction)
        self.bad_files[folder] = bad
        skip = set(bad)
        keys = [k for k, p in zip(keys, paths) if p not in skip]
      label_of = {c: i for i, c in enumerate(self.class_names)}
      labels = np.array([label_of[k.split("/", 1)[0]] for k in keys], np.int64)
      self._good[folder] = (np.array(keys, dtype=object), labels)
    return self._good[folder]

  def index(self, split):
    self.check_split(split)
    if split not in self._index:
      folder, part = self._where[split]
      keys, labels = self._folder_entries(folder)
      if part is not None:
        if self.holdout >= len(keys):
          raise ConfigError(
              f"{self.name}: holdout={self.holdout} leaves no training "
              f"images out of the {len(keys)} in {folder!r}.")
        held = np.zeros(len(keys), bool)
        held[_stable_rank(keys)[:self.holdout]] = True
        keep = held if part == "val" else ~held
        keys, labels = keys[keep], labels[keep]
      self._index[split] = (keys.astype(str), labels)
    return self._index[split]

  def _read(self, split, indices):
    folder = self._where[split][0]
    keys, labels = self.index(split)
    paths = tf.constant([os.path.join(self.root, folder, k) for k in keys],
                        tf.string)
    labels = tf.constant(labels, tf.int64)

    def load(i):
      encoded = tf.io.read_file(tf.gather(paths, i))
      return {"image": decode.decode_rgb(encoded),
              "label": tf.gather(labels, i)}

    ds = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if not self.verify:
      ds = ds.ignore_errors(log_warning=True)
    return ds


_PLACES205_HELP = (
    "places205 reads a folder you prepare: <root>/train/<category>/*.jpg from "
    "the official training list and <root>/val/<category>/*.jpg from the "
    "official validation list (205 categories; see docs/data.md for a script "
    "that links the official images256 archive into this layout).")


def places205(root, *, holdout=20_500, verify=True, max_bad_fraction=0.01):
  """Places205 from a folder: own `val` held out of `train`, `official_val`.

  The held-out split has as many images as the official validation set
  (20,500), as ImageNet's does (50,000).
  """
  try:
    return ImageFolder(root, name="places205", num_classes=205,
                       holdout=holdout, verify=verify,
                       max_bad_fraction=max_bad_fraction)
  except decode.DataNotFoundError as e:
    raise decode.DataNotFoundError(f"{e}\n{_PLACES205_HELP}") from None
