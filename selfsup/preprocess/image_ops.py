"""Geometric image ops: decoding, resizing, cropping, flipping.

Every op reads and writes `features["image"]` and returns a new dict. Until
`value_range` or `standardize` (in `color_ops`), images keep their dtype
(uint8 from `decode`) and their [0, 255] range: resizing and colour ops
compute in float32 and round back, which keeps tf.data buffers small and the
convention simple. Ops that
act on the last three axes ([..., H, W, C]) say so; the others need a single
image [H, W, C].
"""
import tensorflow as tf

from selfsup.preprocess import randomness
from selfsup.preprocess.registry import register
from selfsup.core.checks import ConfigError

_RESIZE_METHODS = ("area", "bicubic", "bilinear", "gaussian", "lanczos3",
                   "lanczos5", "mitchellcubic", "nearest")


def to_pair(size, what="size"):
  """Returns (h, w) from an int or a pair of positive ints."""
  pair = (size, size) if isinstance(size, int) else tuple(size)
  if len(pair) != 2 or not all(
      isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
    raise ConfigError(f"{what} must be a positive int or a pair (h, w) of "
                      f"them, got {size!r}")
  return pair


def get_image(features, ranks=(3,)):
  """Returns features["image"] as a tensor after checking its static rank."""
  if "image" not in features:
    raise ConfigError(f"no 'image' in the features (keys: {sorted(features)})")
  image = tf.convert_to_tensor(features["image"])
  if image.shape.rank not in ranks:
    raise ConfigError(f"expected an image of rank {' or '.join(map(str, ranks))}"
                      f", got shape {image.shape}")
  return image


def with_image(features, image):
  """A copy of `features` whose image is `image`."""
  return dict(features, image=image)


def to_dtype(image, dtype):
  """Casts a float image back to `dtype`, rounding and clipping for ints."""
  if dtype.is_integer:
    return tf.saturate_cast(tf.round(image), dtype)
  return tf.cast(image, dtype)


def _check_method(method):
  if method not in _RESIZE_METHODS:
    raise ConfigError(f"unknown resize method {method!r}; choose one of "
                      f"{', '.join(_RESIZE_METHODS)}")


def crop_window(image, y, x, h, w):
  """Crops [..., y:y+h, x:x+w, :], checking the window fits in the image."""
  rank = image.shape.rank
  height, width = image.shape[-3], image.shape[-2]
  if (height is not None and height < h) or (width is not None and width < w):
    raise ConfigError(f"cannot crop {h}x{w} out of an image of shape "
                      f"{image.shape}")
  shape = tf.shape(image)
  checks = [tf.debugging.assert_greater_equal(
      shape[-3:-1], tf.constant([h, w]),
      message=f"cannot crop {h}x{w} out of a smaller image")]
  with tf.control_dependencies(checks):
    begin = tf.stack([0] * (rank - 3) + [y, x, 0])
    out = tf.slice(image, begin, [-1] * (rank - 3) + [h, w, -1])
  out.set_shape(image.shape[:-3].concatenate([h, w, image.shape[-1]]))
  return out


def _crop_offsets(image, h, w, training, seed):
  """Top-left corner of a random (training) or central crop."""
  shape = tf.shape(image)
  room = tf.maximum(shape[-3:-1] - tf.constant([h, w]), 0)
  if training:
    return tuple(tf.unstack(randomness.uniform_int(seed, room, shape=[2])))
  return room[0] // 2, room[1] // 2


@register("decode")
def get_decode():
  """Decodes encoded bytes (JPEG, PNG, GIF, BMP) into uint8 RGB [H, W, 3].

  Grayscale images are repeated to 3 channels and an alpha channel is dropped.
  An image that is already a uint8 [H, W, C] tensor passes through, converted
  the same way when C is 1 or 4.
  """

  def decode(features):
    if "image" not in features:
      raise ConfigError(f"no 'image' in the features (keys: {sorted(features)})")
    image = tf.convert_to_tensor(features["image"])
    if image.dtype == tf.string:
      if image.shape.rank != 0:
        raise ConfigError(f"decode expects one encoded image (a scalar string),"
                          f" got shape {image.shape}")
      image = tf.io.decode_image(image, channels=3, expand_animations=False)
      image.set_shape([None, None, 3])
      return with_image(features, image)
    if image.dtype != tf.uint8 or image.shape.rank != 3:
      raise ConfigError(f"decode expects encoded bytes or a uint8 [H, W, C] "
                        f"image, got {image.dtype.name} of shape {image.shape}")
    channels = image.shape[-1]
    if channels == 1:
      image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
      image = image[..., :3]
    elif channels != 3:
      raise ConfigError(f"decode expects 1, 3 or 4 channels, got {channels}")
    return with_image(features, image)

  return decode


@register("resize")
def get_resize(size, method="bilinear", antialias=True):
  """Resizes [H, W, C] or [N, H, W, C] to `size` (an int or (h, w))."""
  h, w = to_pair(size)
  _check_method(method)

  def resize(features):
    image = get_image(features, ranks=(3, 4))
    out = tf.image.resize(image, (h, w), method=method, antialias=antialias)
    return with_image(features, to_dtype(out, image.dtype))

  return resize


@register("resize_small")
def get_resize_small(smaller_size, method="bilinear", antialias=True):
  """Resizes so that the smaller side is `smaller_size`, keeping the aspect."""
  to_pair(smaller_size, "smaller_size")
  _check_method(method)

  def resize_small(features):
    image = get_image(features, ranks=(3, 4))
    hw = tf.cast(tf.shape(image)[-3:-1], tf.float32)
    scale = smaller_size / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), smaller_size)
    out = tf.image.resize(image, new_hw, method=method, antialias=antialias)
    return with_image(features, to_dtype(out, image.dtype))

  return resize_small


