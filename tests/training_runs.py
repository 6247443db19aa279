"""Tiny training runs shared by the trainer tests, and a script running them in
a fresh process.

Multi-device runs need the logical CPU devices configured before TensorFlow
initialises, and multi-worker runs need TF_CONFIG before the strategy exists,
so the tests start this file with `sys.executable` and read back JSON and
.npz files (selfsup is imported late, after the devices are set):

    python tests/training_runs.py compare OUT_DIR a|b   # default vs mirrored
    python tests/training_runs.py worker OUT_DIR INDEX PORT0,PORT1
    python tests/training_runs.py train WORKDIR         # killed by the test

Sizes: ResNet18 v2 at width 0.25 (4 root channels), 16-pixel digits (patch
tasks: 4-pixel patches cut from a 15-pixel crop), heads of 16 units.
"""
# pylint: disable=import-outside-toplevel
import json
import os
import shutil
import sys
import time

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Run as a script: make `selfsup` and `tests` importable from the checkout.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

IMAGE_SIZE = 16
# Patch tasks: dropout 0, because dropout masks are drawn per replica and
# would make a mirrored run differ from a single-device one by design.
PATCH_KWARGS = dict(image_size=4, embedding_size=16, hidden_size=16,
                    dropout=0.0, spec_kwargs=dict(crop=15))
# Every registered task (`selfsup.tasks.TASKS`) needs its tiny arguments here:
# `TASKS` refuses a registry with a task missing from this dict.
TASK_KWARGS = {
    "rotation": dict(image_size=IMAGE_SIZE),
    "supervised": dict(image_size=IMAGE_SIZE, num_classes=10),
    "exemplar": dict(image_size=IMAGE_SIZE, copies=2, embedding_size=16),
    "jigsaw": PATCH_KWARGS,
    "relative_patch_location": PATCH_KWARGS,
    # The two-view methods: projector (hidden, output) of 16 units.
    "simclr": dict(image_size=IMAGE_SIZE, projector=(16, 8), temperature=0.5),
    "byol": dict(image_size=IMAGE_SIZE, projector=(16, 8)),
    # A scaled loss: its gradients at lr 0.1 (the XLA test) move the
    # weights by several times their size, beyond what rounding allows.
    "barlow_twins": dict(image_size=IMAGE_SIZE, projector=(16, 8),
                         loss_scale=0.1),
}
# Their fixed views are the image and its mirror image (`flipped_pair`), as
# Exemplar's: identical views would leave nothing to learn.
TWO_VIEW = ("simclr", "byol", "barlow_twins")
# Peak learning rate of the fixed-batch runs. Exemplar's semi-hard triplet
# mining re-picks its negatives as the embeddings move: at 0.1 its 12-step
# loss on 10 images wanders instead of falling, whatever the rounding.
# SimCLR's loss gives large gradients: at 0.1 its trajectories part after 2
# steps between default and mirrored rounding.
PEAK_LR = {"exemplar": 0.03, "simclr": 0.03}
# Steps of the fixed-batch runs; "falls" is judged on averages over thirds.
# Exemplar's mined loss is not one smooth objective (each replica mines among
# its own 5 images): step by step it follows the processor's rounding (seen:
# 0.35 -> 0.48 at step 12 on one machine, 0.34 -> 0.13 on another). Jigsaw's
# 100-way loss moves slowly: 12 steps fell by 0.9% from one seed's weights.
FIXED_STEPS = {"exemplar": 24, "jigsaw": 24}
# Seed of weights and input; SELFSUP_TEST_SEED=1 re-runs the distributed
# tests on other initial weights (the properties they check hold for any).
SEED = int(os.environ.get("SELFSUP_TEST_SEED", "0"))
# One image of each digit: a fixed batch, so every step sees the same images.
FIXED_FRACTION = 0.01
FIXED_BATCH = 10
# The kill-and-resume configuration (the `train` mode and test_trainer.py).
RESUME_STEPS = 60
RESUME_CHECKPOINT_STEPS = 5


def task_names():
  """The registered tasks (`selfsup.tasks.TASKS`), each with `TASK_KWARGS`."""
  import selfsup.tasks
  names = tuple(selfsup.tasks.TASKS.names())
  missing = sorted(set(names) - set(TASK_KWARGS))
  stale = sorted(set(TASK_KWARGS) - set(names))
  if missing or stale:
    raise AssertionError(
        f"tests/training_runs.py TASK_KWARGS must name every registered task "
        f"{list(names)}: missing {missing}, not registered {stale}.")
  return names


def compare_parts():
  """The `compare` runs split in three processes: image tasks, patch tasks
  and the two-view methods."""
  import selfsup.tasks
  patch = {n: selfsup.tasks.TASKS.lookup(n)[0].patch_based
           for n in task_names()}
  return {"a": tuple(n for n in patch if not patch[n] and n not in TWO_VIEW),
          "b": tuple(n for n in patch if patch[n]),
          "c": tuple(n for n in patch if n in TWO_VIEW)}


