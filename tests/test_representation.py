"""selfsup.Representation: the evaluation's preprocessing and pooling inside
one Keras layer, in Sequential and functional models, saved and loaded,
frozen and fine-tuned; `import selfsup` registers the classes."""
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import selfsup
import selfsup.models
import selfsup.tasks
from selfsup.evaluation import extract
from selfsup.preprocess import get as get_spec
from selfsup.representation import Representation
from selfsup.workdir import export
from tests import test_tf1_reference as tf1_tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16   # whole-image models see 16x16 images
PATCH = 8   # patch models see 8x8 patches (of a 32x32 image's central 24)


def _randomise_bn(model, seed=0):
  """Non-trivial batch-norm statistics, so inference differs from training."""
  rng = np.random.default_rng(seed)
  for var in model.variables:
    if "moving_variance" in var.path:
      var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    elif "moving_mean" in var.path:
      var.assign(rng.normal(0, 0.1, var.shape).astype(np.float32))
  return model


def _backbone(patch=False, num_classes=None):
  return _randomise_bn(selfsup.models.get(
      "resnet18_v2", width=0.25, patch=patch, num_classes=num_classes))


def _spec(patch):
  if patch:
    return selfsup.tasks.Jigsaw.evaluation_specs(PATCH)["eval"]
  return selfsup.tasks.Rotation.evaluation_specs(SIZE)["eval"]


def _images(n, h, w, seed=0, channels=3):
  return np.random.default_rng(seed).integers(
      0, 256, (n, h, w, channels)).astype(np.uint8)


def _evaluation_path(backbone, spec, images, endpoint):
  """What bin/linear_eval computes: the spec in tf.data, image by image,
  then `extract.representation` on the batch."""
  preprocess = get_spec(spec, training=False)
  ds = tf.data.Dataset.from_tensor_slices({"image": images})
  ds = ds.map(lambda x: {"image": preprocess(x)["image"]}).batch(len(images))
  batch = next(iter(ds))["image"]
  return extract.representation(backbone, batch, endpoint).numpy()


def _relative(a, b):
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("patch,endpoint", [
    (False, "pre_logits"), (False, "block2"), (True, "pre_logits"),
    (True, "block3")])
def test_matches_the_evaluation_path(patch, endpoint):
  backbone = _backbone(patch)
  spec = _spec(patch)
  layer = Representation(backbone, spec, endpoint=endpoint)
  for h, w in ((20, 27), (41, 33)):  # any size, not square
    images = _images(3, h, w, seed=h)
    want = _evaluation_path(backbone, spec, images, endpoint)
    got = layer(images).numpy()
    assert got.shape == want.shape and got.ndim == 2
    assert _relative(got, want) < 1e-5
    # Float images in [0, 255] skip the uint8 rounding after resizing: close.
    floats = layer(images.astype(np.float32)).numpy()
    assert _relative(floats, want) < 0.05


def test_channels_and_dtypes_as_decode():
  layer = Representation(_backbone(), _spec(False))
  gray = _images(2, 18, 18, channels=1)
  np.testing.assert_allclose(layer(gray), layer(np.repeat(gray, 3, -1)),
                             rtol=1e-6, atol=1e-6)
  rgba = _images(2, 18, 18, channels=4)
  np.testing.assert_allclose(layer(rgba), layer(rgba[..., :3]),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="1, 3 or 4 channels"):
    layer(_images(2, 18, 18, channels=2))
  with pytest.raises(ValueError, match="ndim=4|batch of images"):
    layer(_images(2, 18, 18)[0])


