"""Tests of the preprocessing registry, spec parser, image ops and specs."""
import uuid

import numpy as np
import pytest
import tensorflow as tf

from selfsup import preprocess as pp


def _image(h=20, w=30, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _run(spec, features, training=True):
  """Runs `spec` eagerly and in tf.data; returns (eager, graph) as numpy."""
  fn = pp.get(spec, training)
  eager = {k: np.asarray(v) for k, v in fn(features).items()}
  dataset = tf.data.Dataset.from_tensors(features).map(fn)
  graph = {k: v.numpy() for k, v in next(iter(dataset)).items()}
  assert sorted(eager) == sorted(graph)
  for key in eager:
    assert eager[key].shape == graph[key].shape, key
    assert eager[key].dtype == graph[key].dtype, key
  return eager, graph


def _seeded(image, seed):
  return {"image": image, "_seed": np.array(seed, np.int64)}


# Registry and parsing.


def test_list_ops_has_the_documented_ops():
  expected = {"decode", "resize", "resize_small", "crop", "central_crop",
              "inception_crop", "flip_lr", "color_distort", "to_gray",
              "value_range", "standardize", "rotate", "crop_patches",
              "jigsaw", "jigsaw_shared", "relative_patch_location", "exemplar"}
  assert expected <= set(pp.list_ops())
  assert pp.list_ops() == sorted(pp.list_ops())


def test_register_twice_raises():
  name = f"test_op_{uuid.uuid4().hex}"
  pp.register(name)(lambda: dict)
  assert name in pp.list_ops()
  with pytest.raises(ValueError, match=name):
    pp.register(name)(lambda: dict)


def test_arguments_are_parsed_as_literals_and_training_is_passed():
  name = f"capture_{uuid.uuid4().hex}"
  calls = []

  @pp.register(name)
  def get_capture(*args, training=None, **kwargs):
    calls.append((args, training, kwargs))
    return lambda features: dict(features, seen=1)

  spec = f"{name}(3, -0.5, 'a|b(', (1, 2), key=[4, 5]) | {name}(training=True)"
  out = pp.get(spec, training=False)({"image": _image()})
  assert out["seen"] == 1
  assert calls == [((3, -0.5, "a|b(", (1, 2)), False, {"key": [4, 5]}),
                   ((), True, {})]


@pytest.mark.parametrize("spec,op", [
    ("decode|resize(8)|no_such_op(3)", "no_such_op(3)"),
    ("decode|resize(1, 2, 3, 4, 5)", "resize(1, 2, 3, 4, 5)"),
    ("resize(size=8, colour=1)", "resize(size=8, colour=1)"),
    ("resize(__import__('os').getcwd())", "resize(__import__('os').getcwd())"),
    ("resize(-3)", "resize(-3)"),
    ("crop((1, 2, 3))", "crop((1, 2, 3))"),
    ("to_gray(1.5)", "to_gray(1.5)"),
    ("resize(8)|value_range(1, 2, 3, 3)", "value_range(1, 2, 3, 3)"),
    ("crop_patches(3, -2)", "crop_patches(3, -2)"),
    ("jigsaw(101)", "jigsaw(101)"),
    ("decode||resize(8)", ""),
    ("resize 8", "resize 8"),
    ("resize(8", None),
    ("resize(8)(9)", "resize(8)(9)"),
    ("crop(None)", "crop(None)"),
])
def test_bad_specs_raise_value_error_quoting_spec_and_op(spec, op):
  with pytest.raises(ValueError) as info:
    pp.get(spec, training=True)
  message = str(info.value)
  assert repr(spec) in message
  if op:
    assert repr(op) in message


def test_unknown_op_lists_known_ops():
  with pytest.raises(ValueError, match="known ops: .*resize_small"):
    pp.get("decode|rezise(3)", training=True)


def test_trace_time_errors_quote_the_spec_eagerly_and_in_tf_data():
  spec = "decode|crop(64)"
  with pytest.raises(ValueError, match=r"decode\|crop\(64\).*'crop\(64\)'"):
    pp.get(spec, True)({"image": _image()})
  dataset = tf.data.Dataset.from_tensors({"image": _image()})
  with pytest.raises(ValueError, match=r"decode\|crop\(64\)"):
    dataset.map(pp.get(spec, True))


def test_empty_spec_is_a_copy_and_ops_never_mutate_input():
  features = {"image": _image(), "label": np.int64(1)}
  out = pp.get("", training=True)(features)
  assert out is not features and out.keys() == features.keys()
  features = _seeded(_image(), [1, 2])
  before = dict(features)
  pp.get("crop(8)|flip_lr|to_gray(0.5)|standardize", True)(features)
  assert features.keys() == before.keys()
  assert all(features[k] is before[k] for k in features)


# Image ops.


@pytest.mark.parametrize("encode,channels", [
    (lambda im: tf.io.encode_png(im[..., :1]), 1),
    (lambda im: tf.io.encode_png(np.concatenate(
        [im, np.full_like(im[..., :1], 7)], -1)), 4),
    (lambda im: tf.io.encode_png(im), 3),
    (lambda im: tf.io.encode_jpeg(im), 3),
    (lambda im: im, 3),
    (lambda im: im[..., :1], 1),
])
def test_decode_gives_uint8_rgb(encode, channels):
  image = _image(12, 10)
  eager, graph = _run("decode", {"image": encode(image)})
  for out in (eager["image"], graph["image"]):
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    if channels == 1:
      np.testing.assert_array_equal(out, np.repeat(image[..., :1], 3, -1))
    elif channels == 4:
      np.testing.assert_array_equal(out, image)


def test_decode_rejects_float_images():
  with pytest.raises(ValueError, match="uint8"):
    pp.get("decode", True)({"image": np.zeros((4, 4, 3), np.float32)})


def test_resize_and_resize_small_shapes_keep_dtype():
  image = _image(20, 30)
  for spec, shape in [("resize(8)", (8, 8, 3)), ("resize((6, 9))", (6, 9, 3)),
                      ("resize_small(10)", (10, 15, 3)),
                      ("resize_small(40)", (40, 60, 3))]:
    for out in _run(spec, {"image": image}):
      assert out["image"].shape == shape and out["image"].dtype == np.uint8
  # A constant image stays constant whatever the interpolation.
  flat = np.full((20, 30, 3), 77, np.uint8)
  np.testing.assert_array_equal(_run("resize(7)", {"image": flat})[0]["image"],
                                77)


def _find_window(image, crop):
  """(y, x) such that crop == image[y:y+h, x:x+w], or None."""
  h, w = crop.shape[:2]
  for y in range(image.shape[0] - h + 1):
    for x in range(image.shape[1] - w + 1):
      if np.array_equal(image[y:y + h, x:x + w], crop):
        return y, x
  return None


def test_crop_random_in_training_central_in_eval():
  image = _image(20, 30)
  corners = set()
  for seed in range(6):
    eager, graph = _run("crop((8, 10))", _seeded(image, [seed, 1]))
    np.testing.assert_array_equal(eager["image"], graph["image"])
    corners.add(_find_window(image, eager["image"]))
  assert None not in corners and len(corners) > 1
  for spec, training in [("crop(8)", False), ("central_crop(8)", True)]:
    for out in _run(spec, {"image": image}, training):
      np.testing.assert_array_equal(out["image"], image[6:14, 11:19])


def test_crop_larger_than_image_raises():
  with pytest.raises(ValueError, match=r"'crop\(21\)'.*cannot crop"):
    pp.get("crop(21)", True)({"image": _image(20, 30)})


def test_inception_crop_training_and_eval():
  image = _image(40, 60)
  for out in _run("inception_crop(16)", _seeded(image, [3, 4])):
    assert out["image"].shape == (16, 16, 3) and out["image"].dtype == np.uint8
  eager, graph = _run("inception_crop(16, central_fraction=0.5)",
                      {"image": image}, training=False)
  expected = tf.image.resize(image[10:30, 15:45], (16, 16), antialias=True)
  expected = np.round(expected.numpy()).astype(np.uint8)
  np.testing.assert_array_equal(eager["image"], expected)
  np.testing.assert_array_equal(graph["image"], expected)


def test_flip_lr_flips_sometimes_in_training_never_in_eval():
  image = _image(6, 8)
  flipped = 0
  for seed in range(8):
    out = _run("flip_lr", _seeded(image, [seed, 0]))[1]["image"]
    is_flipped = np.array_equal(out, image[:, ::-1])
    assert is_flipped or np.array_equal(out, image)
    flipped += is_flipped
  assert 0 < flipped < 8
  for out in _run("flip_lr", _seeded(image, [0, 0]), training=False):
    np.testing.assert_array_equal(out["image"], image)


def test_color_distort_changes_colours_in_training_only():
  image = _image(8, 8)
  for out in _run("color_distort(hue=0.1, contrast=0.3)",
                  _seeded(image, [5, 5])):
    assert out["image"].dtype == np.uint8 and out["image"].shape == (8, 8, 3)
    assert not np.array_equal(out["image"], image)
  for out in _run("color_distort", {"image": image}, training=False):
    np.testing.assert_array_equal(out["image"], image)


def test_to_gray_averages_channels():
  image = _image(6, 7)
  gray = np.round(image.astype(np.float32).mean(-1)).astype(np.uint8)
  for out in _run("to_gray(1.0)", {"image": image}, training=False):
    np.testing.assert_array_equal(out["image"], np.stack([gray] * 3, -1))
  for out in _run("to_gray(0.5)", {"image": image}, training=False):
    np.testing.assert_array_equal(out["image"], image)  # augmentation off.
  for out in _run("to_gray(0)", {"image": image}):
    np.testing.assert_array_equal(out["image"], image)


def test_to_gray_flips_one_coin_per_patch():
  patches = np.random.RandomState(1).randint(0, 256, (64, 4, 4, 3))
  patches = patches.astype(np.uint8)
  for out in _run("to_gray(0.5)", _seeded(patches, [7, 7])):
    is_gray = np.all(out["image"] == out["image"][..., :1], axis=(1, 2, 3))
    unchanged = np.all(out["image"] == patches, axis=(1, 2, 3))
    assert np.all(is_gray | unchanged)
    assert 10 < is_gray.sum() < 54


def test_value_range_and_standardize():
  image = np.array([[[0, 255, 51]]], np.uint8)
  for out in _run("value_range(-1, 1)", {"image": image}):
    assert out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"], [[[-1, 1, -0.6]]], atol=1e-6)
  patches = np.random.RandomState(2).randint(0, 256, (5, 6, 6, 3))
  patches[2] = 9  # A constant patch must not give NaN.
  for out in _run("standardize", {"image": patches.astype(np.uint8)}):
    x = out["image"]
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x[[0, 1, 3, 4]].std(axis=(1, 2, 3)), 1,
                               rtol=1e-4)
    np.testing.assert_array_equal(x[2], 0)


