"""Colour and value ops: colour jitter, grayscale, value range, standardize.

Like the other image ops they keep the dtype and [0, 255] range of their
input, except `value_range` and `standardize`, which give float32. They act
on the last three axes ([..., H, W, C]), so they also work on stacks of
patches or copies.
"""
import tensorflow as tf

from selfsup.preprocess import randomness
from selfsup.preprocess.image_ops import get_image, to_dtype, with_image
from selfsup.preprocess.registry import register
from selfsup.core.checks import ConfigError


@register("color_distort")
def get_color_distort(brightness=32 / 255, saturation=0.5, hue=0.0,
                      contrast=0.0, training=True):
  """Random colour changes of [..., H, W, 3] in [0, 255]; none in evaluation.

  Brightness shifts by up to `brightness` (a fraction of the full range), then
  saturation and contrast scale by a factor in [1 - s, 1 + s] and hue shifts
  by up to `hue`; 0 disables a change. The defaults are slim's Inception
  training distortion (fast mode: brightness then saturation).
  """
  for name, value, top in (("brightness", brightness, 1), ("saturation",
                                                           saturation, 1),
                           ("hue", hue, 0.5), ("contrast", contrast, 1)):
    if not 0 <= value <= top:
      raise ConfigError(f"{name} must be in [0, {top}], got {value}")

  def color_distort(features):
    image = get_image(features, ranks=(3, 4))
    if not training:
      return with_image(features, image)
    if image.shape[-1] != 3:
      raise ConfigError(f"color_distort needs RGB images, got {image.shape}")
    features, seeds = randomness.take_seeds(features, 4)
    x = tf.cast(image, tf.float32) / 255.0
    if brightness:
      x = tf.image.stateless_random_brightness(x, brightness, seeds[0])
    if saturation:
      x = tf.image.stateless_random_saturation(x, 1 - saturation,
                                               1 + saturation, seeds[1])
    if hue:
      x = tf.image.stateless_random_hue(x, hue, seeds[2])
    if contrast:
      x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast,
                                             seeds[3])
    x = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    return with_image(features, to_dtype(x, image.dtype))

  return color_distort


@register("to_gray")
def get_to_gray(p=1.0, training=True):
  """Replaces the channels by their mean with probability `p`, keeping C.

  With leading axes ([N, H, W, C], e.g. patches), each image along them flips
  its own coin. Random conversion is augmentation and is skipped in
  evaluation; `p=1` converts always, in both modes.
  """
  if not 0 <= p <= 1:
    raise ConfigError(f"p must be a probability in [0, 1], got {p!r}")

  def to_gray(features):
    image = get_image(features, ranks=(3, 4, 5))
    if p == 0 or (p < 1 and not training):
      return with_image(features, image)
    x = tf.cast(image, tf.float32)
    gray = tf.broadcast_to(tf.reduce_mean(x, axis=-1, keepdims=True),
                           tf.shape(x))
    if p < 1:
      features, seeds = randomness.take_seeds(features, 1)
      leading = tf.shape(x)[:-3]
      coins = tf.random.stateless_uniform(leading, seeds[0]) < p
      coins = tf.reshape(coins, tf.concat([leading, [1, 1, 1]], axis=0))
      gray = tf.where(coins, gray, x)
    return with_image(features, to_dtype(gray, image.dtype))

  return to_gray


@register("value_range")
def get_value_range(vmin=-1.0, vmax=1.0, in_min=0.0, in_max=255.0):
  """Maps [in_min, in_max] (default [0, 255]) linearly to [vmin, vmax]."""
  if in_min >= in_max:
    raise ConfigError(f"need in_min < in_max, got {in_min}, {in_max}")

  def value_range(features):
    image = tf.cast(get_image(features, ranks=(3, 4, 5, 6)), tf.float32)
    scale = (vmax - vmin) / (in_max - in_min)
    return with_image(features, vmin + (image - in_min) * scale)

  return value_range


@register("standardize")
def get_standardize():
  """Zero mean, unit variance per image of [..., H, W, C], as float32.

  Statistics are taken over the last three axes, so with leading axes every
  patch is standardised on its own (what the patch-based tasks need). As in
  `tf.image.per_image_standardization`, the standard deviation is floored at
  1/sqrt(H*W*C) so constant images give zeros rather than NaN.
  """

  def standardize(features):
    image = tf.cast(get_image(features, ranks=(3, 4, 5, 6)), tf.float32)
    mean, var = tf.nn.moments(image, axes=[-3, -2, -1], keepdims=True)
    count = tf.cast(tf.reduce_prod(tf.shape(image)[-3:]), tf.float32)
    std = tf.maximum(tf.sqrt(var), tf.math.rsqrt(count))
    return with_image(features, (image - mean) / std)

  return standardize
