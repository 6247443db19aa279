r"""What batch-norm groups (`bn_group_size`) cost in a training step.

    python benchmarks/ghost_batch_norm.py [--steps=15] [--group=16]

One process, three ResNet50 v2 backbones (width 1, 64x64 images, batch 64,
10-way logits) trained by plain SGD on one in-memory batch: the fused batch
norm (default, statistics over the whole batch), Keras' batch norm, and
`GroupedBatchNormalization` with groups of `--group` examples. The rows run
interleaved, so a machine whose load changes slows them alike; each reports
the median step time after one traced warm-up step.
"""
import argparse
import time

import numpy as np
import tensorflow as tf

import selfsup.models


def _step_fn(images, labels, **kwargs):
  model = selfsup.models.get("resnet50_v2", width=1, num_classes=10, **kwargs)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = model(images, training=True)["logits"]
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads):
      var.assign_sub(0.01 * grad)
    return loss

  step()  # traces
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--group", type=int, default=16)
  args = parser.parse_args()
  images = tf.random.normal([64, 64, 64, 3], seed=0)
  labels = tf.random.uniform([64], 0, 10, tf.int32, seed=0)
  rows = {"fused": _step_fn(images, labels),
          "keras": _step_fn(images, labels, batch_norm="keras"),
          f"group{args.group}": _step_fn(images, labels,
                                         bn_group_size=args.group)}
  times = {name: [] for name in rows}
  for _ in range(args.steps):
    for name, step in rows.items():
      tic = time.perf_counter()
      step().numpy()
      times[name].append(time.perf_counter() - tic)
  base = np.median(times["fused"])
  for name, values in times.items():
    median = float(np.median(values))
    print(f"{name:>8}: {median * 1e3:7.1f} ms/step ({median / base:.2f}x fused)")


if __name__ == "__main__":
  main()
