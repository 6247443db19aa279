"""The export format: a trained backbone for evaluation and other code.

Written by training (`selfsup.train`) and by `bin/import_tf1`, read by
evaluation (`selfsup.evaluation`) and `selfsup.Representation`: it sits
below all of them and imports none of them.

`workdir/export/` holds `backbone.keras` (Keras 3, this package's layers
registered; the backbone without the pretext head: its endpoints end at
`pre_logits`), `saved_model/` (a TF SavedModel, loadable with
`tf.saved_model.load` without selfsup: `serving_default` maps uint8 images
of any size to the representation, `serve` the backbone's float32 input to
the dict of endpoints), `head.keras` when the pretraining backbone had a `logits`
layer (that layer alone, pre_logits -> logits: Rotation's 4-way classifier,
Exemplar's and the patch tasks' embedding) and `info.json` (task, backbone
config, `input`: the images the backbone expects, evaluation specs,
`weights_sha256`: a hash of every weight; `files`: the size and sha256 of
every file of the export, so that a truncated or damaged backbone.keras or
SavedModel is found by `verify`), written last: an export without
`info.json` is incomplete. Both are written in a scratch folder inside the
workdir (`tmp/`, never the system's temporary folder) and moved into place;
a killed export leaves its scratch folder, removed at the next start.
"""
import hashlib
import json
import os
import shutil
import zipfile

import keras
import numpy as np
import tensorflow as tf

from selfsup.core import files, lock, precision
from selfsup.core.errors import WorkdirError

INFO = "info.json"
KERAS_FILE = "backbone.keras"
HEAD_FILE = "head.keras"
SAVED_MODEL = "saved_model"
# Scratch folders of a workdir (removed by the next run that starts there).
TMP = "tmp"


def _float32_copy(model, head=True):
  """A copy outside any strategy, in float32, without synchronised BN (and
  without the `logits` layer unless `head`), holding `model`'s weights."""
  config = dict(model.get_config(), sync_batch_norm=False, dtype="float32")
  if not head:
    config["num_classes"] = None
  with precision.dtype_policy("float32"):
    clone = type(model).from_config(config)
  for layer in clone.layers:
    if layer.weights:
      layer.set_weights(model.get_layer(layer.name).get_weights())
  return clone


def headless(backbone):
  """`backbone` without its `logits` layer: a float32 copy ending at
  `pre_logits`, or `backbone` itself when it has no such layer."""
  if "logits" not in backbone.output:
    return backbone
  return _float32_copy(backbone, head=False)


def head_model(backbone):
  """The `logits` layer of `backbone` as its own model (pre_logits -> logits),
  or None when it has none."""
  if "logits" not in backbone.output:
    return None
  layer = backbone.get_layer("logits")
  with precision.dtype_policy("float32"):
    dense = keras.layers.Dense.from_config(layer.get_config())
    head = keras.Sequential([keras.Input((layer.kernel.shape[0],)), dense],
                            name="head")
  dense.set_weights(layer.get_weights())
  return head


def input_info(eval_spec, image_size, patch_based):
  """What the exported backbone takes, for info.json's `input`."""
  if patch_based:
    return {
        "layout": "NHWC", "dtype": "float32",
        "shape": [None, image_size, image_size, 3],
        "values": "each patch standardised (zero mean, unit variance over "
                  "its pixels and channels)",
        "patches": "the central square of the image resized as the spec "
                   "says, cut into a 3x3 grid of patches; the backbone sees "
                   "each patch, the representation is the average of the 9 "
                   "patches' (pooled) endpoints",
        "from_images": eval_spec,
    }
  return {
      "layout": "NHWC", "dtype": "float32",
      "shape": [None, image_size, image_size, 3],
      "values": "[-1, 1] (value_range(-1, 1) of uint8 [0, 255] RGB)",
      "from_images": eval_spec,
  }