def test_pooling_choices():
  backbone = _backbone()
  images = _images(2, 20, 20)
  maps = Representation(backbone, _spec(False), endpoint="block2",
                        pooling=None)(images).numpy()
  assert maps.ndim == 4 and maps.shape[0] == 2
  avg = Representation(backbone, _spec(False), endpoint="block2",
                       pooling="avg")(images).numpy()
  top = Representation(backbone, _spec(False), endpoint="block2",
                       pooling="max")(images).numpy()
  np.testing.assert_allclose(avg, maps.mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(top, maps.max(axis=(1, 2)), rtol=1e-6)
  patch_maps = Representation(_backbone(patch=True), _spec(True),
                              endpoint="block2", pooling=None)(images)
  assert patch_maps.shape[:2] == (2, 9) and patch_maps.shape.rank == 5


@pytest.mark.parametrize("kwargs,message", [
    (dict(endpoint="logits"), "endpoint='logits' is not valid"),
    (dict(pooling="mean"), "pooling='mean' is not valid"),
    (dict(batch_norm="freeze"), "batch_norm='freeze' is not valid"),
    (dict(weight_decay=1e-4), "weight_decay=0.0001 is not valid"),
    (dict(grid_rule="ceil"), "grid_rule='ceil' is not valid"),
    (dict(spec="decode|resize_small(18)|central_crop(16)|rotate"),
     "op 'rotate' makes pretext examples"),
    (dict(spec="decode|resize(16"), "Bad preprocessing spec"),
])
def test_bad_arguments_are_named(kwargs, message):
  args = dict(spec=_spec(False))
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    Representation(_backbone(), **args)


def _workdir(tmp_path, patch=False):
  """An export as bin/pretrain writes it, from a backbone with a head."""
  backbone = _backbone(patch, num_classes=4)
  workdir = str(tmp_path / "workdir")
  os.makedirs(workdir)
  export.write_export(
      backbone, workdir, task="jigsaw" if patch else "rotation",
      backbone_name="resnet18_v2", image_size=PATCH if patch else SIZE,
      patch_based=patch, step=0, eval_specs=(
          selfsup.tasks.Jigsaw if patch else selfsup.tasks.Rotation
      ).evaluation_specs(PATCH if patch else SIZE))
  return workdir, backbone


def _fit(model, images, labels, steps=3):
  model.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model.fit(images, labels, batch_size=4, epochs=steps, verbose=0)


def test_from_workdir_in_sequential_trains_frozen_and_survives_saving(
    tmp_path):
  workdir, _ = _workdir(tmp_path)
  layer = Representation.from_workdir(workdir)
  assert "logits" not in layer.backbone.output  # the head stays out
  assert not layer.trainable and not layer.losses
  model = keras.Sequential([layer, keras.layers.Dense(10)])
  images, labels = _images(8, 24, 30), np.arange(8) % 10
  before = [w.numpy().copy() for w in layer.backbone.weights]
  dense_before = None
  model(images[:1])
  dense_before = model.layers[-1].kernel.numpy().copy()
  history = _fit(model, images, labels)
  assert np.all(np.isfinite(history.history["loss"]))
  for w, b in zip(layer.backbone.weights, before):
    np.testing.assert_array_equal(w.numpy(), b)  # frozen: nothing moves
  assert not np.allclose(model.layers[-1].kernel.numpy(), dense_before)
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded(images), model(images), rtol=1e-5,
                             atol=1e-5)
  assert not loaded.layers[0].trainable
  # The export folder itself works too, and the spec is info.json's.
  again = Representation.from_workdir(os.path.join(workdir, "export"))
  assert again.spec == export.load_info(
      os.path.join(workdir, "export"))["eval_specs"]["eval"]
  with pytest.raises(FileNotFoundError, match="no complete export"):
    Representation.from_workdir(str(tmp_path))


