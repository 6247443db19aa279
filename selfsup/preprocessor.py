"""`ImagePreprocessor`: a representation's evaluation preprocessing as a
Keras layer of its own (what `Representation` runs before its backbone).

    prep = ImagePreprocessor("decode|resize_small(256)|central_crop(224)|"
                             "value_range(-1, 1)")
    ds = ds.map(lambda x, y: (prep(x), y))   # in tf.data, batched or not

It takes images as people have them: uint8 (or float in [0, 255]), 1, 3 or 4
channels, [H, W, C] or a batch [B, H, W, C] of any size, and gives the
backbone's input: [B, S, S, 3], or [B, 9, p, p, 3] for patch specs.

Two ways to resize:

* `portable=False` (default): the spec's ops as the evaluation runs them
  (`tf.image.resize(..., antialias=True)`: TensorFlow's ScaleAndTranslate,
  which neither TFLite nor XLA has). The layer matches the evaluation.
* `portable=True`: for TFLite (built-in ops only) and XLA
  (`jit_compile=True`): the input size must be fixed (known when the model is
  built); downscaling antialiases by averaging whole factor x factor blocks
  (average pooling) and then resizes bilinearly without antialiasing, crops
  and patches are static slices, rounding to uint8 is round/min/max. Close to
  the evaluation's preprocessing, not equal to it (tests/test_keras_layer.py
  measures the difference).
"""
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from selfsup.preprocess import registry as spec_registry
from selfsup.core.checks import ConfigError

# Ops that only take one image [H, W, C]: run image by image (tf.map_fn).
_PER_IMAGE_OPS = ("crop_patches", "inception_crop")
# Ops that make pretext examples: not a representation's preprocessing.
_PRETEXT_OPS = ("rotate", "jigsaw", "jigsaw_shared", "relative_patch_location",
                "exemplar")
# What the portable path implements itself; other ops run as registered.
_PORTABLE_OPS = ("resize", "resize_small", "central_crop", "crop_patches",
                 "value_range", "standardize")
_UNIT_RANGE_WARNING = (
    "selfsup: float images whose values all lie in [0, 1] reached a "
    "Representation/ImagePreprocessor, which expects pixel values in [0, 255] "
    "(uint8, or float as decoded). Multiply by 255 first (Keras' "
    "image_dataset_from_directory gives [0, 255]; a Rescaling(1/255) layer "
    "does not belong in front of selfsup).")
_warned = []


def parse_spec(spec):
  """(spec string, [(name, args, kwargs, fn)]) of an evaluation spec's ops,
  `decode` left out (the layer converts channels itself; it receives pixels,
  never encoded bytes)."""
  if isinstance(spec, dict):
    if "eval" not in spec:
      raise ConfigError(f"spec={spec!r} is not valid: expected a spec string or "
                        "a specs dict with an 'eval' entry (info.json's "
                        "eval_specs).")
    spec = spec["eval"]
  if not isinstance(spec, str):
    raise ConfigError(f"spec={spec!r} is not valid: expected a preprocessing "
                      "spec string such as info.json's eval_specs['eval'].")
  spec_registry.get(spec, training=False)  # one clear error for a bad spec
  ops = []
  for text in spec_registry._split_ops(spec) if spec.strip() else []:  # pylint: disable=protected-access
    name, args, kwargs = spec_registry._parse_op(text)  # pylint: disable=protected-access
    if name in _PRETEXT_OPS:
      raise ConfigError(f"spec={spec!r} is not valid for a Representation: op "
                        f"{name!r} makes pretext examples; give the evaluation "
                        "spec (info.json's eval_specs['eval']).")
    if name != "decode":
      ops.append((name, args, kwargs, spec_registry.get(text, training=False)))
  return spec, ops


def warn_unit_range(images):
  """Warns once per process when float `images` (a value, not a graph
  tensor) all lie in [0, 1]: a common Keras habit that gives wrong features
  here without any error."""
  if _warned or images.dtype.is_integer or not tf.executing_eagerly():
    return
  if tf.size(images) and float(tf.reduce_max(images)) <= 1.0 and float(
      tf.reduce_min(images)) >= 0.0:
    _warned.append(True)
    warnings.warn(_UNIT_RANGE_WARNING, UserWarning, stacklevel=3)