# Randomness.


SPEC = "inception_crop(12)|flip_lr|color_distort|to_gray(0.5)|crop(8)"


def test_same_seed_same_output_eagerly_and_in_tf_data():
  image = _image(20, 30)
  first, graph = _run(SPEC, _seeded(image, [11, 12]))
  again = _run(SPEC, _seeded(image, [11, 12]))[0]
  np.testing.assert_array_equal(first["image"], again["image"])
  np.testing.assert_array_equal(first["image"], graph["image"])
  assert not np.array_equal(first["_seed"], [11, 12])  # Advanced for later ops.
  others = [_run(SPEC, _seeded(image, [s, 12]))[0]["image"] for s in range(3)]
  assert any(not np.array_equal(first["image"], o) for o in others)


def test_seeds_are_per_example_in_a_dataset():
  images = np.stack([_image(20, 30, seed=0)] * 4)
  seeds = np.array([[1, 1], [2, 2], [1, 1], [3, 3]], np.int64)
  dataset = tf.data.Dataset.from_tensor_slices(
      {"image": images, "_seed": seeds}).map(pp.get(SPEC, True))
  outs = [x["image"].numpy() for x in dataset]
  np.testing.assert_array_equal(outs[0], outs[2])
  assert not np.array_equal(outs[0], outs[1])


