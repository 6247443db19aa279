"""Writing a file so that a reader never sees half of it.

The text goes to `<path>.tmp` first and is renamed over `path` when
complete: a rename is atomic on local and POSIX file systems, so a killed
writer leaves the old file (or none) plus a stray `.tmp`, never a truncated
`path`. Remote paths (gs://, ...) go through `tf.io.gfile`, where the rename
of an object store is a copy and a delete: still never a partial `path`.
Local writes do not import TensorFlow (the study runner and the demo use
this without it).
"""
import json
import os

TMP_SUFFIX = ".tmp"


def atomic_write(path: str, data, mode: str = "w") -> None:
  """Writes `data` (str, or bytes with mode="wb") to `path` atomically."""
  tmp = path + TMP_SUFFIX
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(tmp, mode) as f:
      f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return
  with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj, *, indent=1, sort_keys: bool = False,
               default=None) -> None:
  """`obj` as JSON at `path`, atomically (a trailing newline included)."""
  atomic_write(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                default=default) + "\n")
