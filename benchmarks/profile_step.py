r"""Where a training step's time goes: TensorFlow profiler, summed by op type.

Runs a plain training step (forward, backward, SGD momentum) of selfsup's
ResNet50 v1 (k=4) with a 4-way head under `tf.profiler.experimental`, reads
the XPlane the profiler writes and prints the time of each op type on the
host CPU plane (summed over threads, so it can exceed the wall time when ops
run side by side). No TensorBoard plugin needed.

    python benchmarks/profile_step.py --size 224 --batch 16
    python benchmarks/profile_step.py --size 224 --batch 16 --mixed_precision
    python benchmarks/profile_step.py --nofused_bn      # Keras' batch norm
"""
import argparse
import collections
import glob
import os
import tempfile
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--width", type=float, default=4)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--mixed_precision", action="store_true")
  parser.add_argument("--nofused_bn", action="store_true")
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  from selfsup import models  # pylint: disable=g-import-not-at-top
  if args.mixed_precision:
    keras.config.set_dtype_policy("mixed_bfloat16")
  width = int(args.width) if args.width.is_integer() else args.width
  model = models.get("resnet50_v1", width=width, num_classes=4,
                     input_shape=(args.size, args.size, 3),
                     batch_norm="keras" if args.nofused_bn else "fused")
  optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
  images = tf.random.normal([args.batch, args.size, args.size, 3])
  labels = tf.zeros([args.batch], tf.int32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = tf.cast(model(images, training=True)["logits"], tf.float32)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  step().numpy()  # trace, oneDNN primitives
  step().numpy()
  logdir = tempfile.mkdtemp(prefix="selfsup_profile_")
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  for _ in range(args.steps):
    step().numpy()
  wall = time.perf_counter() - start
  tf.profiler.experimental.stop()
  path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                   recursive=True)[0]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  by_type = collections.Counter()
  for plane in space.planes:
    if plane.name != "/host:CPU":
      continue
    for line in plane.lines:
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" in name:  # "op_name:OpType" for TensorFlow ops
          by_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12
  total = sum(by_type.values())
  print(f"{args.steps} steps, {wall:.2f}s wall ({wall / args.steps:.3f} "
        f"s/step, {args.steps * args.batch / wall:.1f} images/s); op time "
        f"summed over threads {total:.2f}s")
  for name, seconds in by_type.most_common(args.top):
    print(f"  {seconds:8.3f}s  {100 * seconds / total:5.1f}%  {name}")


if __name__ == "__main__":
  main()
