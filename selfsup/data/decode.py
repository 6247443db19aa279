"""Decoding images to RGB uint8, and finding the files that do not decode.

TensorFlow's `decode_image` reads JPEG (including CMYK and grayscale JPEG), PNG
(grayscale, palette, alpha, 16 bit), GIF, BMP and WebP. Asking it for three
channels turns all of them into RGB uint8, so one op serves every source, and
the scan below uses the very same op: a file it accepts is a file the input
pipeline can decode.

Before decoding, the image's size is read from its header (JPEG, PNG, GIF,
BMP, WebP) and an image of more than `MAX_PIXELS` pixels is refused with an
error naming its size: a 20000 x 20000 PNG of a few kilobytes would
otherwise take gigabytes to decode. The scan counts such files as bad.
"""
import concurrent.futures
import os

from absl import logging
import tensorflow as tf

from selfsup.core import errors


class DataNotFoundError(errors.SelfsupError, FileNotFoundError):
  """A source's data is not where it was looked for (nothing is downloaded)."""


class BadImagesError(errors.DataError):
  """Too many files of a source do not decode as images."""


# 100 megapixels: 300 MB as RGB uint8, far above any photograph the paper's
# data sets hold (ImageNet's largest is about 9 megapixels).
MAX_PIXELS = 100_000_000
_TOO_LARGE = "pixels, more than selfsup.data.decode.MAX_PIXELS"


def _uint(raw, start, length, big_endian=False):
  """The unsigned integer in bytes [start, start + length) of `raw` (int64
  bytes of a header)."""
  value = tf.constant(0, tf.int64)
  order = range(length) if big_endian else reversed(range(length))
  for i in order:
    value = value * 256 + raw[start + i]
  return value


def header_size(encoded):
  """(height, width) from the header of an encoded image (int64 scalars,
  (0, 0) for a format it does not know), read without decoding."""
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(
      tf.strings.join([encoded, tf.constant(b"\0" * 32)]), 0, 32),
                                 tf.uint8), tf.int64)
  magic = lambda start, text: tf.equal(  # noqa: E731
      tf.strings.substr(encoded, start, len(text)), text)
  zero = tf.constant(0, tf.int64)

  def bmp():  # int32 little-endian, negative height for top-down rows
    h = _uint(raw, 22, 4)
    return tf.where(h >= 2**31, 2**32 - h, h), _uint(raw, 18, 4)

  def webp():
    vp8x = (_uint(raw, 27, 3) + 1, _uint(raw, 24, 3) + 1)
    lossy = (_uint(raw, 28, 2) % 16384, _uint(raw, 26, 2) % 16384)
    bits = _uint(raw, 21, 4)
    lossless = ((bits // 16384) % 16384 + 1, bits % 16384 + 1)
    kind = tf.strings.substr(encoded, 12, 4)
    return tuple(tf.where(tf.equal(kind, "VP8X"), a, tf.where(
        tf.equal(kind, "VP8L"), c, b)) for a, b, c in zip(vp8x, lossy,
                                                         lossless))

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return shape[0], shape[1]

  branches = [
      (magic(0, b"\x89PNG"), lambda: (_uint(raw, 20, 4, True),
                                      _uint(raw, 16, 4, True))),
      (magic(0, b"GIF8"), lambda: (_uint(raw, 8, 2), _uint(raw, 6, 2))),
      (magic(0, b"BM"), bmp),
      (magic(0, b"RIFF") & magic(8, b"WEBP"), webp),
      (tf.io.is_jpeg(encoded), jpeg),
  ]
  size = (zero, zero)
  for condition, read in reversed(branches):
    size = tf.cond(condition, read, lambda s=size: s)
  return size


def _check_size(encoded):
  """An op that fails (InvalidArgumentError) on images of more than
  `MAX_PIXELS` pixels, naming their size."""
  height, width = header_size(encoded)
  return tf.debugging.Assert(
      height * width <= MAX_PIXELS,
      [tf.strings.format(f"image of {{}} x {{}} {_TOO_LARGE} "
                         f"({MAX_PIXELS}): refused before decoding",
                         (height, width))])


def decode_rgb(encoded):
  """Decodes an encoded image (scalar string tensor) to uint8 [H, W, 3] RGB."""
  # expand_animations=False keeps GIFs at rank 3 (their first frame), so every
  # format gives the same static rank.
  with tf.control_dependencies([_check_size(encoded)]):
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                               expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _decodes(path):
  try:
    decode_rgb(tf.io.read_file(path))
    return True
  except tf.errors.OpError as err:  # undecodable, unreadable, a directory
    message = getattr(err, "message", str(err))
    if _TOO_LARGE in message:
      logging.warning("%s: %s", path, message[message.index("image of"):]
                      .splitlines()[0])
    return False


def find_bad_images(paths, num_threads=None):
  """Returns the paths, in order, of the files that do not decode.

  Every file is read and fully decoded (a truncated JPEG only fails at its
  end), in a thread pool: TensorFlow releases the GIL while it decodes.

  Args:
    paths: file paths (local or any `tf.io.gfile` file system).
    num_threads: worker threads; default 4 per core, at most 32, because on
      network file systems the time goes into waiting for reads.
  """
  if num_threads is None:
    num_threads = min(32, 4 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    ok = list(pool.map(_decodes, paths, chunksize=64))
  return [p for p, good in zip(paths, ok) if not good]


def check_bad_images(paths, *, where, max_bad_fraction):
  """Scans `paths`, logs the files that do not decode and returns them.

  Args:
    paths: list of file paths.
    where: what the files are, for the messages (e.g. the folder).
    max_bad_fraction: the largest fraction of bad files that is skipped with a
      warning; more raises.

  Returns:
    The bad paths, a list (empty when all decode).

  Raises:
    BadImagesError: when more than `max_bad_fraction` of the files are bad.
  """
  bad = find_bad_images(paths)
  if not bad:
    return []
  names = ", ".join(bad[:20]) + (f", ... ({len(bad) - 20} more)"
                                 if len(bad) > 20 else "")
  if len(bad) > max_bad_fraction * len(paths):
    raise BadImagesError(
        f"{len(bad)} of {len(paths)} files in {where} do not decode as "
        f"images, more than max_bad_fraction={max_bad_fraction}: {names}. "
        "Remove or replace them, or raise max_bad_fraction.")
  logging.warning("Skipping %d of %d files in %s that do not decode as "
                  "images: %s", len(bad), len(paths), where, names)
  return bad
