"""The fixed set of 100 Jigsaw permutations of Noroozi & Favaro (2016).

The set ships with the package as `selfsup/assets/permutations_100_max.bin`,
the file the authors' code read: little-endian int32 values, first the number
of permutations and their length, then the permutations row by row, with
patch indices counted from 1. It is the "maximal Hamming distance" set: any
two permutations differ in many positions, which makes them easy to tell
apart.
"""
import functools
import importlib.resources
import struct

import numpy as np

from selfsup.core import errors

_ASSET = "permutations_100_max.bin"


def parse_permutations(data, source="<bytes>"):
  """Parses and validates the binary permutation format.

  Args:
    data: the file's bytes.
    source: where they came from, for error messages.

  Returns:
    int32 array [count, length] of 0-based permutations.

  Raises:
    ValueError: if the bytes are truncated or a row is not a permutation of
      0..length-1 or two rows are equal.
  """
  if len(data) < 8:
    raise errors.DataError(f"{source}: too short for the 8-byte header "
                           f"({len(data)} bytes).")
  count, length = struct.unpack("<ii", data[:8])
  if count <= 0 or length <= 0 or len(data) != 8 + 4 * count * length:
    raise errors.DataError(
        f"{source}: header says {count} permutations of length {length}, "
        f"which needs {8 + 4 * max(count * length, 0)} bytes; the file has "
        f"{len(data)}.")
  perms = np.frombuffer(data, dtype="<i4", offset=8).reshape(count, length)
  perms = perms.astype(np.int32) - 1
  expected = np.arange(length)
  bad = [i for i, row in enumerate(perms)
         if not np.array_equal(np.sort(row), expected)]
  if bad:
    raise errors.DataError(
        f"{source}: row {bad[0]} ({(perms[bad[0]] + 1).tolist()}, 1-based) "
        f"is not a permutation of 1..{length}.")
  if len(np.unique(perms, axis=0)) != count:
    raise errors.DataError(f"{source}: the {count} permutations are not distinct.")
  return perms


@functools.lru_cache(maxsize=None)
def _load(path):
  if path is None:
    resource = importlib.resources.files("selfsup") / "assets" / _ASSET
    return parse_permutations(resource.read_bytes(), f"selfsup/assets/{_ASSET}")
  with open(path, "rb") as f:
    return parse_permutations(f.read(), path)


def load_permutations(path=None):
  """Loads the Jigsaw permutations.

  Args:
    path: a file in the same format to read instead of the packaged set.

  Returns:
    int32 array [100, 9] for the packaged set; row r is permutation r, whose
    entries are 0-based patch indices (see the `jigsaw` op for how a
    permutation is applied). A fresh copy each call.

  Raises:
    ValueError: if the file is malformed (see `parse_permutations`).
  """
  return _load(None if path is None else str(path)).copy()
