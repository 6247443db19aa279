"""Writing a file so that a reader never sees half of it.

The text goes to `<path>.tmp` first and is renamed over `path` when
complete: a rename is atomic on local and POSIX file systems, so a killed
writer leaves the old file (or none) plus a stray `.tmp`, never a truncated
`path`. Works on any `tf.io.gfile` path (local, gs://, ...); on object
stores the rename is a copy and a delete, still never a partial `path`.
"""
import json

import tensorflow as tf

TMP_SUFFIX = ".tmp"


def atomic_write(path: str, data, mode: str = "w") -> None:
  """Writes `data` (str, or bytes with mode="wb") to `path` atomically."""
  tmp = path + TMP_SUFFIX
  with tf.io.gfile.GFile(tmp, mode) as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json(path: str, obj, *, indent=1, sort_keys: bool = False) -> None:
  """`obj` as JSON at `path`, atomically (a trailing newline included)."""
  atomic_write(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) +
               "\n")