@register("crop")
def get_crop(size, training=True):
  """Crops `size` from [..., H, W, C]: random in training, else central.

  With leading axes, one window is cut from all of them.
  """
  h, w = to_pair(size)

  def crop(features):
    image = get_image(features, ranks=(3, 4, 5))
    seed = None
    if training:
      features, seeds = randomness.take_seeds(features, 1)
      seed = seeds[0]
    y, x = _crop_offsets(image, h, w, training, seed)
    return with_image(features, crop_window(image, y, x, h, w))

  return crop


@register("central_crop")
def get_central_crop(size):
  """Crops the central `size` window of [..., H, W, C]."""
  return get_crop(size, training=False)


@register("inception_crop")
def get_inception_crop(size, area_min=8, area_max=100, aspect_min=3 / 4,
                       aspect_max=4 / 3, central_fraction=0.875,
                       method="bilinear", antialias=True, training=True):
  """Inception-style crop of a random area and aspect, resized to `size`.

  In training, a window covering `area_min`..`area_max` percent of the image
  with aspect ratio (w/h) in [`aspect_min`, `aspect_max`] is cut out and
  resized (the Inception/GoogLeNet augmentation; slim's version used 5..100).
  In evaluation, the central `central_fraction` of each side is kept and
  resized, as slim's Inception preprocessing does.
  """
  h, w = to_pair(size)
  _check_method(method)
  if not 0 < area_min <= area_max <= 100:
    raise ConfigError(f"need 0 < area_min <= area_max <= 100, got "
                      f"{area_min}, {area_max}")
  if not 0 < aspect_min <= aspect_max:
    raise ConfigError(f"need 0 < aspect_min <= aspect_max, got "
                      f"{aspect_min}, {aspect_max}")
  if not 0 < central_fraction <= 1:
    raise ConfigError(f"need 0 < central_fraction <= 1, got {central_fraction}")

  def inception_crop(features):
    image = get_image(features)
    if training:
      features, seeds = randomness.take_seeds(features, 1)
      begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seeds[0],
          min_object_covered=0.0, aspect_ratio_range=(aspect_min, aspect_max),
          area_range=(area_min / 100, area_max / 100), max_attempts=100,
          use_image_if_no_bounding_boxes=True)
      cropped = tf.slice(image, begin, window)
    else:
      cropped = tf.image.central_crop(image, central_fraction)
    out = tf.image.resize(cropped, (h, w), method=method, antialias=antialias)
    out.set_shape([h, w, image.shape[-1]])
    return with_image(features, to_dtype(out, image.dtype))

  return inception_crop


@register("flip_lr")
def get_flip_lr(training=True):
  """Flips [..., H, W, C] left-right with probability 1/2 in training only."""

  def flip_lr(features):
    image = get_image(features, ranks=(3, 4, 5))
    if not training:
      return with_image(features, image)
    features, seeds = randomness.take_seeds(features, 1)
    flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    return with_image(features,
                      tf.where(flip, tf.reverse(image, axis=[-2]), image))

  return flip_lr
