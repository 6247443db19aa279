"""The augmentations of the contrastive and self-distillation methods.

SimCLR (Chen et al. 2020, appendix A), BYOL (Grill et al. 2020, appendix B)
and Barlow Twins (Zbontar et al. 2021, section 4) share one recipe: a random
resized crop, a flip, colour jitter applied with some probability (its four
changes in a random order), random grayscale, Gaussian blur, and (BYOL,
Barlow Twins) solarization, with per-view probabilities. `two_views` makes
the pair of views: image [2, H, W, C], each view from its own spec and seed.

Every op acts on one image [H, W, 3] of dtype uint8 in [0, 255] (or float in
that range) and keeps dtype and range, like the other image ops; random
choices come from stateless ops seeded through `randomness.take_seeds`. In
evaluation (`training=False`) the random ops do nothing.
"""
import math

import tensorflow as tf

from selfsup.preprocess import randomness
from selfsup.preprocess.image_ops import get_image, get_inception_crop
from selfsup.preprocess.image_ops import to_dtype, with_image
from selfsup.preprocess.pretext_ops import CLASS_LABEL_KEY
from selfsup.preprocess.registry import get as get_spec
from selfsup.preprocess.registry import register

NUM_VIEWS = 2


def _check_probability(name, p):
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
    raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_range(name, pair, low=0.0, high=math.inf):
  if (not isinstance(pair, (tuple, list)) or len(pair) != 2
      or not all(isinstance(v, (int, float)) for v in pair)
      or not low <= pair[0] <= pair[1] <= high):
    raise ValueError(f"{name} must be a pair (min, max) with {low} <= min <= "
                     f"max <= {high}, got {pair!r}")


def _coin(seed, p):
  return tf.random.stateless_uniform([], seed) < p


def _apply_with_p(features, p, fn, name):
  """Runs `fn(image as float32 in [0, 1], seed)` with probability `p`."""
  image = get_image(features)
  if image.shape[-1] != 3:
    raise ValueError(f"{name} needs RGB images [H, W, 3], got {image.shape}")
  features, seeds = randomness.take_seeds(features, 2)
  x = tf.cast(image, tf.float32) / 255.0
  if p == 1:
    out = fn(x, seeds[1])
  else:
    # tf.cond, not tf.where: a skipped view costs nothing (BYOL blurs the
    # second view with probability 0.1).
    out = tf.cond(_coin(seeds[0], p), lambda: fn(x, seeds[1]), lambda: x)
  out = tf.clip_by_value(out, 0.0, 1.0) * 255.0
  return with_image(features, to_dtype(out, image.dtype))


@register("random_resized_crop")
def get_random_resized_crop(size, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                            method="bicubic", training=True):
  """A random window of `area` (fractions of the image) and aspect (w/h) in
  `aspect`, resized to `size`: SimCLR's and BYOL's crop (bicubic). In
  evaluation, the central 87.5% resized (as `inception_crop`)."""
  _check_range("area", area, 0.0, 1.0)
  _check_range("aspect", aspect)
  if area[0] <= 0 or aspect[0] <= 0:
    raise ValueError(f"area and aspect must be > 0, got {area!r}, {aspect!r}")
  return get_inception_crop(size, area_min=area[0] * 100,
                            area_max=area[1] * 100, aspect_min=aspect[0],
                            aspect_max=aspect[1], method=method,
                            training=training)


def _brightness(x, strength, seed):
  # Multiplicative, as SimCLR v2's and torchvision's jitter.
  factor = tf.random.stateless_uniform([], seed, max(0.0, 1.0 - strength),
                                       1.0 + strength)
  return x * factor


def _contrast(x, strength, seed):
  return tf.image.stateless_random_contrast(x, max(0.0, 1.0 - strength),
                                            1.0 + strength, seed)


def _saturation(x, strength, seed):
  return tf.image.stateless_random_saturation(x, max(0.0, 1.0 - strength),
                                              1.0 + strength, seed)


def _hue(x, strength, seed):
  return tf.image.stateless_random_hue(x, strength, seed)


