r"""Throughput of each task's training input pipeline on this machine.

Prints source images per second (a Rotation batch of B images holds 4B
rotated copies; B is what is counted) for:
  * the paper's pipelines (selfsup.preprocess.specs at full size), fed by a
    temporary folder of JPEGs of about 400x350 written at start-up and read
    through the `image_folder` source (listing, reading, decoding included);
  * the offline demo's pipelines on `digits` at small sizes.

    python benchmarks/input_pipeline.py --batch_size=64 --num_batches=20

Not a test: numbers depend on the cores tf.data gets.
"""
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf

from selfsup import data
from selfsup import tasks

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per batch.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 10,
                                    "Batches timed per pipeline.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 2,
                               "Batches read before the clock starts.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256,
                                   "JPEGs written to the temporary folder.")
_TASKS = flags.DEFINE_list(
    "tasks", tasks.TASKS.names(), "Tasks to time (selfsup.tasks.TASKS).")
_DIGITS = flags.DEFINE_bool("digits", True, "Also time the digits demo.")


def write_jpegs(root, count, seed=0):
  """Photo-like JPEGs: smooth colour fields plus grain, 400x350 give or take.

  Pure noise would not compress like a photo and would decode slower."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    h, w = rng.integers(330, 371), rng.integers(380, 421)
    coarse = rng.uniform(0, 255, (6, 7, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse[None], [h, w], "bicubic")[0].numpy()
    grain = rng.normal(0, 6, (h, w, 3))
    image = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    folder = os.path.join(root, "train", f"class{i % 10}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.jpg"),
                                quality=90)


def _time(source, spec, batch_spec=None):
  ds = data.make_pipeline(source, "train", spec, batch_spec=batch_spec or None,
                          batch_size=_BATCH_SIZE.value, training=True, seed=0)
  iterator = iter(ds)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_NUM_BATCHES.value):
    batch = next(iterator)
  # Make sure the last batch is really computed before stopping the clock.
  tf.nest.map_structure(lambda t: t.numpy(), batch)
  return _NUM_BATCHES.value * _BATCH_SIZE.value / (
      time.perf_counter() - start)


def _report(label, source, spec, batch_spec=None):
  rate = _time(source, spec, batch_spec)
  print(f"{label:<48s} {rate:9.1f} images/s", flush=True)


def main(argv):
  del argv
  print(f"batch_size={_BATCH_SIZE.value} num_batches={_NUM_BATCHES.value} "
        f"cpus={os.cpu_count()} tf={tf.__version__}")
  root = tempfile.mkdtemp(prefix="selfsup_bench_")
  try:
    write_jpegs(root, _NUM_IMAGES.value)
    source = data.get("image_folder", root=root)
    print(f"-- {_NUM_IMAGES.value} JPEGs of ~400x350 in a temporary folder")
    _report("read + decode + resize(224) (baseline)", source, "resize(224)")
    for task in _TASKS.value:
      task_specs = tasks.TASKS.lookup(task)[0].pretext_specs()
      _report(f"{task} (paper sizes)", source, task_specs["train"],
              task_specs["batch"])
    if "jigsaw" in _TASKS.value:
      code = tasks.Jigsaw.pretext_specs(shared_perms=8)
      _report("jigsaw, authors' code variant (shared_perms=8)", source,
              code["train"], code["batch"])
  finally:
    shutil.rmtree(root, ignore_errors=True)
  if _DIGITS.value:
    print("-- digits demo (32x32 images, in memory)")
    digits = data.get("digits", image_size=32)
    small = {"rotation": {"size": 32}, "exemplar": {"size": 32},
             "supervised": {"size": 32},
             "jigsaw": {"crop": 30, "patch": 8},
             "relative_patch_location": {"crop": 30, "patch": 8}}
    for task in _TASKS.value:
      kwargs = small[task]
      _report(f"{task} {kwargs}", digits,
              tasks.TASKS.lookup(task)[0].pretext_specs(**kwargs)["train"])


if __name__ == "__main__":
  app.run(main)
