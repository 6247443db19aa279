"""Low-data subsets: a fraction of the training splits, exactly per class
where a source lists its labels (folders, digits), and per example by a keyed
hash for TFDS sources (every class at the same rate only in expectation).

The paper evaluates on 10% and 5% of ImageNet and Places205. A subset is drawn
by ranking examples on a keyed hash of their name: the same seed gives the same
subset on every machine, and for one seed a smaller fraction is contained in a
larger one (5% inside 10%).
"""
import hashlib

import numpy as np

from selfsup.data import base
from selfsup.data import tfds_source
from selfsup.core.checks import ConfigError

TRAINING_SPLITS = ("train", "trainval")


def class_balanced_indices(keys, labels, fraction, seed):
  """Indices (sorted) of round(fraction * n_c) examples of each class c.

  Every class keeps at least one example, so no class vanishes from a tiny
  subset.
  """
  labels = np.asarray(labels)
  scores = np.array([hashlib.sha256(f"{seed}/{k}".encode("utf-8")).hexdigest()
                     for k in keys])
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    count = max(1, int(np.floor(fraction * len(members) + 0.5)))
    chosen.append(members[np.argsort(scores[members], kind="stable")[:count]])
  if not chosen:
    return np.zeros([0], np.int64)
  return np.sort(np.concatenate(chosen)).astype(np.int64)


class Subset(base.Source):
  """A source with its training splits reduced to a class-balanced fraction.

  Exact for sources that list their examples (folders, digits): each class
  keeps round(fraction * its size) examples. For TFDS sources, whose labels are
  not known without reading every record, each example is kept with
  probability `fraction` by a keyed hash of its file name: every class is
  sampled at the same rate, and `num_examples` is the expected count (within
  about 3/sqrt(n * fraction) of the true one; n = the split's size).
  """

  def __init__(self, source, fraction, *, seed=0, splits=None):
    if not 0.0 < float(fraction) <= 1.0:
      raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}.")
    if splits is None:
      splits = tuple(s for s in TRAINING_SPLITS if s in source.splits)
      if not splits:
        raise ConfigError(f"{source.name} has none of the training splits "
                         f"{TRAINING_SPLITS}; pass splits= (one of "
                         f"{source.splits}).")
    for split in splits:
      source.check_split(split)
    if not isinstance(source, (base.IndexedSource, tfds_source.TFDSSource)):
      raise TypeError(f"Cannot take a subset of {type(source).__name__}.")
    self.source = source
    self.fraction = float(fraction)
    self.seed = int(seed)
    self.subset_splits = tuple(splits)
    self.name = source.name
    self.num_classes = source.num_classes
    self.splits = source.splits
    self._chosen = {}

  def __getattr__(self, name):
    # Anything else (class_names, builder, bad_files, ...) is the source's.
    if name == "source":
      raise AttributeError(name)
    return getattr(self.source, name)

  def indices(self, split):
    """The chosen indices into `source.index(split)` (listed sources only)."""
    if split not in self._chosen:
      keys, labels = self.source.index(split)
      self._chosen[split] = class_balanced_indices(keys, labels, self.fraction,
                                                   self.seed)
    return self._chosen[split]

  def _num_examples(self, split):
    if split not in self.subset_splits:
      return self.source.num_examples(split)
    if isinstance(self.source, base.IndexedSource):
      return len(self.indices(split))
    return int(round(self.fraction * self.source.num_examples(split)))

  def _dataset(self, split, *, shuffle, seed, input_context):
    if split not in self.subset_splits:
      return self.source.dataset(split, shuffle=shuffle, seed=seed,
                                 input_context=input_context)
    if isinstance(self.source, base.IndexedSource):
      return self.source.read_indices(split, self.indices(split),
                                      shuffle=shuffle, seed=seed,
                                      input_context=input_context)
    return self.source._dataset(  # pylint: disable=protected-access
        split, shuffle=shuffle, seed=seed, input_context=input_context,
        keep=(self.fraction, self.seed))


def subset(source, fraction, *, seed=0, splits=None):
  """Returns `source` with its training splits cut to `fraction` of each class.

  Args:
    source: a `Source` (folder, digits or TFDS based).
    fraction: in (0, 1]; the paper uses 0.1 and 0.05.
    seed: which subset; the same seed always gives the same one.
    splits: the splits to cut; default those of ("train", "trainval") that the
      source has. Evaluation splits stay whole.
  """
  return Subset(source, fraction, seed=seed, splits=splits)
