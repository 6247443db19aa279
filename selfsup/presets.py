"""Pretrained presets: a table of published models, and their download cache.

    layer = selfsup.Representation.from_preset("vtab/rotation/1")
    backbone = selfsup.models.from_preset("vtab/rotation/1")
    $ selfsup presets                       # the table

`PRESETS` is data: name -> where the weights are (a TF-Hub handle), what
they are (architecture, task, training data), what their publication reports
and where it comes from. What this file could not verify says "unverified"
rather than a guess; the width is read off the checkpoint
(`selfsup.models.load_tf1(path, "auto")`) instead of being stated.

Download happens only when asked (`fetch`, or a `from_preset` call: the call
is the request), never at import. The compressed form of the handle
(`<hub>/<handle>?tf-hub-format=compressed`, `SELFSUP_HUB_URL` overrides
`https://tfhub.dev`) is streamed into a scratch file under the cache
(`SELFSUP_HOME`, default `~/.cache/selfsup`; `presets/` inside), its length
checked against Content-Length, unpacked into a scratch folder, checked to
hold a TF1 module (`variables/variables.index`), and only then renamed into
place: an interrupted or corrupt download is never taken for a whole one; a
killed process's scratch is removed by the next call. The tarball's sha256
is recorded at the first download (`presets/sha256.json`; the table's own
`sha256` where it has one) and checked on every later use and download.
`SELFSUP_OFFLINE=1` (or `download=False`) never touches the network: a
preset not in the cache fails with one line saying how to get it, and
`source=` takes a local module folder or tarball instead.

Imports no TensorFlow (`selfsup presets` answers at once).
"""
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import uuid
import zlib

from selfsup.core import files
from selfsup.core.errors import PresetError

HUB_URL = "https://tfhub.dev"
_CHUNK = 1 << 20
_SCRATCH = ".part-"
_VARIABLES = os.path.join("variables", "variables.index")

_VTAB = ("Zhai et al. 2019, 'A Large-scale Study of Representation Learning "
         "with the Visual Task Adaptation Benchmark' (arXiv:1910.04867); "
         "TF-Hub collection vtab")
_S4L = ("Zhai et al. 2019, 'S4L: Self-Supervised Semi-Supervised Learning' "
        "(ICCV 2019), evaluated in VTAB (arXiv:1910.04867)")
# The vtab model cards: "ResNet50-v2 representation", input "color values in
# the range [0,1]" (read from the card of vtab/sup-100/1; the issue's list
# gives the same for all nine). The module's graph takes [0, 1]; selfsup
# loads the variables alone and feeds them what the authors' preprocessing
# gave their ResNets, [-1, 1] (inception_preprocess / -1_to_1 in
# google/revisiting-self-supervised): unverified against the vtab graphs.
_INPUT = ("module: [0, 1] (model card); backbone variables: [-1, 1], as the "
          "authors' preprocessing (unverified for the vtab graphs)")
_PATCH_INPUT = ("module: [0, 1] (model card); selfsup: 3x3 standardised "
                "patches, as the paper evaluates patch tasks (unverified "
                "against the vtab graph)")


def _vtab(handle, task, data, source=_VTAB, input_=_INPUT):
  return {"handle": handle, "architecture": "resnet50_v2", "width": None,
          "task": task, "training_data": data, "accuracy": "unverified",
          "source": source, "input": input_, "sha256": None}


_IMAGENET = "ImageNet ILSVRC-2012 train (1.28M images)"
PRESETS = {
    "vtab/rotation/1": _vtab("vtab/rotation/1", "rotation",
                             f"{_IMAGENET}, no labels"),
    "vtab/exemplar/1": _vtab("vtab/exemplar/1", "exemplar",
                             f"{_IMAGENET}, no labels"),
    "vtab/relative-patch-location/1": _vtab(
        "vtab/relative-patch-location/1", "relative_patch_location",
        f"{_IMAGENET}, no labels", input_=_PATCH_INPUT),
    "vtab/jigsaw/1": _vtab("vtab/jigsaw/1", "jigsaw",
                           f"{_IMAGENET}, no labels", input_=_PATCH_INPUT),
    "vtab/semi-rotation-10/1": _vtab(
        "vtab/semi-rotation-10/1", "rotation",
        f"{_IMAGENET}, labels of 10% (rotation + supervised)", _S4L),
    "vtab/semi-exemplar-10/1": _vtab(
        "vtab/semi-exemplar-10/1", "exemplar",
        f"{_IMAGENET}, labels of 10% (exemplar + supervised)", _S4L),
    "vtab/sup-rotation-100/1": _vtab(
        "vtab/sup-rotation-100/1", "rotation",
        f"{_IMAGENET}, all labels (rotation + supervised)", _S4L),
    "vtab/sup-exemplar-100/1": _vtab(
        "vtab/sup-exemplar-100/1", "exemplar",
        f"{_IMAGENET}, all labels (exemplar + supervised)", _S4L),
    "vtab/sup-100/1": _vtab("vtab/sup-100/1", "supervised",
                            f"{_IMAGENET}, all labels"),
}
COLUMNS = ("name", "architecture", "width", "task", "training_data",
           "accuracy", "source")