def __getattr__(name):
  # `TASKS` and `COMPARE_PARTS` read the registry when first asked for, not
  # at import: run as a script, this file imports selfsup only after the
  # logical devices are set.
  if name == "TASKS":
    return task_names()
  if name == "COMPARE_PARTS":
    return compare_parts()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_task(name, **overrides):
  import selfsup.tasks
  kwargs = dict(TASK_KWARGS[name], backbone="resnet18_v2", width=0.25)
  kwargs.update(overrides)
  return selfsup.tasks.get(name, **kwargs)


def flipped_pair(features):
  """Exemplar's (and the two-view methods') views without randomness: the
  image and its mirror image."""
  image = tf.cast(features["image"], tf.float32) / 127.5 - 1.0
  return {"image": tf.stack([image, tf.image.flip_left_right(image)])}


def make_deterministic(task):
  """Trains on the evaluation views: no random augmentation, so a fixed set of
  images gives the same batch at every step and the loss must fall."""
  if task.name == "exemplar" or task.name in TWO_VIEW:
    task.specs = dict(task.specs, train=flipped_pair)
  else:
    task.specs = dict(task.specs, train=task.specs["eval"])
  return task


def config(peak_lr=0.1, **overrides):
  """A TrainConfig without warm-up or decay (the paper's are in epochs, and an
  epoch here is one step) at a peak learning rate of `peak_lr`."""
  from selfsup.train import TrainConfig
  # Synchronised batch norm (not the default, which is per replica as the
  # authors' TPU code): a mirrored run then computes what one device does.
  kwargs = dict(batch_size=FIXED_BATCH, train_steps=12, base_lr=0.1,
                warmup_epochs=0, decay_epochs=(), steps_per_loop=1,
                checkpoint_steps=1000, seed=SEED, shuffle_buffer=0,
                sync_batch_norm=True,
                # The online probe (on by default with labels) has its own
                # tests (test_probe.py); elsewhere it would only add traces.
                online_probe=False)
  kwargs.update(overrides)
  if "base_lr" not in overrides:
    kwargs["base_lr"] = peak_lr * 256 / kwargs["batch_size"]
  return TrainConfig(**kwargs)


def digits(fraction=None):
  import selfsup.data
  return selfsup.data.get("digits", image_size=IMAGE_SIZE, fraction=fraction)


def weights(modules):
  """{variable path: numpy value} of every variable (trainable or not)."""
  out = {}
  for name, module in sorted(modules.items()):
    for var in module.variables:
      out[f"{name}/{var.path}"] = np.array(var.numpy())
  return out


