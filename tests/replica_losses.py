"""Losses of the global batch on 2 replicas against 1 replica, in a fresh
process (logical devices must be set before TensorFlow starts):

    python tests/replica_losses.py OUT.json

A linear map of 8 examples: once on one device with all 8, once under a
MirroredStrategy over 2 logical CPUs with 4 per replica, each replica's loss
divided by 2 and the gradients summed, as the trainer does. Writes the losses
and gradients of both to OUT.json.
"""
import json
import os
import sys

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH, DIM, OUT = 8, 5, 3


def _losses():
  from selfsup.tasks import losses
  return {
      "nt_xent": lambda a, b: losses.nt_xent_loss(a, b, 0.2),
      "barlow_twins": lambda a, b: losses.barlow_twins_loss(a, b, 0.3),
  }


def _loss_and_grad(name, w, x1, x2):
  from selfsup.tasks.distributed import gather_global, num_replicas
  with tf.GradientTape() as tape:
    z1, z2 = tf.matmul(x1, w), tf.matmul(x2, w)
    loss = _losses()[name](gather_global(z1), gather_global(z2))
    scaled = loss / num_replicas()
  return loss, tape.gradient(scaled, w)


def main(out):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  rng = np.random.default_rng(0)
  x1 = rng.normal(size=(BATCH, DIM)).astype(np.float32)
  x2 = (x1 + 0.3 * rng.normal(size=(BATCH, DIM))).astype(np.float32)
  w0 = rng.normal(size=(DIM, OUT)).astype(np.float32)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    w = tf.Variable(w0)
  half = BATCH // 2
  results = {}
  for name in _losses():
    loss, grad = _loss_and_grad(name, tf.Variable(w0), x1, x2)

    @tf.function
    def mirrored(name=name):
      def step():
        ctx = tf.distribute.get_replica_context()
        i = ctx.replica_id_in_sync_group
        part = lambda x: tf.constant(x)[i * half:(i + 1) * half]  # noqa
        return _loss_and_grad(name, w, part(x1), part(x2))
      losses, grads = strategy.run(step)
      return (strategy.reduce("MEAN", losses, axis=None),
              strategy.reduce("SUM", grads, axis=None))

    m_loss, m_grad = mirrored()
    results[name] = {"loss": [float(loss), float(m_loss)],
                     "grad": [grad.numpy().tolist(), m_grad.numpy().tolist()],
                     "replicas": strategy.num_replicas_in_sync}
  results["lars"] = _lars_step(strategy, w0, rng)
  with open(out, "w") as f:
    json.dump(results, f)


def _lars_step(strategy, w0, rng):
  """One LARS update from two replicas' gradients (summed by the optimizer)
  against one device's update from their sum."""
  from selfsup.train import LARS
  grads = [rng.normal(size=w0.shape).astype(np.float32) for _ in range(2)]
  kwargs = dict(momentum=0.9, weight_decay=0.01, eeta=0.002)
  single = tf.Variable(w0)
  LARS(0.5, **kwargs).apply_gradients([(grads[0] + grads[1], single)])
  with strategy.scope():
    import keras  # pylint: disable=g-import-not-at-top
    mirrored = keras.Variable(w0)
    opt = LARS(0.5, **kwargs)
    opt.build([mirrored])

  stacked = tf.constant(np.stack(grads))

  @tf.function
  def apply():
    def step():
      i = tf.distribute.get_replica_context().replica_id_in_sync_group
      opt.apply_gradients([(tf.gather(stacked, i), mirrored)])
    strategy.run(step)

  apply()
  values = strategy.experimental_local_results(mirrored.value)
  return {"single": single.numpy().tolist(),
          "replicas": [v.numpy().tolist() for v in values]}


if __name__ == "__main__":
  main(sys.argv[1])
