r"""Training-step throughput: selfsup vs keras.applications+fit vs torchvision.

One implementation and one shape per process (so that thread pools, dtype
policies and compile caches do not leak between rows):

    python benchmarks/train_step.py --impl=selfsup --size=64 --batch=64
    python benchmarks/train_step.py --impl=keras --size=224 --batch=16
    python benchmarks/train_step.py --impl=torch --size=64 --batch=64
    python benchmarks/train_step.py --impl=selfsup --mixed_precision ...
    python benchmarks/train_step.py --task=jigsaw --batch=2   # consumption

The work is the same for all three: a ResNet50 v1 (selfsup's `resnet50_v1`,
width k=4, which has the channels of keras' and torchvision's ResNet50; selfsup and
torchvision put the stride in the 3x3 convolution ("v1.5"), keras.applications
in the first 1x1, which is a little less work: each row reports its own
forward FLOP count) with a 4-way classifier, trained with SGD momentum 0.9 on
`--batch` images of `--size`^2 held in memory (no input pipeline cost).

Images are counted as the backbone's inputs. The selfsup row runs the
Rotation task on batch/4 source images, each rotated 4 ways, so that the
backbone sees exactly `--batch` images per step, like the peers.

The selfsup row runs the Trainer's own compiled loop (`Trainer._train_loop`:
task step, weight decay, SGD momentum, `steps_per_loop` steps in one
tf.function call) on a repeated in-memory batch. Warm-up steps (tracing,
oneDNN primitive creation) run before the clock starts.
"""
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

_IMPL = flags.DEFINE_enum("impl", "selfsup", ["selfsup", "keras", "torch"],
                          "Which implementation to time.")
_SIZE = flags.DEFINE_integer("size", 64, "Image side.")
_BATCH = flags.DEFINE_integer("batch", 64, "Backbone images per step.")
_WIDTH = flags.DEFINE_float("width", 4, "selfsup widening factor k.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_MIXED = flags.DEFINE_bool("mixed_precision", False,
                           "selfsup/keras: mixed_bfloat16; torch: bf16 "
                           "autocast.")
_JIT = flags.DEFINE_bool("jit_compile", False, "selfsup: XLA-compile the step.")
_STEPS_PER_LOOP = flags.DEFINE_integer(
    "steps_per_loop", 0, "selfsup: steps per tf.function call (0: all timed "
    "steps in one call).")
_FUSED = flags.DEFINE_bool("fused_bn", True, "selfsup: build the backbone "
                           "with selfsup's fused batch norm (the library's "
                           "default); --nofused_bn: Keras' own layer.")
_TASK = flags.DEFINE_string(
    "task", "", "selfsup: time this task's step (rotation, exemplar, jigsaw, "
    "relative_patch_location, supervised) at the paper's sizes on one batch "
    "of --batch source images made by its real training pipeline from "
    "synthetic JPEGs, repeated from memory; reports source images/s, the "
    "rate at which the step consumes its input.")
_JSON = flags.DEFINE_string("json", None, "Write the result here.")
_LR_FLAG = flags.DEFINE_float("lr", 0.01, "SGD learning rate (all three).")