def weights_sha256(model):
  """A hash of every weight of `model`: names, dtypes, shapes and values."""
  digest = hashlib.sha256()
  for weight in model.weights:
    value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
    digest.update(f"{weight.path}|{value.dtype.str}|{value.shape}|".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def scratch_dir(workdir, prefix):
  """A new, empty scratch folder inside `workdir/tmp`, named
  `<prefix>-<host>-<pid>-<random>` so that a cleanup can tell whether the
  process that owns it still runs (`lock.owned_by_live_process`)."""
  path = os.path.join(workdir, TMP, f"{prefix}-{lock.owner_tag()}")
  tf.io.gfile.makedirs(path)
  return path


def write_export(backbone, workdir, *, task, backbone_name, image_size,
                 patch_based, step, eval_specs, pretext_eval_specs=None,
                 extra=None):
  """Writes `backbone` as `workdir/export` for `task`; returns the folder.

  `eval_specs` are the downstream preprocessing specs of the task
  (`Task.evaluation_specs`), `pretext_eval_specs` its pretext "eval" spec.
  `extra` adds entries to info.json (e.g. where an imported model came from).
  A `logits` layer of `backbone` (the pretext head) is left out of
  backbone.keras and the SavedModel and written alone as head.keras.
  """
  out = os.path.join(workdir, "export")
  tf.io.gfile.makedirs(out)
  info_path = os.path.join(out, INFO)
  if tf.io.gfile.exists(info_path):
    tf.io.gfile.remove(info_path)  # incomplete until rewritten
  head = head_model(backbone)
  backbone = _float32_copy(backbone, head=False)
  tmp = scratch_dir(workdir, "export")
  try:
    keras_path = os.path.join(tmp, KERAS_FILE)
    backbone.save(keras_path)
    saved = os.path.join(tmp, SAVED_MODEL)
    write_saved_model(backbone, eval_specs["eval"], saved)
    if head is not None:
      head.save(os.path.join(tmp, HEAD_FILE))
    _replace(keras_path, os.path.join(out, KERAS_FILE))
    _replace(saved, os.path.join(out, SAVED_MODEL))
    if head is not None:
      _replace(os.path.join(tmp, HEAD_FILE), os.path.join(out, HEAD_FILE))
    elif tf.io.gfile.exists(os.path.join(out, HEAD_FILE)):
      tf.io.gfile.remove(os.path.join(out, HEAD_FILE))
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.rmtree(tmp)
  info = {
      "task": task,
      "backbone": backbone_name,
      "backbone_config": backbone.get_config(),
      "image_size": image_size,
      "patch_based": patch_based,
      "step": int(step),
      "endpoints": list(backbone.endpoint_names),
      "input": input_info(eval_specs["eval"], image_size, patch_based),
      "head": ({"file": HEAD_FILE, "input": "pre_logits",
                "units": int(head.layers[-1].units)} if head is not None
               else None),
      "eval_specs": eval_specs,
      "pretext_eval_specs": pretext_eval_specs,
      "weights_sha256": weights_sha256(backbone),
      "files": manifest(out),
      **(extra or {}),
  }
  files.atomic_write(info_path, json.dumps(info, indent=2, default=str))
  return out


def write_saved_model(backbone, eval_spec, path):
  """The export's SavedModel: `serving_default` takes uint8 images [B, H, W,
  C] of any size (C = 1, 3 or 4) and returns {"representation": [B, D]},
  the pre-logits as `selfsup.Representation` gives them (the evaluation
  preprocessing `eval_spec` inside; patch models average their 9 patches),
  so that a server can be fed images; `serve` maps the backbone's own input
  (float32, preprocessed) to the dict of endpoints, as before."""
  from selfsup import preprocessor as preprocessor_lib  # pylint: disable=g-import-not-at-top
  preprocess = preprocessor_lib.ImagePreprocessor(eval_spec, check_range=False)
  archive = keras.export.ExportArchive()
  archive.track(backbone)
  archive.add_endpoint(
      "serve", lambda image: backbone(image, training=False),
      input_signature=[tf.TensorSpec(backbone.input.shape, tf.float32,
                                     name="image")])

  def representation(images):
    x = preprocess(images)
    patches = x.shape[1] if x.shape.rank == 5 else None
    if patches:
      x = tf.reshape(x, [-1] + x.shape[2:].as_list())
    value = tf.cast(backbone(x, training=False)["pre_logits"], tf.float32)
    if patches:
      value = tf.reduce_mean(
          tf.reshape(value, [-1, patches, value.shape[-1]]), axis=1)
    return {"representation": value}

  archive.add_endpoint(
      "serving_default", representation,
      input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8,
                                     name="images")])
  archive.write_out(path, verbose=False)


def _replace(src, dst):
  """Moves a file or folder to `dst`, replacing it. Local moves within the
  workdir are renames; remote ones copy file by file."""
  if tf.io.gfile.exists(dst):
    if tf.io.gfile.isdir(dst):
      tf.io.gfile.rmtree(dst)
    else:
      tf.io.gfile.remove(dst)
  if "://" not in src and "://" not in dst:
    shutil.move(src, dst)
    return
  if tf.io.gfile.isdir(src):
    for root, _, names in tf.io.gfile.walk(src):
      rel = os.path.relpath(root, src)
      target = os.path.join(dst, rel) if rel != "." else dst
      tf.io.gfile.makedirs(target)
      for name in names:
        tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name),
                         overwrite=True)
  else:
    tf.io.gfile.copy(src, dst, overwrite=True)