def _graph_unit_range_check(images):
  """Inside a traced function (fit, predict) the values are not known when
  Python runs: print the warning on stderr from the graph for every batch
  that looks like [0, 1]."""
  looks_unit = tf.logical_and(tf.reduce_max(images) <= 1.0,
                              tf.reduce_min(images) >= 0.0)

  def say():
    tf.print(_UNIT_RANGE_WARNING, output_stream=sys.stderr)
    return tf.constant(0)

  return tf.cond(looks_unit, say, lambda: tf.constant(0))


def to_rgb(x):
  """1, 3 or 4 channels -> 3, as `decode`. A channel count unknown when the
  graph is traced (Keras retraces with relaxed shapes: a model that saw RGB
  then sees gray) is handled at run time, with a run-time check."""
  channels = x.shape[-1]
  if channels == 1:
    return tf.tile(x, [1, 1, 1, 3])
  if channels == 4:
    return x[..., :3]
  if channels == 3:
    return x
  if channels is not None:
    raise ConfigError(f"Representation expects 1, 3 or 4 channels (gray, "
                      f"RGB, RGBA), got shape {x.shape}.")
  count = tf.shape(x)[-1]
  check = tf.debugging.Assert(
      tf.reduce_any(tf.equal(count, [1, 3, 4])),
      ["Representation expects 1, 3 or 4 channels (gray, RGB, RGBA), got",
       count])
  with tf.control_dependencies([check]):
    index = tf.where(tf.equal(count, 1), tf.zeros([3], tf.int32),
                     tf.range(3))
    out = tf.gather(x, index, axis=-1)
  return tf.ensure_shape(out, x.shape[:-1].concatenate([3]))


def _pair(value):
  return (value, value) if isinstance(value, int) else tuple(value)


def _resize_small_size(height, width, smaller):
  """The size `resize_small` gives (its float32 arithmetic, round half to
  even as tf.round)."""
  hw = np.array([height, width], np.float32)
  scale = np.float32(smaller) / hw.min()
  new = np.maximum(np.round(hw * scale).astype(np.int32), smaller)
  return int(new[0]), int(new[1])