def test_functional_fine_tuning_batch_norm_and_weight_decay(tmp_path):
  workdir, _ = _workdir(tmp_path, patch=True)
  images, labels = _images(8, 36, 36, seed=3), np.arange(8) % 3

  def build(**kwargs):
    inputs = keras.Input((None, None, 3), dtype="uint8")
    layer = Representation.from_workdir(workdir, trainable=True, **kwargs)
    outputs = keras.layers.Dense(3)(layer(inputs))
    return keras.Model(inputs, outputs), layer

  def stats(layer):
    return [v.numpy().copy() for v in layer.backbone.non_trainable_weights]

  def kernels(layer):
    return [v.numpy().copy() for v in layer.backbone.trainable_weights]

  model, layer = build()  # batch norm frozen (Keras' guide), weights learn
  assert layer.losses  # the backbone's L2 penalties, while trainable
  moving, weights = stats(layer), kernels(layer)
  _fit(model, images, labels)
  for now, then in zip(stats(layer), moving):
    np.testing.assert_array_equal(now, then)
  assert any(not np.allclose(now, then)
             for now, then in zip(kernels(layer), weights))

  model, layer = build(batch_norm="train", weight_decay=False)
  assert not layer.losses
  moving = stats(layer)
  _fit(model, images, labels)
  assert any(not np.allclose(now, then)
             for now, then in zip(stats(layer), moving))
  path = str(tmp_path / "tuned.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert not loaded.losses  # weight_decay=False survives saving
  np.testing.assert_allclose(loaded(images), model(images), rtol=1e-5,
                             atol=1e-5)


def test_from_keras_and_from_tf1_agree_with_the_backbone(tmp_path):
  backbone = _backbone(num_classes=3)
  headless = export.headless(backbone)
  images = _images(2, 19, 23)
  want = Representation(headless, _spec(False))(images).numpy()
  path = str(tmp_path / "backbone.keras")
  headless.save(path)
  got = Representation.from_keras(path, {"eval": _spec(False)})(images)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  tf1_tests._write_checkpoint(  # pylint: disable=protected-access
      str(tmp_path / "hub" / "variables" / "variables"),
      tf1_tests._tf1_tensors(backbone))  # pylint: disable=protected-access
  layer = Representation.from_tf1(str(tmp_path / "hub"), "resnet18_v2",
                                  width=0.25, task="rotation",
                                  image_size=SIZE)
  assert layer.spec == _spec(False)
  np.testing.assert_allclose(layer(images), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="task='colour' is not valid"):
    Representation.from_tf1(str(tmp_path / "hub"), "resnet18_v2", width=0.25,
                            task="colour")


_LOAD = """
import sys
{imports}
model = keras.saving.load_model(sys.argv[1])
print(type(model.layers[0]).__name__)
"""


def test_import_selfsup_touches_no_import_machinery():
  code = ("import sys; before = list(sys.meta_path); import selfsup; "
          "print(sys.meta_path == before, 'keras' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code],
                          env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=120,
                          check=True)
  assert result.stdout.split() == ["True", "False"]  # and no TensorFlow


# Keras first (the usual order) registers at `import selfsup`; otherwise
# register_keras_classes(), or any use of selfsup's classes, does.
@pytest.mark.parametrize("imports", [
    "import keras, selfsup",
    "import selfsup, keras\nselfsup.register_keras_classes()",
    "import selfsup, tensorflow, keras\nselfsup.Representation"])
def test_import_selfsup_is_enough_to_load(tmp_path, imports):
  model = keras.Sequential([
      keras.Input((20, 20, 3)),
      Representation(_backbone(), _spec(False)), keras.layers.Dense(2)])
  path = str(tmp_path / "model.keras")
  model.save(path)
  result = subprocess.run(
      [sys.executable, "-c", _LOAD.format(imports=imports), path],
      cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT,
                                  TF_CPP_MIN_LOG_LEVEL="3"),
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "Representation"


def _python_blocks(path):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _module_tarball(tmp_path):
  """A tiny backbone in TF-Hub's compressed module layout."""
  import tarfile  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "module"
  tf1_tests._write_checkpoint(  # pylint: disable=protected-access
      str(folder / "variables" / "variables"),
      tf1_tests._tf1_tensors(_backbone()))  # pylint: disable=protected-access
  path = str(tmp_path / "rotation.tar.gz")
  with tarfile.open(path, "w:gz") as archive:
    archive.add(str(folder / "variables"), arcname="variables")
  return path


def test_docs_transfer_runs_as_written(tmp_path, monkeypatch):
  """docs/transfer.md's Python blocks, in order, on a tiny rotation export."""
  workdir, _ = _workdir(tmp_path)
  blocks = _python_blocks(os.path.join(ROOT, "docs", "transfer.md"))
  assert len(blocks) >= 7  # setup, features, endpoints, probe, load, ...
  monkeypatch.setenv("WORKDIR", workdir)
  # The presets block reads a local stand-in module: nothing is downloaded.
  monkeypatch.setenv("PRESET_MODULE", _module_tarball(tmp_path))
  monkeypatch.setenv("SELFSUP_HOME", str(tmp_path / "home"))
  monkeypatch.setenv("SELFSUP_OFFLINE", "1")
  monkeypatch.chdir(tmp_path)
  scope = {"__name__": "transfer_doc"}
  for i, block in enumerate(blocks):
    try:
      exec(compile(block, f"docs/transfer.md block {i + 1}", "exec"), scope)  # pylint: disable=exec-used
    except Exception as err:  # pylint: disable=broad-except
      pytest.fail(f"docs/transfer.md block {i + 1} failed: {err!r}\n{block}")
  assert os.path.exists(tmp_path / "probe.keras")
  assert scope["features"].shape[0] == 8
  assert not scope["adamw"].losses and scope["tuned"].losses
  assert scope["pretrained"].backbone.name.startswith("resnet18_v2")
  assert scope["lite"].shape == (2, scope["features"].shape[1])