def _export_files(export_dir):
  """Paths, relative to `export_dir`, of the model files (not info.json)."""
  found = []
  for name in (KERAS_FILE, HEAD_FILE):
    if tf.io.gfile.exists(os.path.join(export_dir, name)):
      found.append(name)
  saved = os.path.join(export_dir, SAVED_MODEL)
  if tf.io.gfile.isdir(saved):
    for root, _, names in tf.io.gfile.walk(saved):
      rel = os.path.relpath(root, export_dir)
      found += [os.path.join(rel, n) for n in names]
  return sorted(found)


def _file_sha256(path):
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
      digest.update(chunk)
  return digest.hexdigest()


def manifest(export_dir):
  """{relative path: {"bytes", "sha256"}} of the export's model files."""
  return {rel: {"bytes": tf.io.gfile.stat(os.path.join(export_dir,
                                                      rel)).length,
                "sha256": _file_sha256(os.path.join(export_dir, rel))}
          for rel in _export_files(export_dir)}


def verify(export_dir, info=None, hashes=False):
  """Checks the export's files against info.json's `files`: each present,
  of its size (and, with `hashes`, its sha256). Raises WorkdirError naming
  the first file that differs. Exports written before `files` existed are
  not checked."""
  info = info if info is not None else load_info(export_dir)
  recorded = info.get("files")
  if not isinstance(recorded, dict):
    return
  for rel, want in sorted(recorded.items()):
    path = os.path.join(export_dir, checked_relative(rel, export_dir))
    if not tf.io.gfile.exists(path):
      raise WorkdirError(f"The export in {export_dir} is damaged: {path} is "
                         "missing. Run bin/pretrain again (it re-exports).")
    size = tf.io.gfile.stat(path).length
    if size != want.get("bytes") or (hashes and _file_sha256(path) !=
                                     want.get("sha256")):
      raise WorkdirError(
          f"The export in {export_dir} is damaged: {path} "
          f"({size} bytes) is not the file written ({want.get('bytes')} "
          "bytes, sha256 recorded in info.json). Run bin/pretrain again (it "
          "re-exports).")


def checked_relative(rel, root):
  """`rel`, a path read from a record of `root`, if it stays inside `root`
  (no absolute path, no `..` out of it); else WorkdirError."""
  if (not isinstance(rel, str) or not rel or os.path.isabs(rel)
      or "://" in rel):
    raise WorkdirError(f"A record in {root} names the path {rel!r}: expected "
                       "a relative path inside it.")
  norm = os.path.normpath(rel)
  if norm == ".." or norm.startswith(".." + os.sep):
    raise WorkdirError(f"A record in {root} names the path {rel!r}, which "
                       "leads outside it: refused.")
  return norm


def load_info(export_dir):
  """Reads `info.json`; a missing one means no complete export."""
  path = os.path.join(export_dir, INFO)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"No complete exported backbone in {export_dir}: {INFO} is missing. "
        "Run bin/pretrain to the end (it exports when training finishes).")
  return files.read_record(
      path, dict, damaged="the export is damaged; run bin/pretrain again.",
      wrong="is not an export record (a JSON object).")


def load_backbone(export_dir):
  """The exported backbone as a Keras model (Keras' safe mode: no code
  stored in the file is run). A file that is not the one recorded raises
  WorkdirError naming it."""
  import selfsup.models  # pylint: disable=g-import-not-at-top,unused-import
  verify(export_dir)
  path = os.path.join(export_dir, KERAS_FILE)
  try:
    return keras.saving.load_model(path, safe_mode=True)
  except (ValueError, OSError, KeyError, EOFError,
          zipfile.BadZipFile) as err:
    raise WorkdirError(f"{path} does not load as a Keras model ({err}): the "
                       "export is damaged; run bin/pretrain again.") from err


def fingerprint(export_dir):
  """What identifies an export's values: its weights' hash, step, task and
  backbone. An export written before `weights_sha256` existed (or by other
  code) is hashed from its backbone.keras."""
  info = load_info(export_dir)
  digest = info.get("weights_sha256")
  if not digest:
    digest = weights_sha256(load_backbone(export_dir))
  return {"weights_sha256": digest, "step": info.get("step"),
          "task": info.get("task"), "backbone": info.get("backbone")}
