"""One global batch on 1 replica and on 2 (MirroredStrategy over 2 logical
CPU devices): the loss, gradients and moving statistics that batch-norm
groups and Exemplar's mining groups make independent of the device count.

Logical devices must be set before TensorFlow starts, so tests/
test_distributed.py runs this file in a fresh process and reads its .npz:

    python tests/group_runs.py OUT_DIR

For each case and strategy it writes OUT_DIR/<case>-<default|mirrored>.npz
holding `loss`, `grad/<variable>` (the gradient of the global mean loss)
and `var/<variable>` (every variable after the forward pass: moving
statistics included), and `spread/<variable>` (the largest difference of a
variable between the replicas). Tiny: ResNet18 v2 / RevNet50 at width 0.25,
16-pixel images, 4-pixel patches.
"""
# pylint: disable=import-outside-toplevel
import os
import sys

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

IMAGE = 16
PATCH_KWARGS = dict(image_size=4, embedding_size=16, hidden_size=16,
                    dropout=0.0, spec_kwargs=dict(crop=15))
# name: (task, task kwargs, backbone kwargs, images in the global batch).
# Each replica of the mirrored run holds half the images, i.e. exactly one
# batch-norm / mining group; the default run holds two of them.
CASES = {
    # 2 images x 4 rotations per batch-norm group.
    "rotation": ("rotation", dict(image_size=IMAGE), dict(bn_group_size=8), 4),
    "rotation_revnet": ("rotation", dict(image_size=IMAGE, backbone="revnet50"),
                        dict(bn_group_size=8), 4),
    # Per replica (no groups): the two runs differ; shows the test can fail.
    "rotation_per_replica": ("rotation", dict(image_size=IMAGE), {}, 4),
    # Mining among 2 images x 2 copies; batch norm over the same 4 copies.
    "exemplar": ("exemplar", dict(image_size=IMAGE, copies=2,
                                  embedding_size=16, mining_group=2),
                 dict(bn_group_size=4), 4),
    # 1 image (9 patches) per backbone group, its 16 examples per head group.
    "jigsaw": ("jigsaw", PATCH_KWARGS, dict(bn_group_size=9), 2),
}


def _batch(task, images):
  """A random batch of `images` shaped like the task's training input."""
  dummy = task.dummy_batch(images)
  rng = np.random.default_rng(0)
  batch = {}
  for key, value in dummy.items():
    if value.dtype.is_floating:
      batch[key] = tf.constant(rng.normal(size=value.shape), tf.float32)
    elif task.name == "jigsaw":
      batch[key] = tf.constant(rng.integers(0, 100, value.shape), value.dtype)
    else:
      batch[key] = value
  return batch


def _split(strategy, batch):
  """The batch as per-replica halves (the whole of it on one replica)."""
  n = strategy.num_replicas_in_sync
  parts = [{k: tf.split(v, n)[i] for k, v in batch.items()} for i in range(n)]
  return strategy.experimental_distribute_values_from_function(
      lambda context: parts[context.replica_id_in_sync_group])


def run_case(name, strategy):
  """{"loss", "grad/..", "var/..", "spread/.."} of one forward-backward."""
  import keras
  import selfsup.tasks
  task_name, task_kwargs, backbone_kwargs, images = CASES[name]
  keras.utils.set_random_seed(0)
  kwargs = dict(dict(backbone="resnet18_v2", width=0.25), **task_kwargs)
  with strategy.scope():
    task = selfsup.tasks.get(task_name, backbone_kwargs=backbone_kwargs,
                             **kwargs).build()
  variables = task.trainable_variables
  replicas = strategy.num_replicas_in_sync

  @tf.function
  def replica_step(batch):
    with tf.GradientTape() as tape:
      loss, _ = task.step(batch, training=True)
      scaled = loss / replicas
    return loss, tape.gradient(scaled, variables)

  loss, grads = strategy.run(replica_step, args=(_split(strategy,
                                                        _batch(task, images)),))
  out = {"loss": float(strategy.reduce("MEAN", loss, axis=None))}
  for var, grad in zip(variables, grads):
    out[f"grad/{var.path}"] = strategy.reduce("SUM", grad, axis=None).numpy()
  for module in task.modules.values():
    for var in module.variables:
      values = [np.asarray(v.numpy()) for v in
                strategy.experimental_local_results(getattr(var, "value",
                                                            var))]
      out[f"var/{var.path}"] = values[0]
      out[f"spread/{var.path}"] = max(float(np.max(np.abs(v - values[0])))
                                      for v in values)
  return out


def main(out_dir):
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": True})  # tiny graphs: rewrites cost time
  strategies = {
      "default": tf.distribute.get_strategy(),
      "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
  }
  for name in CASES:
    for kind, strategy in strategies.items():
      np.savez(os.path.join(out_dir, f"{name}-{kind}.npz"),
               **run_case(name, strategy))


if __name__ == "__main__":
  main(sys.argv[1])