@register("color_jitter")
def get_color_jitter(strength=1.0, p=0.8, brightness=0.8, contrast=0.8,
                     saturation=0.8, hue=0.2, random_order=True,
                     training=True):
  """With probability `p`, changes brightness, contrast, saturation and hue.

  Each amount is multiplied by `strength` (SimCLR's s; its defaults are
  0.8s, 0.8s, 0.8s, 0.2s; BYOL and Barlow Twins use 0.4, 0.4, 0.2, 0.1 at
  s=1): brightness and contrast and saturation scale by a factor in
  [1 - a, 1 + a], hue shifts by up to a (a fraction of the colour circle,
  at most 0.5). The four changes come in a random order (SimCLR's
  `color_jitter_rand`) unless `random_order=False`; the image is clipped to
  its range after each.
  """
  _check_probability("p", p)
  if not isinstance(strength, (int, float)) or strength < 0:
    raise ValueError(f"strength must be a number >= 0, got {strength!r}")
  amounts = []
  for name, value in (("brightness", brightness), ("contrast", contrast),
                      ("saturation", saturation), ("hue", hue)):
    if not isinstance(value, (int, float)) or value < 0:
      raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    amounts.append(float(value) * strength)
  if amounts[3] > 0.5:
    raise ValueError(f"hue * strength must be at most 0.5, got {amounts[3]}")
  changes = [(fn, a) for fn, a in zip(
      (_brightness, _contrast, _saturation, _hue), amounts) if a > 0]

  def jitter(x, seed):
    seeds = tf.random.experimental.stateless_split(seed, len(changes) + 1)
    if not random_order:
      for i, (fn, a) in enumerate(changes):
        x = tf.clip_by_value(fn(x, a, seeds[1 + i]), 0.0, 1.0)
      return x
    order = randomness.sample_without_replacement(seeds[0], len(changes),
                                                  len(changes))
    for i in range(len(changes)):
      branches = [
          (lambda fn=fn, a=a, s=seeds[1 + i], x=x: fn(x, a, s))
          for fn, a in changes]
      x = tf.clip_by_value(tf.switch_case(order[i], branches), 0.0, 1.0)
    return x

  def color_jitter(features):
    if not training or p == 0 or not changes:
      return with_image(features, get_image(features))
    return _apply_with_p(features, p, jitter, "color_jitter")

  return color_jitter


@register("random_grayscale")
def get_random_grayscale(p=0.2, training=True):
  """With probability `p`, the luma (ITU-R 601) in all 3 channels."""
  _check_probability("p", p)

  def gray(x, _):
    return tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3])

  def random_grayscale(features):
    if not training or p == 0:
      return with_image(features, get_image(features))
    return _apply_with_p(features, p, gray, "random_grayscale")

  return random_grayscale


def blur(image, sigma, radius):
  """Separable Gaussian blur of [H, W, C] float with a (2 radius + 1) kernel,
  reflecting at the borders (no dark frame, unlike zero padding)."""
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  kernel = tf.exp(-0.5 * tf.square(x / sigma))
  kernel /= tf.reduce_sum(kernel)
  channels = tf.shape(image)[-1]
  image = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius],
                               [0, 0]], mode="REFLECT")
  vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
  horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
  out = tf.nn.depthwise_conv2d(image, vertical, [1, 1, 1, 1], "VALID")
  out = tf.nn.depthwise_conv2d(out, horizontal, [1, 1, 1, 1], "VALID")
  return out[0]


@register("gaussian_blur")
def get_gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1,
                      training=True):
  """With probability `p`, a Gaussian blur with sigma uniform in `sigma`
  (pixels) and a kernel of about `kernel_fraction` of the image height:
  2 * floor(H * kernel_fraction / 2) + 1 taps (23 at 224, as SimCLR).
  Images under 20 pixels get a 1-tap kernel (no blur) at the default."""
  _check_probability("p", p)
  _check_range("sigma", sigma)
  if sigma[0] <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma!r}")
  if not 0 < kernel_fraction <= 1:
    raise ValueError(f"kernel_fraction must be in (0, 1], got "
                     f"{kernel_fraction!r}")

  def blur_random(x, seed):
    s = tf.random.stateless_uniform([], seed, sigma[0], sigma[1])
    height = tf.cast(tf.shape(x)[0], tf.float32)
    radius = tf.cast(tf.floor(height * kernel_fraction / 2), tf.int32)
    return blur(x, s, radius)

  def gaussian_blur(features):
    if not training or p == 0:
      return with_image(features, get_image(features))
    return _apply_with_p(features, p, blur_random, "gaussian_blur")

  return gaussian_blur


@register("solarize")
def get_solarize(p=0.2, threshold=128, training=True):
  """With probability `p`, inverts the values at or above `threshold` (of
  255): x -> 255 - x (BYOL's solarization, threshold 0.5 of the range)."""
  _check_probability("p", p)
  if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 255:
    raise ValueError(f"threshold must be in [0, 255], got {threshold!r}")

  def invert(x, _):
    return tf.where(x * 255.0 >= threshold, 1.0 - x, x)

  def solarize(features):
    if not training or p == 0:
      return with_image(features, get_image(features))
    return _apply_with_p(features, p, invert, "solarize")

  return solarize


@register("two_views")
def get_two_views(first, second=None, training=True):
  """Two augmented views of one image: image [2, ...] from the specs `first`
  and `second` (default: `first` again), each with its own seed.

  The specs hold the per-view settings (BYOL blurs view 1 always and view 2
  with probability 0.1). Both must give one fixed shape. The incoming class
  label is kept as `class_label`, like the other pretext ops.
  """
  views = [get_spec(first, training),
           get_spec(first if second is None else second, training)]

  def two_views(features):
    get_image(features, ranks=(0, 3))  # encoded bytes if the specs decode
    features = dict(features)
    seeds = None
    if randomness.SEED_KEY in features:
      features, seeds = randomness.take_seeds(features, NUM_VIEWS)
    images = []
    for i, view in enumerate(views):
      one = dict(features)
      if seeds is not None:
        one[randomness.SEED_KEY] = seeds[i]
      images.append(view(one)["image"])
    out = dict(features, image=tf.stack(images))
    if "label" in out:
      out[CLASS_LABEL_KEY] = out.pop("label")
    return out

  return two_views
