"""Mixed precision: the dtype policy layers are made under, and whether
bfloat16 pays on the machine at hand.

Keras layers take the dtype policy in force when they are made
(`dtype_policy`). bfloat16 halves activation memory everywhere, but it is
only faster where the matrix units run it faster than float32: TPUs, recent
GPUs and CPUs with AMX. On CPUs that emulate it (AVX-512 BF16 without AMX
runs bf16 matmuls at about half the float32 rate on the 2-core machine of
docs/performance.md) a mixed-precision run is slower; `warn_if_bf16_slow`
measures the two matmul rates once per process and says so.
"""
import contextlib
import functools
import time

from absl import logging
import keras

# A bf16 matmul rate below this fraction of float32's is "slower".
SLOW_RATIO = 0.9
_N = 512
_REPEATS = 5
_warned = []


@contextlib.contextmanager
def dtype_policy(name):
  """Makes layers created inside use policy `name` ("float32",
  "mixed_bfloat16", ...), restoring the previous global policy after."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


@functools.lru_cache(maxsize=None)
def matmul_rates(device="/CPU:0", n=_N, repeats=_REPEATS):
  """{"float32": FLOP/s, "bfloat16": FLOP/s} of an n x n matmul on
  `device`, best of `repeats` (a fraction of a second on a CPU)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rates = {}
  with tf.device(device):
    for dtype in (tf.float32, tf.bfloat16):
      a = tf.random.stateless_normal([n, n], seed=[1, 2], dtype=tf.float32)
      a = tf.cast(a, dtype)
      matmul = tf.function(lambda x: tf.reduce_sum(tf.matmul(x, x)))
      matmul(a).numpy()  # trace, warm up
      best = float("inf")
      for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - start)
      rates[dtype.name] = 2 * n ** 3 / best
  return rates


def warn_if_bf16_slow(devices=("/CPU:0",)):
  """Warns (once per process) when mixed_bfloat16 will be slower than
  float32 here: on CPU-only devices whose measured bf16 matmul rate is
  below SLOW_RATIO of float32's. Returns the warning text, or None (an
  accelerator among `devices`, a fast bf16 CPU, or already warned)."""
  if _warned or any(("GPU" in d.upper() or "TPU" in d.upper())
                    for d in devices):
    return None
  rates = matmul_rates()
  ratio = rates["bfloat16"] / rates["float32"]
  if ratio >= SLOW_RATIO:
    return None
  text = (f"TrainConfig.mixed_precision=True on a CPU whose bfloat16 matmul "
          f"runs at {rates['bfloat16'] / 1e9:.0f} GFLOP/s against float32's "
          f"{rates['float32'] / 1e9:.0f} GFLOP/s ({ratio:.2f}x, measured "
          f"{_N}x{_N}): training will be slower than in float32. bfloat16 "
          "pays on TPUs, GPUs and CPUs with AMX (docs/performance.md); here "
          "it only halves activation memory.")
  _warned.append(text)
  logging.warning(text)
  return text
