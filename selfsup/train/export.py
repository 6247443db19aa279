"""Exports a trained backbone for evaluation and for other people's code.

`workdir/export/` holds `backbone.keras` (Keras 3, this package's layers
registered), `saved_model/` (a TF SavedModel whose `serve` signature maps
float32 images to the dict of endpoints; loadable with `tf.saved_model.load`
without selfsup) and `info.json` (task, backbone config, evaluation specs),
written last: an export without `info.json` is incomplete.
"""
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from selfsup.preprocess import specs as specs_lib
from selfsup.train import precision

INFO = "info.json"
KERAS_FILE = "backbone.keras"
SAVED_MODEL = "saved_model"


def evaluation_specs(task):
  """The downstream preprocessing matching how `task` saw its images."""
  if task.patch_based:
    return specs_lib.evaluation_specs(
        task.name, size=int(round(task.image_size * 255 / 64)),
        patch=task.image_size)
  return specs_lib.evaluation_specs(task.name, size=task.image_size)


def _float32_copy(model):
  """A copy outside any strategy, in float32, without synchronised BN."""
  config = dict(model.get_config(), sync_batch_norm=False)
  with precision.dtype_policy("float32"):
    clone = type(model).from_config(config)
  clone.set_weights(model.get_weights())
  return clone


def export_backbone(task, workdir, step):
  """Writes the export of `task.backbone`; returns the export directory."""
  out = os.path.join(workdir, "export")
  tf.io.gfile.makedirs(out)
  info_path = os.path.join(out, INFO)
  if tf.io.gfile.exists(info_path):
    tf.io.gfile.remove(info_path)  # incomplete until rewritten
  backbone = _float32_copy(task.backbone)
  with tempfile.TemporaryDirectory() as tmp:
    keras_path = os.path.join(tmp, KERAS_FILE)
    backbone.save(keras_path)
    saved = os.path.join(tmp, SAVED_MODEL)
    backbone.export(saved, format="tf_saved_model", verbose=False)
    _replace(keras_path, os.path.join(out, KERAS_FILE))
    _replace(saved, os.path.join(out, SAVED_MODEL))
  info = {
      "task": task.name,
      "backbone": task.backbone_name,
      "backbone_config": backbone.get_config(),
      "image_size": task.image_size,
      "patch_based": task.patch_based,
      "step": int(step),
      "endpoints": list(backbone.endpoint_names),
      "eval_specs": evaluation_specs(task),
      "pretext_eval_specs": task.specs["eval"],
  }
  with tf.io.gfile.GFile(info_path + ".tmp", "w") as f:
    json.dump(info, f, indent=2, default=str)
  tf.io.gfile.rename(info_path + ".tmp", info_path, overwrite=True)
  return out


def _replace(src, dst):
  """Moves a local file or folder to `dst` (local or remote), replacing it."""
  if tf.io.gfile.exists(dst):
    if tf.io.gfile.isdir(dst):
      tf.io.gfile.rmtree(dst)
    else:
      tf.io.gfile.remove(dst)
  if "://" not in dst:
    shutil.move(src, dst)
    return
  if os.path.isdir(src):
    for root, _, files in os.walk(src):
      rel = os.path.relpath(root, src)
      target = os.path.join(dst, rel) if rel != "." else dst
      tf.io.gfile.makedirs(target)
      for name in files:
        tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name))
  else:
    tf.io.gfile.copy(src, dst)


def load_info(export_dir):
  """Reads `info.json`; a missing one means no complete export."""
  path = os.path.join(export_dir, INFO)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"No complete exported backbone in {export_dir}: {INFO} is missing. "
        "Run bin/pretrain to the end (it exports when training finishes).")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def load_backbone(export_dir):
  """The exported backbone as a Keras model (needs selfsup imported)."""
  load_info(export_dir)
  return keras.saving.load_model(os.path.join(export_dir, KERAS_FILE))