def portable_resize(x, size, rounded):
  """[B, H, W, C] float (H, W static) -> [B, h, w, C] with built-in ops only:
  average pooling by the whole downscaling factor, then bilinear."""
  height, width = x.shape[1], x.shape[2]
  fh, fw = max(height // size[0], 1), max(width // size[1], 1)
  if fh > 1 or fw > 1:
    x = tf.nn.avg_pool2d(x, (fh, fw), (fh, fw), "VALID")
  if tuple(x.shape[1:3]) != tuple(size):
    x = tf.image.resize(x, size, method="bilinear", antialias=False)
  if rounded:  # as the uint8 pipeline rounds after each resize
    x = tf.minimum(tf.maximum(tf.round(x), 0.0), 255.0)
  return x


def _central(x, size):
  height, width = x.shape[-3], x.shape[-2]
  if height < size[0] or width < size[1]:
    raise ConfigError(f"cannot crop {size[0]}x{size[1]} out of images of "
                      f"shape {x.shape}")
  y, z = (height - size[0]) // 2, (width - size[1]) // 2
  return x[..., y:y + size[0], z:z + size[1], :]


def _portable_patches(x, grid=3, jitter=0, patch=None, training=False):
  del training
  cell = (x.shape[1] // grid, x.shape[2] // grid)
  size = _pair(patch) if patch is not None else (cell[0] - jitter,
                                                 cell[1] - jitter)
  dy, dx = (cell[0] - size[0]) // 2, (cell[1] - size[1]) // 2
  patches = [x[:, r * cell[0] + dy:r * cell[0] + dy + size[0],
               c * cell[1] + dx:c * cell[1] + dx + size[1], :]
             for r in range(grid) for c in range(grid)]
  return tf.stack(patches, axis=1)


def _portable_standardize(x):
  mean = tf.reduce_mean(x, axis=[-3, -2, -1], keepdims=True)
  var = tf.reduce_mean(tf.square(x - mean), axis=[-3, -2, -1], keepdims=True)
  count = float(np.prod(x.shape[-3:]))
  std = tf.maximum(tf.sqrt(var), 1.0 / np.sqrt(count))
  return (x - mean) / std


def _portable_op(name, args, kwargs, x, rounded):
  """One op of the portable path on a batch with a static size."""
  if name == "resize":
    return portable_resize(x, _pair(args[0] if args else kwargs["size"]),
                           rounded)
  if name == "resize_small":
    smaller = args[0] if args else kwargs["smaller_size"]
    return portable_resize(
        x, _resize_small_size(x.shape[1], x.shape[2], smaller), rounded)
  if name == "central_crop":
    return _central(x, _pair(args[0] if args else kwargs["size"]))
  if name == "crop_patches":
    return _portable_patches(x, *args, **kwargs)
  if name == "value_range":
    vmin, vmax, in_min, in_max = (list(args) + [-1.0, 1.0, 0.0, 255.0][
        len(args):])
    vmin, vmax = kwargs.get("vmin", vmin), kwargs.get("vmax", vmax)
    in_min, in_max = kwargs.get("in_min", in_min), kwargs.get("in_max", in_max)
    return vmin + (x - in_min) * ((vmax - vmin) / (in_max - in_min))
  return _portable_standardize(x)


@keras.saving.register_keras_serializable(package="selfsup")
class ImagePreprocessor(keras.layers.Layer):
  """Images -> a backbone's inputs, by an evaluation spec (module docstring).

  Args:
    spec: a preprocessing spec string (info.json's `eval_specs["eval"]`) or
      the whole `eval_specs` dict.
    portable: built-in ops only, for TFLite and XLA, at a fixed input size.
    check_range: warn when float images look like [0, 1] (eagerly once per
      process; inside a traced function on stderr for each such batch).
      Portable layers never check inside a graph (TFLite has no print).
  """

  def __init__(self, spec, portable=False, check_range=True, **kwargs):
    kwargs.setdefault("autocast", False)
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    if not isinstance(portable, bool):
      raise ConfigError(f"portable={portable!r} is not valid: expected True "
                        "(TFLite/XLA at a fixed size) or False.")
    self.spec, self._ops = parse_spec(spec)
    if portable:
      odd = [name for name, *_ in self._ops if name not in _PORTABLE_OPS]
      if odd:
        raise ConfigError(f"spec={self.spec!r} is not valid with portable=True:"
                          f" ops {odd} have no portable form (it knows "
                          f"{_PORTABLE_OPS}).")
    self.portable = portable
    self.check_range = bool(check_range)
    self.patch_based = any(op[0] == "crop_patches" for op in self._ops)
    self.supports_jit = portable

  def build(self, input_shape=None):
    del input_shape  # no weights: every size and channel count is welcome
    self.built = True

  def call(self, images):
    x = tf.convert_to_tensor(images)
    single = x.shape.rank == 3
    if single:  # one image, e.g. in tf.data before batching
      x = x[None]
    if x.shape.rank != 4:
      raise ConfigError(f"Representation expects a batch of images [batch, "
                        f"height, width, channels], got shape {x.shape}.")
    if x.dtype != tf.uint8 and self.check_range:
      warn_unit_range(x)
    rounded = x.dtype == tf.uint8
    if not rounded:
      x = tf.cast(x, tf.float32)
    x = to_rgb(x)
    if self.portable:
      x = self._portable(x, rounded)
    else:
      if not rounded and self.check_range and not tf.executing_eagerly():
        with tf.control_dependencies([_graph_unit_range_check(x)]):
          x = tf.identity(x)
      x = self._ops_as_registered(x)
    x = tf.cast(x, tf.float32)
    return x[0] if single else x

  def _ops_as_registered(self, x):
    for name, _, _, fn in self._ops:
      if name in _PER_IMAGE_OPS:
        x = tf.map_fn(lambda image, fn=fn: fn({"image": image})["image"], x,
                      fn_output_signature=x.dtype)
      else:
        x = fn({"image": x})["image"]
    return x

  def _portable(self, x, rounded):
    if x.shape[1] is None or x.shape[2] is None:
      raise ConfigError(
          f"portable=True needs images of a fixed size, got shape {x.shape}: "
          "build the model on keras.Input((height, width, 3)) with both "
          "known.")
    x = tf.cast(x, tf.float32)
    for name, args, kwargs, _ in self._ops:
      x = _portable_op(name, args, kwargs, x, rounded)
      if name in ("value_range", "standardize"):
        rounded = False
    return x

  def get_config(self):
    return {**super().get_config(), "spec": self.spec,
            "portable": self.portable, "check_range": self.check_range}
