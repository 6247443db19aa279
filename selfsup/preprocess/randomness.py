"""Seeds for the random preprocessing ops.

Every random op draws its randomness from stateless ops
(`tf.random.stateless_*`, `tf.image.stateless_*`) and gets its seeds from
`take_seeds`:

* If the features carry `SEED_KEY` (`"_seed"`, an int64 tensor of shape [2]
  that a pipeline builder adds per example, e.g. from
  `tf.data.Dataset.random(seed=...)`), the op splits it: it keeps some of the
  new seeds for itself and writes the last one back under `SEED_KEY` for the
  next op. The output of a whole spec is then a pure function of the input
  features, whatever the order in which tf.data runs the examples, and two
  random ops of one spec never share a seed.
* Otherwise the op draws its seeds from `tf.random.uniform`, so the result
  follows TensorFlow's global and op seeds like any other stateful random op.

After batching the seed has shape [B, 2]; batch-level ops use and advance row 0
only, because they draw one random choice for the whole batch.
"""
import tensorflow as tf

from selfsup.core.keys import SEED_KEY
_SEED_MAX = 2**62


def take_seeds(features, num):
  """Returns `num` fresh seeds for one op, and the features to pass on.

  Args:
    features: the op's input features; not modified.
    num: how many independent seeds the op needs.

  Returns:
    (features, seeds): a shallow copy of `features` whose `SEED_KEY`, when
    there is one, has been advanced, and an int64 tensor [num, 2].
  """
  features = dict(features)
  if SEED_KEY not in features:
    seeds = tf.random.uniform([num, 2], -_SEED_MAX, _SEED_MAX, dtype=tf.int64)
    return features, seeds
  seed = tf.cast(features[SEED_KEY], tf.int64)
  if seed.shape.rank == 2:
    split = tf.random.experimental.stateless_split(seed[0], num + 1)
    features[SEED_KEY] = tf.concat([split[-1:], seed[1:]], axis=0)
  elif seed.shape.rank == 1:
    split = tf.random.experimental.stateless_split(seed, num + 1)
    features[SEED_KEY] = split[-1]
  else:
    raise ValueError(f"features[{SEED_KEY!r}] must have shape [2] or "
                     f"[batch, 2], got {seed.shape}.")
  return features, split[:num]


def uniform_int(seed, maxval, shape=()):
  """Uniform int32 in [0, maxval] (inclusive; `maxval` may be a tensor that
  broadcasts against `shape`), from a stateless seed."""
  # Integer stateless_uniform needs scalar bounds; going through floats lets
  # each element have its own bound.
  top = tf.cast(maxval, tf.float32)
  unit = tf.random.stateless_uniform(shape, seed)
  value = tf.cast(tf.floor(unit * (top + 1.0)), tf.int32)
  return tf.minimum(value, tf.cast(maxval, tf.int32))


def sample_without_replacement(seed, population, num):
  """`num` distinct int32 values out of range(population), in random order."""
  keys = tf.random.stateless_uniform([population], seed)
  return tf.argsort(keys)[:num]
