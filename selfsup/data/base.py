"""The `Source` interface: a labelled image dataset with named splits."""
import abc

import numpy as np
import tensorflow as tf

from selfsup.core.checks import ConfigError


class Source(abc.ABC):
  """A labelled image dataset with named splits, read as tf.data.

  Every source yields unbatched dicts `{"image": uint8 [H, W, 3] RGB,
  "label": int64 scalar}`; images keep their own size.

  Attributes:
    name: the registry name.
    num_classes: labels lie in [0, num_classes).
    splits: the split names, a tuple.
  """

  name = None
  num_classes = None
  splits = ()

  def check_split(self, split):
    """Raises ValueError unless `split` is one of `self.splits`."""
    if split not in self.splits:
      raise ConfigError(f"Unknown split {split!r} for source {self.name!r}; "
                        f"choose one of {self.splits}.")

  def num_examples(self, split):
    """How many examples one pass of `dataset(split)` yields, all shards."""
    self.check_split(split)
    return self._num_examples(split)

  def dataset(self, split, *, shuffle, seed=None, input_context=None):
    """One pass over `split` as a `tf.data.Dataset` of unbatched examples.

    Args:
      split: one of `self.splits`.
      shuffle: whether to shuffle the reading order (files, records or
        indices, before decoding). Each new iteration reshuffles.
      seed: makes the order deterministic; None draws it at random.
      input_context: a `tf.distribute.InputContext`; this pipeline then reads
        only its own disjoint shard, and the shards together cover the split.

    Returns:
      A `tf.data.Dataset`, not repeated, not batched.
    """
    self.check_split(split)
    return self._dataset(split, shuffle=shuffle, seed=seed,
                         input_context=input_context)

  @abc.abstractmethod
  def _num_examples(self, split):
    """`num_examples` without the split check."""

  @abc.abstractmethod
  def _dataset(self, split, *, shuffle, seed, input_context):
    """`dataset` without the split check."""

  def __repr__(self):
    return (f"{type(self).__name__}(name={self.name!r}, "
            f"num_classes={self.num_classes}, splits={self.splits})")


def shard_range(start, end, input_context):
  """The contiguous part of [start, end) that this input pipeline reads."""
  if input_context is None:
    return start, end
  n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
  size = end - start
  return start + size * i // n, start + size * (i + 1) // n


class IndexedSource(Source):
  """A source whose examples are listed up front, so it reads them by index.

  Knowing every example's key and label in memory makes sharding, shuffling and
  class-balanced subsets exact: they act on integer indices before any image
  is read. Subclasses implement `index` and `_read`.
  """

  @abc.abstractmethod
  def index(self, split):
    """Returns (keys, labels): str and int64 numpy arrays, one per example.

    Keys are stable names (e.g. file paths relative to the root) from which
    subsets are drawn, so a subset does not depend on the listing order.
    """

  @abc.abstractmethod
  def _read(self, split, indices):
    """Maps a dataset of int64 indices into `index(split)` to examples."""

  def _num_examples(self, split):
    return len(self.index(split)[1])

  def _dataset(self, split, *, shuffle, seed, input_context):
    return self.read_indices(split, np.arange(self.num_examples(split)),
                             shuffle=shuffle, seed=seed,
                             input_context=input_context)

  def read_indices(self, split, indices, *, shuffle, seed=None,
                   input_context=None):
    """Like `dataset`, restricted to the examples `indices` of `split`."""
    self.check_split(split)
    indices = np.asarray(indices, np.int64)
    if input_context is not None:
      # Strided, so every shard gets the same number of examples (+-1).
      indices = indices[input_context.input_pipeline_id::
                        input_context.num_input_pipelines]
    ds = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle:
      # A full permutation of indices is cheap and leaves no buffer to tune.
      ds = ds.shuffle(max(len(indices), 1), seed=seed,
                      reshuffle_each_iteration=True)
    return self._read(split, ds)