def names():
  return sorted(PRESETS)


def get(name):
  """The table entry of `name` (a copy); PresetError listing the names."""
  if not isinstance(name, str) or name not in PRESETS:
    raise PresetError(f"Unknown preset {name!r}: expected one of {names()} "
                      "(`selfsup presets` lists them).")
  return dict(PRESETS[name], name=name)


def table():
  """The presets as text, one line each (what `selfsup presets` prints)."""
  rows = [COLUMNS] + [
      tuple(str(get(n)[c] if c != "width" else get(n)[c] or "from checkpoint")
            for c in COLUMNS) for n in names()]
  widths = [max(len(r[i]) for r in rows[:]) for i in range(len(COLUMNS) - 1)]
  lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1]
           for r in rows]
  return "\n".join(lines)


def home():
  """The cache folder: `$SELFSUP_HOME` or `~/.cache/selfsup`."""
  return os.path.expanduser(os.environ.get("SELFSUP_HOME")
                            or os.path.join("~", ".cache", "selfsup"))


def url(name):
  base = os.environ.get("SELFSUP_HUB_URL") or HUB_URL
  return f"{base.rstrip('/')}/{get(name)['handle']}?tf-hub-format=compressed"


def _paths(name):
  root = os.path.join(home(), "presets")
  slug = name.replace("/", "__")
  return root, os.path.join(root, slug), os.path.join(root, slug + ".tar.gz")


