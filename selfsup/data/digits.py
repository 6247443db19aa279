"""`digits`: scikit-learn's 8x8 handwritten digits as small RGB images.

The offline demo and the end-to-end tests run on it: 1,797 labelled digits,
built in memory in well under a second, nothing downloaded (the data ships
inside scikit-learn).
"""
import numpy as np
import tensorflow as tf

from selfsup.core.errors import MissingDependencyError
from selfsup.data import base
from selfsup.core.checks import ConfigError

# Fraction of each class held out as the evaluation split.
_VAL_FRACTION = 0.2
# Fixed seeds: the split and the colours are part of the dataset's definition.
_SPLIT_SEED = 0
_COLOUR_SEED = 1


def _load_digits():
  try:
    # Imported here: scikit-learn is an optional extra, needed for digits only.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    # A library error: the commands print it as one line, not a traceback.
    raise MissingDependencyError(
        "The `digits` source (the offline demo data) needs scikit-learn, "
        "which is not installed: pip install \"selfsup[demo]\".") from e
  digits = datasets.load_digits()
  return digits.images.astype(np.float32), digits.target.astype(np.int64)


def stratified_holdout(labels, fraction, seed):
  """Boolean mask selecting round(fraction * n_c) random examples per class."""
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(labels))
  held = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    members = order[labels[order] == c]
    held[members[:int(np.floor(fraction * len(members) + 0.5))]] = True
  return held


def render(images, image_size, seed=_COLOUR_SEED):
  """Renders [N, 8, 8] digit intensities (0..16) as uint8 [N, S, S, 3] RGB.

  Bilinear upsampling, then each image gets its own dark background and light
  ink colour, so the pictures have colour and contrast for the pretext tasks
  (grayscale augmentation, exemplar colour jitter) to act on.
  """
  ink = tf.image.resize(images[..., None] / 16.0, [image_size, image_size],
                        method="bilinear").numpy()
  ink = np.clip(ink, 0.0, 1.0)
  rng = np.random.default_rng(seed)
  background = rng.uniform(0.0, 0.35, (len(images), 1, 1, 3))
  foreground = rng.uniform(0.65, 1.0, (len(images), 1, 1, 3))
  rgb = background + (foreground - background) * ink
  return np.round(rgb * 255.0).astype(np.uint8)


class Digits(base.IndexedSource):
  """scikit-learn's digits, 10 classes, as RGB uint8 images.

  Splits (fixed, stratified: 20% of each class held out with a fixed seed):
    train: 1,438 images.  val: 359 images.  test: the same 359 as val (the
    dataset has no separate test set; the name is there for scripts that say
    "test").  trainval: all 1,797.

  Args:
    image_size: side of the square images (>= 8).
  """

  name = "digits"
  num_classes = 10
  splits = ("train", "val", "test", "trainval")

  def __init__(self, image_size=32):
    if int(image_size) < 8:
      raise ConfigError(f"digits: image_size must be >= 8, got {image_size!r}.")
    self.image_size = int(image_size)
    raw, self._labels = _load_digits()
    self._images = render(raw, self.image_size)
    held = stratified_holdout(self._labels, _VAL_FRACTION, _SPLIT_SEED)
    everything = np.arange(len(self._labels))
    self._members = {"train": everything[~held], "val": everything[held],
                     "test": everything[held], "trainval": everything}

  def index(self, split):
    self.check_split(split)
    members = self._members[split]
    return members.astype(str), self._labels[members]

  def _read(self, split, indices):
    members = tf.constant(self._members[split], tf.int64)
    images = tf.constant(self._images)
    labels = tf.constant(self._labels)

    def load(i):
      j = tf.gather(members, i)
      return {"image": tf.gather(images, j), "label": tf.gather(labels, j)}

    return indices.map(load, num_parallel_calls=tf.data.AUTOTUNE)
