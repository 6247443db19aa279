"""selfsup.Representation everywhere Keras goes (issue 22): TFLite with
built-in ops and XLA through the portable preprocessing, the channel check
after Keras' relaxed retrace, the [0, 1] warning, the dtype policy in the
backbone's config, output shapes and nested summaries, the standalone
ImagePreprocessor in tf.data."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import selfsup.models
import selfsup.tasks
from selfsup import preprocessor as preprocessor_lib
from selfsup.core import precision
from selfsup.preprocessor import ImagePreprocessor
from selfsup.representation import Representation

SIZE, PATCH = 16, 8
TOLERANCE = 1e-4


def _backbone(patch=False, **kwargs):
  model = selfsup.models.get("resnet18_v2", width=0.25, patch=patch, **kwargs)
  rng = np.random.default_rng(0)
  for var in model.variables:
    if "moving_variance" in var.path:
      var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
  return model


def _spec(patch):
  task = selfsup.tasks.Jigsaw if patch else selfsup.tasks.Rotation
  return task.evaluation_specs(PATCH if patch else SIZE)["eval"]


def _smooth_images(n, h, w, seed=0):
  """Natural-looking images (smooth colour gradients and blobs): where the
  portable resize and the antialiased one should nearly agree."""
  rng = np.random.default_rng(seed)
  y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w),
                     indexing="ij")
  out = []
  for _ in range(n):
    a = rng.uniform(0, 2 * np.pi, (3, 2))
    channels = [127 + 120 * np.sin(3 * (x * np.cos(t) + y * np.sin(t)) + p)
                for t, p in a]
    out.append(np.stack(channels, -1))
  return np.round(np.array(out)).astype(np.uint8)


def _relative(a, b):
  return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def _fixed_model(patch, h=40, w=36):
  inputs = keras.Input((h, w, 3), dtype="uint8")
  layer = Representation(_backbone(patch), _spec(patch), portable=True)
  return keras.Model(inputs, layer(inputs)), layer


@pytest.mark.parametrize("patch", [
    False, pytest.param(True, marks=pytest.mark.slow)], ids=["image",
                                                            "patches"])
def test_tflite_builtin_ops_and_xla_match_keras(patch):
  model, layer = _fixed_model(patch)
  images = _smooth_images(2, 40, 36)
  want = model(images).numpy()
  # XLA: the whole model compiles.
  assert layer.supports_jit
  xla = tf.function(model, jit_compile=True)
  assert _relative(xla(images).numpy(), want) < TOLERANCE
  # TFLite, built-in ops only (no SELECT_TF_OPS: no Flex delegate).
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the interpreter's deprecation notice
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
  index = interpreter.get_input_details()[0]["index"]
  interpreter.resize_tensor_input(index, images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(index, images)
  interpreter.invoke()
  got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
  assert _relative(got, want) < TOLERANCE
  # Close to the evaluation's antialiased preprocessing on smooth images.
  exact = Representation(layer.backbone, _spec(patch))(images).numpy()
  assert _relative(want, exact) < 0.1


def test_the_default_path_is_not_portable_and_portable_needs_a_size():
  layer = Representation(_backbone(), _spec(False))
  assert not layer.supports_jit  # ScaleAndTranslate has no XLA kernel
  portable = Representation(_backbone(), _spec(False), portable=True)
  with pytest.raises(ValueError, match="portable=True needs images of a "
                                       "fixed size"):
    keras.Sequential([keras.Input((None, None, 3)), portable])
  with pytest.raises(ValueError, match="no portable form"):
    ImagePreprocessor("decode|inception_crop(16)", portable=True)


def test_gray_after_rgb_in_the_same_model():
  """Keras retraces predict with relaxed shapes: the second call's channel
  count is unknown when traced, and gray must still work."""
  model = keras.Sequential([Representation(_backbone(), _spec(False)),
                            keras.layers.Dense(2)])
  rgb = _smooth_images(2, 20, 20)
  gray = rgb[..., :1]
  model.predict(rgb, verbose=0)
  got = model.predict(gray, verbose=0)
  np.testing.assert_allclose(got, model.predict(np.repeat(gray, 3, -1),
                                                verbose=0), rtol=1e-5,
                             atol=1e-5)
  model.predict(rgb[..., :2].repeat(2, -1), verbose=0)  # 4 channels: RGBA
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="1, 3 or 4 channels"):
    model.predict(rgb[..., :2], verbose=0)


def test_unit_range_floats_warn_once(monkeypatch, capfd):
  monkeypatch.setattr(preprocessor_lib, "_warned", [])
  layer = Representation(_backbone(), _spec(False))
  unit = _smooth_images(2, 20, 20).astype(np.float32) / 255.0
  with pytest.warns(UserWarning, match=r"all lie in \[0, 1\]"):
    layer(unit)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layer(unit)  # once per process
    layer(unit * 255.0)  # [0, 255]: no warning
    layer((unit * 255).astype(np.uint8))
  # Inside a traced function (predict) the graph says it on stderr.
  model = keras.Sequential([layer])
  model.predict(unit, verbose=0)
  assert "all lie in [0, 1]" in capfd.readouterr().err
  model.predict(unit * 255.0, verbose=0)
  assert "all lie in [0, 1]" not in capfd.readouterr().err


def test_dtype_policy_survives_saving(tmp_path):
  with precision.dtype_policy("mixed_bfloat16"):
    model = _backbone(num_classes=3)
  assert model.get_config()["dtype"] == "mixed_bfloat16"
  path = str(tmp_path / "bf16.keras")
  model.save(path)
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(
      np.float32)
  with precision.dtype_policy("float32"):
    loaded = keras.saving.load_model(path)
  assert loaded.get_layer("root_conv").dtype_policy.name == "mixed_bfloat16"
  np.testing.assert_array_equal(loaded(images)["logits"],
                                model(images)["logits"])
  # Configs written before the policy was recorded load as before.
  old = dict(model.get_config())
  del old["dtype"]
  with precision.dtype_policy("float32"):
    assert type(model).from_config(old).get_layer(
        "root_conv").dtype_policy.name == "float32"


def test_output_shape_and_nested_summary():
  layer = Representation(_backbone(), _spec(False))
  assert layer.compute_output_shape((None, 20, 30, 3)) == (None, 32)
  grid = Representation(_backbone(), _spec(False), endpoint="block2",
                        pooling=None)
  assert grid.compute_output_shape((4, None, None, 1)) == (4, 2, 2, 8)
  model = keras.Sequential([keras.Input((20, 20, 3)), layer])
  lines = []
  model.summary(expand_nested=True, print_fn=lambda line, **_: lines.append(
      line))
  text = "\n".join(lines)
  assert "preprocessor" in text and "root_conv" in text
  lines.clear()
  model.summary(print_fn=lambda line, **_: lines.append(line))
  assert "root_conv" not in "\n".join(lines)


def test_image_preprocessor_in_tf_data_and_saved():
  spec = _spec(False)
  prep = ImagePreprocessor(spec)
  images = _smooth_images(3, 21, 25)
  ds = tf.data.Dataset.from_tensor_slices(images).map(prep).batch(3)
  batch = next(iter(ds)).numpy()
  assert batch.shape == (3, SIZE, SIZE, 3) and batch.dtype == np.float32
  layer = Representation(_backbone(), spec)
  np.testing.assert_allclose(batch, layer.preprocess(images), atol=1e-6)
  copy = ImagePreprocessor.from_config(prep.get_config())
  np.testing.assert_allclose(copy(images), batch, atol=1e-6)
  patches = ImagePreprocessor(_spec(True))(_smooth_images(2, 30, 30))
  assert patches.shape == (2, 9, PATCH, PATCH, 3)


@pytest.mark.parametrize("patch", [
    False, pytest.param(True, marks=pytest.mark.slow)], ids=["image",
                                                            "patches"])
def test_export_serves_uint8_images_of_any_size(tmp_path, patch):
  """The workdir's SavedModel has a `serving_default` signature a server can
  feed images to: uint8 of any size in, the representation out."""
  from selfsup.workdir import export  # pylint: disable=import-outside-toplevel
  task = selfsup.tasks.Jigsaw if patch else selfsup.tasks.Rotation
  size = PATCH if patch else SIZE
  workdir = str(tmp_path / "workdir")
  export.write_export(
      _backbone(patch, num_classes=4), workdir, task=task.name,
      backbone_name="resnet18_v2", image_size=size, patch_based=patch,
      step=0, eval_specs=task.evaluation_specs(size))
  loaded = tf.saved_model.load(f"{workdir}/export/saved_model")
  serve = loaded.signatures["serving_default"]
  layer = Representation.from_workdir(workdir)
  for shape in ((2, 27, 31, 3), (1, 40, 36, 1)):
    images = _smooth_images(shape[0], *shape[1:3])[..., :shape[3]]
    got = serve(images=tf.constant(images))["representation"].numpy()
    assert _relative(got, layer(images).numpy()) < 1e-5
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    serve(images=tf.constant(images.astype(np.float32)))  # uint8 only
  assert "serve" in loaded.signatures  # the backbone's own, as before