def synthetic_batch(size, batch, seed=0):
  """`batch` images [batch, size, size, 3] float32 in [-1, 1] (smooth fields
  plus grain, photo-like) and 4-way labels: batch/4 source images each
  rotated by 0, 90, 180, 270 degrees, label = the rotation (a learnable task,
  so that the loss can fall)."""
  rng = np.random.default_rng(seed)
  sources = max(batch // 4, 1)
  coarse = rng.uniform(-1, 1, (sources, 4, 4, 3)).astype(np.float32)
  reps = -(-size // 4)
  smooth = np.kron(coarse, np.ones((1, reps, reps, 1), np.float32))
  smooth = smooth[:, :size, :size]
  # An asymmetric gradient makes the rotation visible.
  ramp = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None, None]
  images = np.clip(0.5 * smooth + 0.5 * ramp + rng.normal(
      0, 0.05, smooth.shape).astype(np.float32), -1, 1)
  rotated = np.stack([np.rot90(images, k, axes=(1, 2)) for k in range(4)], 1)
  labels = np.tile(np.arange(4, dtype=np.int32), (sources, 1))
  return rotated, labels


def conv_dense_flops(model):
  """Forward multiply-add FLOPs (x2) of a static-shape Keras model's Conv2D
  and Dense layers (>99% of a ResNet's FLOPs)."""
  import keras
  total = 0
  for layer in model._flatten_layers(include_self=False, recursive=True):
    if isinstance(layer, keras.layers.Conv2D):
      out = layer.output.shape
      kh, kw, cin, cout = layer.kernel.shape
      total += 2 * out[1] * out[2] * cout * kh * kw * cin
    elif isinstance(layer, keras.layers.Dense):
      cin, cout = layer.kernel.shape
      total += 2 * cin * cout
  return total


def _batch_norm():
  """The backbones' `batch_norm` constructor argument for --[no]fused_bn."""
  return "fused" if _FUSED.value else "keras"


def _result(impl, images_per_s, step_s, forward_flops, losses, extra=None):
  r = {"impl": impl, "size": _SIZE.value, "batch": _BATCH.value,
       "width": _WIDTH.value, "mixed_precision": _MIXED.value,
       "warmup": _WARMUP.value, "steps": _STEPS.value,
       "images_per_s": images_per_s, "step_s": step_s,
       "forward_gflops_per_image": forward_flops / 1e9,
       "train_flops_per_s": 3 * forward_flops * images_per_s,
       "loss_first": losses[0], "loss_last": losses[-1],
       "cpus": os.cpu_count()}
  r.update(extra or {})
  return r


def run_selfsup(images, labels):
  import tensorflow as tf
  from selfsup import models
  from selfsup.tasks.image_tasks import Rotation
  from selfsup.train import trainer as trainer_lib

  size, batch = _SIZE.value, _BATCH.value
  sources = batch // 4

  class _Synthetic:
    """A stand-in source: only its size is read by the Trainer."""
    name = "synthetic"
    splits = ("train",)

    def num_examples(self, split):
      del split
      return 1_000_000

  feed = {"image": tf.constant(images), "label": tf.constant(labels)}

  class _SyntheticTrainer(trainer_lib.Trainer):
    def _make_input(self):
      ds = tf.data.Dataset.from_tensors(feed).repeat()
      return iter(ds), next, True

  width = _WIDTH.value
  width = int(width) if float(width).is_integer() else width
  task = Rotation(backbone="resnet50_v1", width=width, image_size=size,
                  backbone_kwargs={"batch_norm": _batch_norm()})
  config = trainer_lib.TrainConfig(
      batch_size=sources, train_steps=10_000, base_lr=_LR_FLAG.value * 256 / sources,
      warmup_epochs=0, decay_epochs=(), momentum=0.9,
      mixed_precision=_MIXED.value, jit_compile=_JIT.value, seed=0)
  workdir = tempfile.mkdtemp(prefix="selfsup_train_step_")
  trainer = _SyntheticTrainer(task, _Synthetic(), workdir, config)
  losses, seconds = _time_loop(trainer)
  per_call = _STEPS_PER_LOOP.value or _STEPS.value
  counter = models.get("resnet50_v1", width=width, num_classes=4,
                       input_shape=(size, size, 3))
  flops = conv_dense_flops(counter)
  traces = trainer._train_loop.experimental_get_tracing_count()  # pylint: disable=protected-access
  return _result("selfsup", _STEPS.value * batch / seconds,
                 seconds / _STEPS.value, flops, losses,
                 {"traces": traces, "jit_compile": _JIT.value,
                  "optimizer_steps": trainer.step, "fused_bn": _FUSED.value,
                  "steps_per_loop": per_call,
                  "counting": f"{sources} source images x 4 rotations"})


def run_task():
  """One task's training step at the paper's sizes, fed one real batch."""
  import shutil
  import tensorflow as tf
  import input_pipeline  # benchmarks/input_pipeline.py: photo-like JPEGs
  from selfsup import data
  from selfsup import tasks
  from selfsup.train import trainer as trainer_lib
  root = tempfile.mkdtemp(prefix="selfsup_task_step_")
  try:
    input_pipeline.write_jpegs(root, max(2 * _BATCH.value, 8))
    source = data.get("image_folder", root=root)
    width = _WIDTH.value
    width = int(width) if float(width).is_integer() else width
    kwargs = {"num_classes": 10} if _TASK.value == "supervised" else {}
    task = tasks.get(_TASK.value, backbone="resnet50_v1", width=width,
                     backbone_kwargs={"batch_norm": _batch_norm()}, **kwargs)

    class _OneBatchTrainer(trainer_lib.Trainer):
      def _make_input(self):
        ds = self._train_input(tf.distribute.InputContext())
        ds = ds.take(1).cache().repeat()
        return iter(ds), next, True

    config = trainer_lib.TrainConfig(
        batch_size=_BATCH.value, train_steps=10_000,
        base_lr=_LR_FLAG.value * 256 / _BATCH.value, warmup_epochs=0,
        decay_epochs=(), momentum=0.9, mixed_precision=_MIXED.value,
        jit_compile=_JIT.value, seed=0, shuffle_buffer=0)
    trainer = _OneBatchTrainer(task, source, os.path.join(root, "work"),
                               config)
    losses, seconds = _time_loop(trainer)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  rate = _STEPS.value * _BATCH.value / seconds
  return {"impl": "selfsup", "task": _TASK.value, "batch": _BATCH.value,
          "width": _WIDTH.value, "mixed_precision": _MIXED.value,
          "fused_bn": _FUSED.value, "image_size": task.image_size,
          "source_images_per_s": rate, "step_s": seconds / _STEPS.value,
          "loss_first": losses[0], "loss_last": losses[-1],
          "warmup": _WARMUP.value, "steps": _STEPS.value,
          "cpus": os.cpu_count()}


def _time_loop(trainer):
  """Warm-up steps in one call, then the timed steps in calls of
  --steps_per_loop; returns (mean loss of each call, timed seconds)."""
  import tensorflow as tf
  loop = trainer._train_loop  # pylint: disable=protected-access
  it = trainer._iterator  # pylint: disable=protected-access
  per_call = _STEPS_PER_LOOP.value or _STEPS.value
  losses = [float(loop(it, tf.constant(_WARMUP.value))["loss"])]
  start = time.perf_counter()
  done = 0
  while done < _STEPS.value:
    n = min(per_call, _STEPS.value - done)
    losses.append(float(loop(it, tf.constant(n))["loss"]))
    done += n
  return losses, time.perf_counter() - start


def run_keras(images, labels):
  import keras
  import tensorflow as tf
  if _MIXED.value:
    keras.config.set_dtype_policy("mixed_bfloat16")
  size, batch = _SIZE.value, _BATCH.value
  model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3),
                                      classes=4)
  model.compile(optimizer=keras.optimizers.SGD(_LR_FLAG.value, momentum=0.9),
                loss="sparse_categorical_crossentropy")
  ds = tf.data.Dataset.from_tensors(
      (tf.constant(images.reshape(batch, size, size, 3)),
       tf.constant(labels.reshape(-1)))).repeat()
  losses = []

  class _Loss(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      del batch
      losses.append(float(logs["loss"]))

  model.fit(ds, steps_per_epoch=_WARMUP.value, epochs=1, verbose=0,
            callbacks=[_Loss()])
  start = time.perf_counter()
  model.fit(ds, steps_per_epoch=_STEPS.value, epochs=1, verbose=0,
            callbacks=[_Loss()])
  seconds = time.perf_counter() - start
  # keras' running mean loss: the first and last are what one reads in fit.
  return _result("keras", _STEPS.value * batch / seconds,
                 seconds / _STEPS.value, conv_dense_flops(model),
                 [losses[0], losses[-1]],
                 {"counting": f"{batch} images"})


def run_torch(images, labels):
  import torch
  import torchvision
  torch.manual_seed(0)
  threads = int(os.environ.get("TORCH_THREADS", os.cpu_count()))
  torch.set_num_threads(threads)
  size, batch = _SIZE.value, _BATCH.value
  model = torchvision.models.resnet50(num_classes=4)
  model = model.to(memory_format=torch.channels_last).train()
  opt = torch.optim.SGD(model.parameters(), lr=_LR_FLAG.value, momentum=0.9)
  x = torch.from_numpy(np.ascontiguousarray(
      images.reshape(batch, size, size, 3).transpose(0, 3, 1, 2))).contiguous(
          memory_format=torch.channels_last)
  y = torch.from_numpy(labels.reshape(-1).astype(np.int64))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_MIXED.value):
      loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return float(loss)

  losses = [step() for _ in range(_WARMUP.value)]
  start = time.perf_counter()
  losses += [step() for _ in range(_STEPS.value)]
  seconds = time.perf_counter() - start
  # torchvision's ResNet50 is v1.5 (stride in the 3x3), like selfsup's v1.
  flops = _torch_flops(model, size)
  return _result("torch", _STEPS.value * batch / seconds,
                 seconds / _STEPS.value, flops, [losses[0], losses[-1]],
                 {"counting": f"{batch} images", "torch": torch.__version__,
                  "threads": threads})


def _torch_flops(model, size):
  import torch
  total = [0]

  def hook(m, inp, out):
    if isinstance(m, torch.nn.Conv2d):
      kh, kw = m.kernel_size
      total[0] += (2 * out.shape[2] * out.shape[3] * m.out_channels * kh * kw
                   * m.in_channels // m.groups)
    elif isinstance(m, torch.nn.Linear):
      total[0] += 2 * m.in_features * m.out_features
  handles = [m.register_forward_hook(hook) for m in model.modules()]
  with torch.no_grad():
    model.eval()(torch.zeros(1, 3, size, size))
  for h in handles:
    h.remove()
  return total[0]


def main(argv):
  del argv
  if _TASK.value:
    if _IMPL.value != "selfsup":
      raise app.UsageError("--task times selfsup's own step: use it with "
                           "--impl=selfsup.")
    result = run_task()
  else:
    images, labels = synthetic_batch(_SIZE.value, _BATCH.value)
    run = {"selfsup": run_selfsup, "keras": run_keras, "torch": run_torch}
    result = run[_IMPL.value](images, labels)
  print(json.dumps(result), flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
