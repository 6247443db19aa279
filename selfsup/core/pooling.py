"""How a spatial endpoint [B, H, W, C] becomes the evaluation's feature vector.

The linear evaluation pools block1..block4 to about `MAX_FEATURES` (9,000)
values so that one linear model fits every layer. Three rules:

- "nearest" (default; the authors' `utils.adaptive_pool`, mode
  "adaptive_max"): a square s x s grid with s the floor or ceil of
  sqrt(9000 / C), whichever gives s * s * C nearer 9,000 (so it may exceed
  9,000: k=4 block1 6x6x256 = 9,216); maps that already fit are not pooled.
  The authors' bins come from TF's fractional max-pooling (random
  boundaries); these are deterministic near-equal bins.
- "floor": the largest s with s * s * C <= 9,000, capped by the map (what
  selfsup did before 2026-11).
- "max" (the authors' `--pool_mode max`, what their shipped evaluation
  scripts config/evaluation/*.sh pass): non-overlapping max-pooling with a
  square window and stride t = ceil(sqrt(H * W * C / 9000)), clamped to
  [1, H], 'VALID' padding, so floor(H / t) x floor(W / t) cells (the rows
  and columns left over are dropped, as tf.contrib's max_pool2d did).
  ResNet50 v2 at k=4 on 224x224 images gives 6,400 / 8,192 / 4,096 / 2,048
  features for block1..block4.

The rule is always an argument (`EvalSettings.pooling`, `Representation`'s
`grid_rule`), never read from gin while tracing. `VERSION` enters the feature
cache's fingerprint: bump it whenever any rule's output changes (the golden
test in tests/test_extract.py fails until it is bumped); edits that keep the
output (a comment, a refactor) then invalidate no cache.
"""
import math

import tensorflow as tf

from selfsup.core import checks
from selfsup.core.checks import ConfigError

# Bump when the output of `pool` changes for any input (see the docstring).
VERSION = 1
MAX_FEATURES = 9_000
RULES = ("nearest", "floor", "max")
DEFAULT_RULE = "nearest"


def check_rule(rule, name: str = "rule") -> str:
  """`rule` if it is one of RULES; else ConfigError naming `name`."""
  return checks.string(name, rule, choices=RULES)


def grid_size(h, w, c, max_features=MAX_FEATURES, rule=DEFAULT_RULE):
  """(rows, cols) of the pooled map of an [h, w, c] endpoint under `rule`."""
  check_rule(rule)
  if rule == "max":
    t = _stride(h, w, c, max_features)
    return h // t, w // t
  if rule == "floor":
    s = max(1, int(math.isqrt(max_features // c))) if c <= max_features else 1
    s = min(s, h, w)
    return s, s
  if h * w * c <= max_features:
    return h, w
  target = math.sqrt(max_features / c)
  low, high = math.floor(target), math.ceil(target)
  s = low if abs(max_features - c * low ** 2) < abs(
      max_features - c * high ** 2) else high
  s = min(max(s, 1), h, w)
  return s, s


def num_features(h, w, c, max_features=MAX_FEATURES, rule=DEFAULT_RULE):
  """How many values `pool` gives an [h, w, c] endpoint."""
  rows, cols = grid_size(h, w, c, max_features, rule)
  return rows * cols * c


def _stride(h, w, c, max_features):
  """The "max" rule's window and stride (the authors' formula)."""
  t = int(math.ceil(math.sqrt(h * w * c / max_features)))
  return min(max(1, t), h, w)


def pool(x, max_features=MAX_FEATURES, rule=DEFAULT_RULE):
  """[B, H, W, C] -> [B, features] float, as `rule` says (module docstring)."""
  _, h, w, c = x.shape
  if h is None or w is None or c is None:
    raise ConfigError(f"pooling needs a static spatial size and channel count, "
                      f"got shape {x.shape}.")
  rows_n, cols_n = grid_size(h, w, c, max_features, rule)
  if (rows_n, cols_n) == (h, w):
    return tf.reshape(x, [-1, h * w * c])
  if rule == "max":
    t = _stride(h, w, c, max_features)
    pooled = tf.nn.max_pool2d(x, t, t, "VALID")
    return tf.reshape(pooled, [-1, rows_n * cols_n * c])
  return tf.reshape(_near_equal_bins(x, rows_n, cols_n),
                    [-1, rows_n * cols_n * c])


def _near_equal_bins(x, rows_n, cols_n):
  """[B, H, W, C] -> [B, rows_n, cols_n, C]: bin i along an axis of size n
  covers [floor(i*n/s), ceil((i+1)*n/s)), so the bins tile the map and
  overlap by at most one pixel."""
  _, h, w, _ = x.shape
  rows = []
  for i in range(rows_n):
    y0, y1 = (i * h) // rows_n, -((-(i + 1) * h) // rows_n)
    cols = []
    for j in range(cols_n):
      x0, x1 = (j * w) // cols_n, -((-(j + 1) * w) // cols_n)
      cols.append(tf.reduce_max(x[:, y0:y1, x0:x1, :], axis=[1, 2]))
    rows.append(tf.stack(cols, axis=1))
  return tf.stack(rows, axis=1)
