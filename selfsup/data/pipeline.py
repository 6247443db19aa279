"""The input pipeline: source -> per-example preprocessing spec -> batches.

    ds = make_pipeline(source, "train", "resize(256)|rotate", batch_size=1024,
                       training=True, seed=0)
"""
import tensorflow as tf

from selfsup import preprocess
from selfsup.core.keys import SEED_KEY
from selfsup.core.checks import ConfigError

# Pipeline i > 0 of a multi-host run uses seed + i * _PIPELINE_SEED_STRIDE, so
# hosts draw different augmentations.
_PIPELINE_SEED_STRIDE = 1_000_003
# Batch-level seeds get their own stream, apart from the per-example ones.
_BATCH_SEED_OFFSET = 7_919


def _preprocess_fn(spec, training):
  """A features -> features function from a spec string, a callable or None."""
  if spec is None or (isinstance(spec, str) and not spec.strip()):
    return None
  if callable(spec):
    return spec
  return preprocess.get(spec, training=training)


def _with_seeds(ds, seed):
  """Adds `_seed` = [seed, position in the stream] (int64 [2]) to each element.

  Positions count across epochs, so every element of every epoch gets its own
  seed, and the randomness of an element does not depend on how tf.data
  schedules the parallel map.
  """
  return ds.enumerate().map(
      lambda i, x: {**x, SEED_KEY: tf.stack([tf.constant(seed, tf.int64), i])})


def _with_batch_seeds(ds, seed):
  """Adds `_seed` [B, 2] to each batch: the batch's own seed in every row, the
  layout batch-level preprocessing ops read (they use row 0)."""

  def add(i, batch):
    rows = tf.shape(tf.nest.flatten(batch)[0])[0]
    row = tf.stack([tf.constant(seed, tf.int64), i])
    return {**batch, SEED_KEY: tf.tile(row[None], [rows, 1])}

  return ds.enumerate().map(add)


def _drop_seed(features):
  return {k: v for k, v in features.items() if k != SEED_KEY}


def make_pipeline(source, split, spec, *, batch_size, training, seed=None,
                  input_context=None, batch_spec=None, shuffle_buffer=1_000,
                  repeat=None, drop_remainder=None, cache=False):
  """Builds the tf.data pipeline of one split for training or evaluation.

  Training: the source shuffles its reading order, a buffer of
  `shuffle_buffer` decoded examples mixes further, the data repeats, and
  batches drop the remainder so shapes are static (TPU). Evaluation: one
  pass in the source's order (kept even with parallel reads), the last partial
  batch kept.

  Args:
    source: a `selfsup.data.Source`.
    split: one of `source.splits`.
    spec: per-example preprocessing: a `selfsup.preprocess` spec string such as
      "resize(256)|rotate", a callable features -> features, or None/"" for
      none (then images keep their sizes and batch only if they agree).
    batch_size: the GLOBAL batch size. With `input_context` each pipeline
      yields per-replica batches of
      `input_context.get_per_replica_batch_size(batch_size)`, as
      `strategy.distribute_datasets_from_function` expects.
    training: selects the behaviour above, and is passed to the spec.
    seed: makes the whole pipeline deterministic (reading order, shuffling,
      random preprocessing through per-example `_seed`s); None: random.
    input_context: a `tf.distribute.InputContext`; this pipeline then reads
      its own disjoint shard of the split.
    batch_spec: a spec applied to each batch (e.g. `jigsaw_shared`, one
      permutation subset per batch). With `seed` it receives the
      batched `_seed` [B, 2].
    shuffle_buffer: decoded examples in the training shuffle buffer; 0 or 1
      turns this buffer off (the source still shuffles).
    repeat: number of passes; None repeats forever in training and makes one
      pass in evaluation.
    drop_remainder: default `training`.
    cache: cache the decoded examples in memory after the first pass (small
      datasets such as digits); random preprocessing still runs every pass.

  Returns:
    A batched, prefetched `tf.data.Dataset` of feature dicts.
  """
  if drop_remainder is None:
    drop_remainder = training
  per_replica_batch = (input_context.get_per_replica_batch_size(batch_size)
                       if input_context is not None else int(batch_size))
  if per_replica_batch < 1:
    raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}.")
  if seed is not None and input_context is not None:
    seed = int(seed) + _PIPELINE_SEED_STRIDE * input_context.input_pipeline_id
  example_fn = _preprocess_fn(spec, training)
  batch_fn = _preprocess_fn(batch_spec, training)

  ds = source.dataset(split, shuffle=training and not cache, seed=seed,
                      input_context=input_context)
  if cache:
    ds = ds.cache()
  if training:
    buffer = int(shuffle_buffer)
    if cache:
      # The cached order is fixed, so the buffer must do all the shuffling.
      buffer = max(buffer, source.num_examples(split))
    if buffer > 1:
      ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat is None:
    repeat = -1 if training else 1
  if repeat != 1:
    ds = ds.repeat(None if repeat == -1 else repeat)

  if example_fn is not None:
    if seed is not None:
      ds = _with_seeds(ds, seed)
    ds = ds.map(lambda x: _drop_seed(example_fn(x)),
                num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(per_replica_batch, drop_remainder=drop_remainder,
                num_parallel_calls=tf.data.AUTOTUNE)
  if batch_fn is not None:
    if seed is not None:
      ds = _with_batch_seeds(ds, seed + _BATCH_SEED_OFFSET)
    ds = ds.map(lambda x: _drop_seed(batch_fn(x)),
                num_parallel_calls=tf.data.AUTOTUNE)

  options = tf.data.Options()
  # Evaluation keeps the source's order. Training without a seed is not
  # reproducible anyway, so tf.data may hand out whichever element is ready.
  options.deterministic = seed is not None or not training
  if input_context is not None:
    # Already sharded here; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