def scalars(workdir, tag="loss"):
  """{step: value} of a scalar the trainer wrote to workdir/train."""
  out = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(workdir, "train",
                                                   "events.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          out[int(event.step)] = float(tf.make_ndarray(value.tensor))
  return out


def train_steps(trainer, steps):
  """Trains `steps` more steps; returns the per-step losses (steps_per_loop
  must be 1) from the summaries."""
  start = trainer.step
  if not steps:
    return []
  trainer.train(max_steps=start + steps)
  written = scalars(trainer.workdir)
  return [written[s] for s in range(start + 1, trainer.step + 1)]


def replica_values(strategy, variable):
  """The value a variable holds on each replica."""
  value = getattr(variable, "value", variable)
  return [np.asarray(v.numpy()) for v in
          strategy.experimental_local_results(value)]


# --------------------------------------------------------------------------
# Script modes.


def _seed():
  import keras
  keras.utils.set_random_seed(SEED)


def _trainer(task_name, strategy, workdir, deterministic=True, **cfg):
  from selfsup.train import Trainer
  _seed()
  task = make_task(task_name)
  if deterministic:
    make_deterministic(task)
  source = digits(FIXED_FRACTION if deterministic else None)
  cfg.setdefault("peak_lr", PEAK_LR.get(task_name, 0.1))
  if deterministic:
    cfg.setdefault("train_steps", FIXED_STEPS.get(task_name, 12))
  return Trainer(task, source, workdir, config(**cfg), strategy=strategy)


def _batch_norms(modules):
  import keras
  return [layer.synchronized for module in modules.values()
          for layer in module.layers
          if isinstance(layer, keras.layers.BatchNormalization)]


def _replica_spread(strategy, modules):
  """Per variable, the largest difference between two replicas' values."""
  spread = {}
  for name, module in modules.items():
    for var in module.variables:
      values = replica_values(strategy, var)
      spread[f"{name}/{var.path}"] = max(
          float(np.max(np.abs(v - values[0]))) for v in values)
  return spread


def compare(out, part):
  """Tasks under the default strategy and a 2-replica MirroredStrategy on a
  fixed batch (12 steps; weights also saved after 1). Part "a": the
  whole-image tasks; part "b": the patch tasks, then Rotation with its random
  augmentation: the first steps under both strategies, and a mirrored run
  resumed from a copy of its step-2 checkpoint; part "c": SimCLR, BYOL and
  Barlow Twins. (Parts, so that processes share the work and each stays
  within the tests' timeout.)"""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": True})  # tiny graphs: rewrites cost time
  from selfsup.train import make_strategy
  mirrored = make_strategy("auto")
  default = tf.distribute.get_strategy()
  results = {"strategy": type(mirrored).__name__,
             "replicas": mirrored.num_replicas_in_sync}
  tic = time.time()
  for name in compare_parts()[part]:
    for kind, strategy in (("default", default), ("mirrored", mirrored)):
      workdir = os.path.join(out, name, kind)
      trainer = _trainer(name, strategy, workdir)
      trainer.train(max_steps=1)
      np.savez(os.path.join(out, f"{name}-{kind}-step1.npz"),
               **weights(trainer.task.modules))
      trainer.train()
      np.savez(os.path.join(out, f"{name}-{kind}.npz"),
               **weights(trainer.task.modules))
      written = scalars(workdir)
      results[f"{name}/{kind}"] = {
          "losses": [written[s] for s in sorted(written)],
          "step": trainer.step,
          "synchronized": _batch_norms(trainer.task.modules)}
      if kind == "mirrored":
        results[f"{name}/{kind}"]["replica_spread"] = _replica_spread(
            strategy, trainer.task.modules)
    print(name, "done", round(time.time() - tic, 1), flush=True)
  if part != "b":
    with open(os.path.join(out, f"results-{part}.json"), "w") as f:
      json.dump(results, f)
    return
  random_aug = dict(deterministic=False, batch_size=8, train_steps=4,
                    checkpoint_steps=2, shuffle_buffer=32)
  trainer = _trainer("rotation", default, os.path.join(out, "real-default"),
                     **random_aug)
  results["real/default"] = {"losses": train_steps(trainer, 2)}
  workdir = os.path.join(out, "real-mirrored")
  trainer = _trainer("rotation", mirrored, workdir, **random_aug)
  results["real/mirrored"] = {"losses": train_steps(trainer, 4),
                              "step": trainer.step}
  np.savez(os.path.join(out, "real-mirrored.npz"),
           **weights(trainer.task.modules))
  # A run killed right after its step-2 checkpoint, resumed by a new trainer.
  resumed = os.path.join(out, "real-resumed")
  shutil.copytree(os.path.join(workdir, "checkpoints"),
                  os.path.join(resumed, "checkpoints"))
  tf.compat.v1.train.update_checkpoint_state(
      os.path.join(resumed, "checkpoints"),
      os.path.join(resumed, "checkpoints", "ckpt-2"))
  trainer = _trainer("rotation", mirrored, resumed, **random_aug)
  results["real/resumed"] = {"restored": trainer.checkpoint.latest}
  trainer.train()
  results["real/resumed"]["step"] = trainer.step
  np.savez(os.path.join(out, "real-resumed.npz"),
           **weights(trainer.task.modules))
  with open(os.path.join(out, f"results-{part}.json"), "w") as f:
    json.dump(results, f)


def worker(out, index, ports):
  """One of two MultiWorkerMirroredStrategy workers on 127.0.0.1: Rotation
  on the fixed batch, one replica per worker, each reading half the images
  (all of its shard at every step)."""
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": True})  # tiny graphs: rewrites cost time
  os.environ["TF_CONFIG"] = json.dumps({
      "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
      "task": {"type": "worker", "index": index}})
  from selfsup.train import make_strategy
  strategy = make_strategy("auto")
  workdir = os.path.join(out, "workdir")
  trainer = _trainer("rotation", strategy, workdir)
  logs = trainer.train(max_steps=4)
  result = {"strategy": type(strategy).__name__, "is_chief": trainer.is_chief,
            "replicas": strategy.num_replicas_in_sync, "step": trainer.step,
            "last_loss": logs["loss"], "export": trainer.export()}
  if trainer.is_chief:
    written = scalars(workdir)
    result["losses"] = [written[s] for s in sorted(written)]
  np.savez(os.path.join(out, f"worker{index}.npz"),
           **weights(trainer.task.modules))
  with open(os.path.join(out, f"worker{index}.json"), "w") as f:
    json.dump(result, f)


def train(workdir):
  """The kill-and-resume run, to the end unless killed."""
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": True})  # as in test_trainer.py
  from selfsup.train import Trainer
  _seed()
  trainer = Trainer(make_task("rotation"), digits(), workdir, resume_config())
  print("built", flush=True)
  trainer.train()
  print("finished", trainer.step, flush=True)


def resume_config(**overrides):
  """Real augmentation and a shuffle buffer: the input state matters."""
  kwargs = dict(batch_size=8, train_steps=RESUME_STEPS, steps_per_loop=5,
                checkpoint_steps=RESUME_CHECKPOINT_STEPS, shuffle_buffer=64,
                checkpoint_input=True, max_checkpoints=2)
  kwargs.update(overrides)
  return config(**kwargs)


if __name__ == "__main__":
  mode, path = sys.argv[1], sys.argv[2]
  os.makedirs(path, exist_ok=True)
  if mode == "compare":
    compare(path, sys.argv[3])
  elif mode == "worker":
    worker(path, int(sys.argv[3]), [int(p) for p in sys.argv[4].split(",")])
  elif mode == "train":
    train(path)
  else:
    raise SystemExit(f"unknown mode {mode!r}")
