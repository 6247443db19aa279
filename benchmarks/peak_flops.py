r"""Peak matmul FLOP/s of this machine, as TensorFlow sees it.

Times a big square matmul (2 n^3 FLOPs) in float32 and, where the CPU has
bfloat16 arithmetic (AVX512-BF16 / AMX), in bfloat16. The best of a few
repeats is reported: the model FLOP utilisation of a training step is taken
against these numbers.

    python benchmarks/peak_flops.py --json=/tmp/peak.json
"""
import json
import time

from absl import app
from absl import flags
import tensorflow as tf

_N = flags.DEFINE_integer("n", 4096, "Side of the square matrices.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (best kept).")
_JSON = flags.DEFINE_string("json", None, "Write the results here.")


def cpu_has_bf16():
  try:
    with open("/proc/cpuinfo") as f:
      flags_line = f.read()
  except OSError:
    return False
  return "avx512_bf16" in flags_line or "amx_bf16" in flags_line


def matmul_flops(dtype, n, repeats):
  """Best FLOP/s of an n x n @ n x n matmul in `dtype`."""
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  mm = tf.function(lambda x, y: tf.reduce_sum(tf.cast(
      tf.matmul(x, y)[0, 0], tf.float32)))
  mm(a, b).numpy()  # warm-up: trace, oneDNN primitive creation
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    mm(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def measure(n=4096, repeats=5):
  result = {"float32": matmul_flops(tf.float32, n, repeats), "n": n}
  if cpu_has_bf16() or tf.config.list_physical_devices("GPU"):
    result["bfloat16"] = matmul_flops(tf.bfloat16, n, repeats)
  else:
    result["bfloat16"] = None
  return result


def main(argv):
  del argv
  result = measure(_N.value, _REPEATS.value)
  for k in ("float32", "bfloat16"):
    v = result[k]
    print(f"peak matmul {k:<9s} "
          f"{'n/a' if v is None else f'{v / 1e9:8.1f} GFLOP/s'}", flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
