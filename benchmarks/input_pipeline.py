r"""Throughput of each task's training input pipeline on this machine.

Prints source images per second (a Rotation batch of B images holds 4B
rotated copies; B is what is counted) for:
  * the paper's pipelines (selfsup.preprocess.specs at full size), fed by a
    temporary folder of JPEGs of about 400x350 written at start-up and read
    through the `image_folder` source (listing, reading, decoding included);
  * the offline demo's pipelines on `digits` at small sizes;
  * with --two_view: SimCLR's two-view pipeline at 64x64 and 224x224 next to
    the rate at which SimCLR's train step (ResNet50 v1, k=4, float32, batch
    --two_view_batch, one real batch repeated from memory) consumes source
    images on this machine, and their ratio (the target is >= 2).

    python benchmarks/input_pipeline.py --batch_size=64 --num_batches=20
    python benchmarks/input_pipeline.py --two_view --tasks= --nodigits

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
_TWO_VIEW = flags.DEFINE_bool(
    "two_view", False, "Time SimCLR's pipeline against its train step.")
_TWO_VIEW_SIZES = flags.DEFINE_list("two_view_sizes", ["64", "224"],
                                    "Image sides for --two_view.")
_TWO_VIEW_BATCH = flags.DEFINE_integer(
    "two_view_batch", 16, "Source images per train step for --two_view.")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed train steps (--two_view).")


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
    if _TWO_VIEW.value:
      _two_view(source)
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
             "supervised": {"size": 32}, "simclr": {"size": 32},
             "byol": {"size": 32}, "barlow_twins": {"size": 32},
             "jigsaw": {"crop": 30, "patch": 8},
             "relative_patch_location": {"crop": 30, "patch": 8}}
    for task in _TASKS.value:
      kwargs = small[task]
      _report(f"{task} {kwargs}", digits,
              tasks.TASKS.lookup(task)[0].pretext_specs(**kwargs)["train"])


def _step_rate(source, size):
  """Source images/s of SimCLR's train step (the Trainer's compiled loop) at
  `size`, on one batch of its real pipeline repeated from memory."""
  from selfsup.train import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  class _OneBatchTrainer(trainer_lib.Trainer):
    def _make_input(self):
      ds = self._train_input(tf.distribute.InputContext())
      return iter(ds.take(1).cache().repeat()), next, True

  batch = _TWO_VIEW_BATCH.value
  task = tasks.get("simclr", backbone="resnet50_v1", width=4,
                   image_size=size)
  config = trainer_lib.TrainConfig(
      batch_size=batch, train_steps=10_000, optimizer="lars",
      schedule="cosine", base_lr=0.3, weight_decay=1e-6, warmup_epochs=0,
      seed=0, shuffle_buffer=0, checkpoint_input=False)
  workdir = tempfile.mkdtemp(prefix="selfsup_simclr_step_")
  try:
    trainer = _OneBatchTrainer(task, source, workdir, config)
    loop, it = trainer._train_loop, trainer._iterator  # pylint: disable=protected-access
    loop(it, tf.constant(1))  # tracing, oneDNN set-up
    start = time.perf_counter()
    loop(it, tf.constant(_STEPS.value))
    return _STEPS.value * batch / (time.perf_counter() - start)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def _two_view(source):
  print("-- SimCLR: two-view preprocessing vs the train step (source "
        "images/s)")
  for size in (int(s) for s in _TWO_VIEW_SIZES.value):
    spec = tasks.SimCLR.pretext_specs(size=size)["train"]
    pipeline = _time(source, spec)
    step = _step_rate(source, size)
    print(f"simclr two views {size}x{size}: pipeline {pipeline:.1f} "
          f"images/s, train step {step:.2f} images/s, ratio "
          f"{pipeline / step:.1f}x (target >= 2x)", flush=True)


if __name__ == "__main__":
  app.run(main)
