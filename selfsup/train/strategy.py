"""Picks the tf.distribute strategy for the hardware at hand."""
import json
import os

import tensorflow as tf

from selfsup.core.checks import ConfigError

KINDS = ("auto", "tpu", "multi_worker", "mirrored", "default")


def make_strategy(kind="auto", tpu=None):
  """Returns a strategy.

  Args:
    kind: "auto" picks TPUStrategy when `tpu` is given, MultiWorkerMirrored
      when TF_CONFIG names more than one worker, Mirrored when there are
      several GPUs (or several logical CPU devices were configured), and the
      default strategy otherwise. Or force one of KINDS.
    tpu: TPU name or address ("local" on a TPU VM) for TPUStrategy.
  """
  if kind not in KINDS:
    raise ConfigError(f"strategy kind={kind!r} is not valid: expected one of "
                      f"{KINDS}.")
  if kind == "auto":
    kind = _detect(tpu)
  if kind == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=tpu or "local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if kind == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  return tf.distribute.get_strategy()


def _detect(tpu):
  if tpu:
    return "tpu"
  config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  workers = config.get("cluster", {}).get("worker", [])
  if len(workers) > 1:
    return "multi_worker"
  if len(tf.config.list_logical_devices("GPU")) > 1:
    return "mirrored"
  if len(tf.config.list_logical_devices("CPU")) > 1:
    return "mirrored"
  return "default"