def _records(root):
  try:
    with open(os.path.join(root, "sha256.json"), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _record(root, name, digest, size, source):
  records = _records(root)
  records[name] = {"sha256": digest, "bytes": size, "url": source}
  files.atomic_write(os.path.join(root, "sha256.json"),
                     json.dumps(records, indent=1, sort_keys=True))


def _expected_sha256(root, name):
  return get(name).get("sha256") or _records(root).get(name, {}).get("sha256")


def sha256_of(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale_scratch(root):
  """Scratch files and folders of killed downloads (`.part-<pid>-...`)."""
  if not os.path.isdir(root):
    return
  for entry in os.listdir(root):
    if not entry.startswith(_SCRATCH):
      continue
    pid = entry[len(_SCRATCH):].split("-", 1)[0]
    if pid.isdigit() and not _alive(int(pid)):
      path = os.path.join(root, entry)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        try:
          os.remove(path)
        except OSError:
          pass


def _scratch(root):
  return os.path.join(root, f"{_SCRATCH}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _download(source, target, timeout):
  """Streams `source` to `target`; (sha256, bytes). PresetError when the
  connection fails or ends before Content-Length."""
  digest, size = hashlib.sha256(), 0
  try:
    with urllib.request.urlopen(source, timeout=timeout) as response, open(
        target, "wb") as out:
      expected = response.headers.get("Content-Length")
      for chunk in iter(lambda: response.read(_CHUNK), b""):
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
  except (urllib.error.URLError, OSError, ValueError) as err:
    raise PresetError(f"Downloading {source} failed ({err}): nothing was "
                      "kept; try again, or pass a local copy as source=.")
  if expected is not None and size != int(expected):
    raise PresetError(f"Download of {source} is truncated: {size} of "
                      f"{expected} bytes arrived; nothing was kept, try "
                      "again.")
  return digest.hexdigest(), size


def _check_gzip(path):
  """Reads a gzip file to its end: its CRC and length are checked only
  there, and tar stops reading at its end-of-archive blocks, before it."""
  with open(path, "rb") as f:
    if f.read(2) != b"\x1f\x8b":
      return
  with gzip.open(path, "rb") as f:
    while f.read(_CHUNK):
      pass


def _unpack(tarball, folder, what):
  """Unpacks a module tarball into `folder` (which must not exist) and checks
  it holds a TF1 module. PresetError for a truncated or corrupt archive."""
  os.makedirs(folder)
  try:
    _check_gzip(tarball)
    with tarfile.open(tarball, "r:*") as archive:
      archive.extractall(folder, filter="data")
  except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
    raise PresetError(f"{what} is not a whole module tarball (truncated or "
                      f"corrupt: {err}); nothing was kept.") from None
  if not os.path.exists(os.path.join(folder, _VARIABLES)):
    raise PresetError(f"{what} holds no TF1 module: {_VARIABLES} is missing.")


def _check_cached(root, name, tarball):
  want = _expected_sha256(root, name)
  if want and os.path.exists(tarball):
    got = sha256_of(tarball)
    if got != want:
      raise PresetError(
          f"The cached preset {name!r} ({tarball}) has sha256 {got}, not the "
          f"{want} recorded at its first download: it was changed or damaged;"
          f" delete {tarball} and its folder to download it again.")


def fetch(name, *, download=None, timeout=60):
  """The unpacked module folder of preset `name`, downloaded if needed.

  Args:
    name: a preset name (`names()`).
    download: allow the network; None: unless `SELFSUP_OFFLINE=1`.
    timeout: seconds of silence before a download fails.

  Raises:
    PresetError: unknown name, not cached while offline, or a download that
      is truncated, corrupt or not the one recorded (nothing is kept then).
  """
  get(name)
  if download is None:
    download = os.environ.get("SELFSUP_OFFLINE", "") in ("", "0")
  root, folder, tarball = _paths(name)
  _remove_stale_scratch(root)
  if os.path.exists(os.path.join(folder, _VARIABLES)):
    _check_cached(root, name, tarball)
    return folder
  if not download:
    raise PresetError(
        f"Preset {name!r} is not downloaded (looked in {folder}) and "
        f"downloads are off: run once online (SELFSUP_OFFLINE unset), or "
        f"download {url(name)} yourself and pass it: "
        f"from_preset({name!r}, source='module.tar.gz').")
  os.makedirs(root, exist_ok=True)
  scratch = _scratch(root)
  part, unpacked = scratch + ".tar.gz", scratch + ".module"
  try:
    digest, size = _download(url(name), part, timeout)
    want = _expected_sha256(root, name)
    if want and digest != want:
      raise PresetError(
          f"Download of {url(name)} has sha256 {digest}, not the recorded "
          f"{want}: the file differs from the first download; nothing was "
          "kept.")
    _unpack(part, unpacked, f"The download of {url(name)}")
    if not want:
      _record(root, name, digest, size, url(name))
    os.replace(part, tarball)
    if os.path.exists(folder):  # a folder without its variables: replace it
      shutil.rmtree(folder, ignore_errors=True)
    try:
      os.rename(unpacked, folder)
    except OSError:  # another process put the same module there first
      if not os.path.exists(os.path.join(folder, _VARIABLES)):
        raise
  finally:
    for path in (part, unpacked):
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      elif os.path.exists(path):
        os.remove(path)
  return folder


def local(source):
  """A module folder from a local folder or tarball (offline): a folder is
  used as it is; a tarball is unpacked once into the cache."""
  source = os.fspath(source)
  if os.path.isdir(source):
    if not os.path.exists(os.path.join(source, _VARIABLES)):
      raise PresetError(f"source={source!r} is not a TF1 module folder: "
                        f"{_VARIABLES} is missing.")
    return source
  if not os.path.isfile(source):
    raise PresetError(f"source={source!r} does not exist: expected a module "
                      "folder or its .tar.gz.")
  root = os.path.join(home(), "presets")
  folder = os.path.join(root, "local-" + sha256_of(source)[:16])
  if os.path.exists(os.path.join(folder, _VARIABLES)):
    return folder
  os.makedirs(root, exist_ok=True)
  _remove_stale_scratch(root)
  unpacked = _scratch(root) + ".module"
  try:
    _unpack(source, unpacked, f"source={source!r}")
    os.rename(unpacked, folder)
  finally:
    if os.path.isdir(unpacked):
      shutil.rmtree(unpacked, ignore_errors=True)
  return folder


def resolve(name, source=None, download=None):
  """(module folder, table entry) of preset `name`, from `source` (a local
  folder or tarball) when given, else from the cache or the network."""
  entry = get(name)
  folder = local(source) if source is not None else fetch(name,
                                                          download=download)
  return folder, entry
