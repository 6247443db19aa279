"""Decoding images to RGB uint8, and finding the files that do not decode.

TensorFlow's `decode_image` reads JPEG (including CMYK and grayscale JPEG), PNG
(grayscale, palette, alpha, 16 bit), GIF, BMP and WebP. Asking it for three
channels turns all of them into RGB uint8, so one op serves every source, and
the scan below uses the very same op: a file it accepts is a file the input
pipeline can decode.
"""
import concurrent.futures
import os

from absl import logging
import tensorflow as tf


class DataNotFoundError(FileNotFoundError):
  """A source's data is not where it was looked for (nothing is downloaded)."""


class BadImagesError(ValueError):
  """Too many files of a source do not decode as images."""


def decode_rgb(encoded):
  """Decodes an encoded image (scalar string tensor) to uint8 [H, W, 3] RGB."""
  # expand_animations=False keeps GIFs at rank 3 (their first frame), so every
  # format gives the same static rank.
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _decodes(path):
  try:
    decode_rgb(tf.io.read_file(path))
    return True
  except tf.errors.OpError:  # undecodable, unreadable, a directory, ...
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
