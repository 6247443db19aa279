"""The contrastive methods' augmentation ops, eagerly and in tf.data."""
import numpy as np
import pytest
import tensorflow as tf

from selfsup.preprocess import get, specs

SIDE = 40


def _image(seed=0, side=SIDE):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (side, side + 4, 3), dtype=np.uint8)


def _features(image=None, seed=(3, 4)):
  return {"image": tf.constant(_image() if image is None else image),
          "_seed": tf.constant(seed, tf.int64)}


def _eager(spec, features, training=True):
  return {k: v.numpy() for k, v in get(spec, training)(features).items()}


def _in_dataset(spec, features, training=True):
  ds = tf.data.Dataset.from_tensors(features).map(get(spec, training))
  return {k: v.numpy() for k, v in next(iter(ds)).items()}


OPS = ["random_resized_crop(24)", "color_jitter(1.0, p=1.0)",
       "color_jitter(0.5, p=0.8, random_order=False)", "random_grayscale(1.0)",
       "gaussian_blur(1.0)", "solarize(1.0)",
       'two_views("random_resized_crop(16)|flip_lr", '
       '"random_resized_crop(16)|solarize(1.0)")']


@pytest.mark.parametrize("spec", OPS)
def test_eager_and_dataset_agree_and_seed_decides(spec):
  features = _features()
  eager = _eager(spec, features)
  graph = _in_dataset(spec, features)
  np.testing.assert_array_equal(eager["image"], graph["image"])
  assert eager["image"].dtype == np.uint8
  again = _eager(spec, _features(seed=(3, 4)))
  np.testing.assert_array_equal(again["image"], eager["image"])
  # The seed is advanced for the next op.
  assert not np.array_equal(eager["_seed"], [3, 4])


@pytest.mark.parametrize("spec", OPS[1:-1])
def test_evaluation_leaves_the_image(spec):
  image = _image()
  out = _eager(spec, {"image": tf.constant(image)}, training=False)
  np.testing.assert_array_equal(out["image"], image)


def test_random_resized_crop_shapes_and_range():
  out = _in_dataset("random_resized_crop((24, 20), area=(0.5, 1.0))",
                    _features())
  assert out["image"].shape == (24, 20, 3)
  with pytest.raises(ValueError, match="area"):
    get("random_resized_crop(24, area=(0.5, 1.5))", True)


def test_color_jitter_changes_colours_with_probability_p():
  image = _image()
  changed = [not np.array_equal(
      _eager("color_jitter(1.0, p=0.5)", _features(seed=(i, 1)))["image"],
      image) for i in range(40)]
  assert 10 <= sum(changed) <= 30
  assert not any(not np.array_equal(
      _eager("color_jitter(1.0, p=0.0)", _features(seed=(i, 1)))["image"],
      image) for i in range(3))


def test_brightness_alone_scales_every_pixel_by_one_factor():
  image = np.full((8, 8, 3), 100, np.uint8)
  image[:4] = 50
  spec = ("color_jitter(1.0, p=1.0, brightness=0.5, contrast=0, "
          "saturation=0, hue=0)")
  out = _eager(spec, _features(image)).get("image").astype(float)
  factor = out[5, 5, 0] / 100
  assert 0.5 <= factor <= 1.5 and factor != 1.0
  np.testing.assert_allclose(out[:4], 50 * factor, atol=0.51)


def test_color_jitter_order_is_random_but_complete():
  # A hue change of a gray pixel does nothing, saturation of gray nothing:
  # on a gray image only brightness and contrast act, in any order.
  spec = "color_jitter(1.0, p=1.0)"
  outs = {tuple(_eager(spec, _features(_image(1)[..., :1].repeat(3, -1),
                                       seed=(i, 0)))["image"][0, 0])
          for i in range(6)}
  assert len(outs) > 1
  for pixel in outs:
    assert pixel[0] == pixel[1] == pixel[2]


def test_random_grayscale_is_the_luma():
  image = _image()
  out = _eager("random_grayscale(1.0)", _features(image))["image"]
  luma = image.astype(float) @ np.array([0.2989, 0.587, 0.114])
  np.testing.assert_allclose(out[..., 0], luma, atol=1.01)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def _np_blur(image, sigma, radius):
  x = np.arange(-radius, radius + 1)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k /= k.sum()
  padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)),
                  mode="reflect")
  rows = sum(k[i] * padded[i:i + image.shape[0]] for i in range(len(k)))
  return sum(k[i] * rows[:, i:i + image.shape[1]] for i in range(len(k)))


def test_gaussian_blur_against_numpy():
  image = _image().astype(np.float32)
  # A fixed sigma; the kernel: 2 * floor(40 * 0.1 / 2) + 1 = 5 taps.
  out = _eager("gaussian_blur(1.0, sigma=(1.5, 1.5))",
               _features(image))["image"]
  np.testing.assert_allclose(out, np.clip(_np_blur(image, 1.5, 2), 0, 255),
                             atol=1e-3)
  constant = np.full((SIDE, SIDE, 3), 77, np.uint8)
  np.testing.assert_array_equal(
      _eager("gaussian_blur(1.0)", _features(constant))["image"], constant)


def test_solarize_inverts_the_bright_values():
  image = _image()
  out = _eager("solarize(1.0)", _features(image))["image"]
  np.testing.assert_array_equal(out, np.where(image >= 128, 255 - image,
                                              image))


def test_two_views_each_have_their_own_seed_and_keep_the_label():
  spec = specs.two_view_specs(specs.view(16))["train"]
  features = dict(_features(), label=tf.constant(7, tf.int64))
  out = _in_dataset(spec, features)
  assert out["image"].shape == (2, 16, 16, 3)
  assert out["image"].dtype == np.float32
  assert out["image"].min() >= -1 and out["image"].max() <= 1
  assert not np.array_equal(out["image"][0], out["image"][1])
  assert out["class_label"] == 7 and "label" not in out
  evaluation = _eager(spec, {"image": tf.constant(_image())}, training=False)
  np.testing.assert_array_equal(evaluation["image"][0],
                                evaluation["image"][1])


def test_byol_views_differ_in_blur_and_solarize():
  first = specs.view(32, jitter=specs.BYOL_JITTER, blur_p=1.0)
  second = specs.view(32, jitter=specs.BYOL_JITTER, blur_p=0.1,
                      solarize_p=0.2)
  assert "gaussian_blur(1.0)" in first and "solarize" not in first
  assert "gaussian_blur(0.1)" in second and "solarize(0.2)" in second
  specs.check(specs.two_view_specs(first, second))


@pytest.mark.parametrize("spec,name", [
    ("color_jitter(p=1.5)", "p"), ("color_jitter(strength=-1)", "strength"),
    ("color_jitter(hue=0.6)", "hue"), ("gaussian_blur(sigma=(0, 1))", "sigma"),
    ("solarize(threshold=300)", "threshold"), ("random_grayscale(2)", "p")])
def test_bad_arguments_name_the_argument(spec, name):
  with pytest.raises(ValueError, match=name):
    get(spec, True)
