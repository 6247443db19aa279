"""Writing a file so that a reader never sees half of it.

The text goes to `<path>.<host>-<pid>-<random>.tmp` first (a name no other
process writes, so two writers never mix their bytes) and is renamed over
`path` when complete: a rename is atomic on local and POSIX file systems, so
a killed writer leaves the old file (or none) plus a stray `.tmp`, never a
truncated `path`; a failed write (a full disk) removes its `.tmp` and
raises. A rewritten file keeps the permissions of the file it replaces.
Remote paths (gs://, ...) go through `tf.io.gfile`, where the rename of an
object store is a copy and a delete: still never a partial `path`.
Local writes do not import TensorFlow (the study runner and the demo use
this without it).
"""
import json
import os
import stat

from selfsup.core.errors import WorkdirError

TMP_SUFFIX = ".tmp"


def read_record(path: str, kind: type, *, damaged: str, wrong: str):
  """The JSON value of an existing record file, checked to be a `kind`
  (dict or list of dicts). A file that does not parse raises WorkdirError
  "<path> is not valid JSON (...): <damaged>"; one of another shape raises
  "<path> <wrong>". Remote paths are read through `tf.io.gfile`."""
  try:
    if "://" in path:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(path) as f:
        value = json.load(f)
    else:
      with open(path, encoding="utf-8") as f:
        value = json.load(f)
  except (ValueError, UnicodeDecodeError) as err:
    raise WorkdirError(f"{path} is not valid JSON ({err}): {damaged}") \
        from err
  shaped = isinstance(value, kind) and (
      kind is not list or all(isinstance(e, dict) for e in value))
  if not shaped:
    raise WorkdirError(f"{path} {wrong}")
  return value


def atomic_write(path: str, data, mode: str = "w") -> None:
  """Writes `data` (str, or bytes with mode="wb") to `path` atomically."""
  tmp = f"{path}.{_owner_tag()}{TMP_SUFFIX}"
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      with tf.io.gfile.GFile(tmp, mode) as f:
        f.write(data)
      tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
      _discard(tmp, tf.io.gfile.remove)
      raise
    return
  _remove_stale(path)
  try:
    with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    _keep_mode(path, tmp)
    os.replace(tmp, path)
  except BaseException:
    _discard(tmp, os.remove)
    raise


def _owner_tag():
  from selfsup.core import lock  # pylint: disable=g-import-not-at-top
  return lock.owner_tag()


def _remove_stale(path):
  """Removes the `.tmp` files of `path` that writers killed on this host
  left; those of live processes (or of other hosts) stay."""
  from selfsup.core import lock  # pylint: disable=g-import-not-at-top
  folder, base = os.path.split(os.path.abspath(path))
  prefix = base + "."
  try:
    names = [n for n in os.listdir(folder)
             if n.startswith(prefix) and n.endswith(TMP_SUFFIX)]
  except OSError:
    return
  for name in names:
    owner = name[len(prefix):-len(TMP_SUFFIX)]
    if name == base + TMP_SUFFIX or not lock.owned_by_live_process(owner):
      _discard(os.path.join(folder, name), os.remove)


def _keep_mode(path, tmp):
  """Gives `tmp` the permission bits of the file it is about to replace (a
  new file keeps the umask's)."""
  try:
    mode = stat.S_IMODE(os.stat(path).st_mode)
  except FileNotFoundError:
    return
  os.chmod(tmp, mode)


def _discard(tmp, remove):
  try:
    remove(tmp)
  except Exception:  # pylint: disable=broad-except
    pass  # never written, or the file system is gone: the error says why


def write_json(path: str, obj, *, indent=1, sort_keys: bool = False,
               default=None) -> None:
  """`obj` as JSON at `path`, atomically (a trailing newline included)."""
  atomic_write(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                default=default) + "\n")