def test_without_seed_output_is_random():
  image = _image(20, 30)
  fn = pp.get("crop(5)|flip_lr", True)
  outs = {fn({"image": image})["image"].numpy().tobytes() for _ in range(6)}
  assert len(outs) > 1


# Specs.


def test_all_ready_made_specs_parse():
  import selfsup.tasks  # pylint: disable=g-import-not-at-top
  for name in selfsup.tasks.TASKS:
    task = selfsup.tasks.TASKS.lookup(name)[0]
    specs = task.pretext_specs()
    assert set(specs) == {"train", "eval", "batch"}
    pp.specs.check(specs)
    pp.specs.check(task.evaluation_specs(64 if task.patch_based else 224))
  assert pp.specs.LINEAR_EVAL["train"] == (
      "decode|resize_small(256)|crop(224)|value_range(-1, 1)")
  assert pp.specs.PATCH_REPRESENTATION_EVAL["eval"] == (
      "decode|resize(255)|central_crop(192)|crop_patches(3)|standardize")
  assert selfsup.tasks.Jigsaw.pretext_specs()["train"] == (
      "decode|resize(292)|crop(255)|to_gray(0.333333)|crop_patches(3, 21)"
      "|standardize|jigsaw(16, permute=False)")


def test_spec_makers_reject_bad_sizes():
  import selfsup.tasks  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="does not fit"):
    selfsup.tasks.Jigsaw.pretext_specs(crop=48, patch=17)
  with pytest.raises(ValueError, match="more than the image side"):
    pp.specs.patch_representation_specs(size=30, patch=12)
