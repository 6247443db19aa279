"""The authors' TF1 reference models (../shared/reference/revisiting_tf1),
made once per machine and reused by every test module that needs them.

`make_reference.py` takes about a minute per width on 2 cores; several test
files compare against its checkpoints (tests/test_tf1_reference.py,
tests/test_presets.py), so its output is cached under
`$SELFSUP_TEST_CACHE` (default: `<tmp>/selfsup-test-cache`), in a folder named
by a hash of the script and the authors' models: a changed oracle makes a new
folder, never a stale match. A folder is moved into place only once complete.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference",
                         "revisiting_tf1")
SCRIPT = os.path.join(REFERENCE, "make_reference.py")


def available():
  return os.path.exists(SCRIPT)


def _oracle_hash():
  digest = hashlib.sha256()
  paths = [SCRIPT] + sorted(
      os.path.join(root, name)
      for root, _, names in os.walk(os.path.join(REFERENCE, "models"))
      for name in names if name.endswith(".py"))
  for path in paths:
    with open(path, "rb") as f:
      digest.update(os.path.relpath(path, REFERENCE).encode())
      digest.update(f.read())
  return digest.hexdigest()[:16]


def cache_dir():
  base = os.environ.get("SELFSUP_TEST_CACHE") or os.path.join(
      tempfile.gettempdir(), "selfsup-test-cache")
  return os.path.join(base, "tf1_reference", _oracle_hash())


def references(settings, timeout=1500):
  """{(width, seed): folder} holding the reference configurations, made (in
  parallel subprocesses) only for the settings not cached yet.

  Raises:
    RuntimeError: the script failed, with the tail of its log.
  """
  base = cache_dir()
  os.makedirs(base, exist_ok=True)
  folders, procs = {}, {}
  for width, seed in settings:
    final = os.path.join(base, f"k{width}_s{seed}")
    folders[(width, seed)] = final
    if os.path.exists(os.path.join(final, "manifest.json")):
      continue
    scratch = os.path.join(base, f".k{width}_s{seed}-{uuid.uuid4().hex[:8]}")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               TF1REF_WIDTH=str(width), TF1REF_SEED=str(seed),
               CUDA_VISIBLE_DEVICES="")
    log = open(scratch + ".log", "w")  # pylint: disable=consider-using-with
    procs[(width, seed)] = (scratch, final, log, subprocess.Popen(
        [sys.executable, SCRIPT, scratch], env=env, stdout=log,
        stderr=subprocess.STDOUT))
  for key, (scratch, final, log, proc) in procs.items():
    code = proc.wait(timeout=timeout)
    log.close()
    if code:
      with open(log.name) as f:
        tail = f.read()[-3000:]
      shutil.rmtree(scratch, ignore_errors=True)
      raise RuntimeError(f"make_reference.py failed for width/seed {key}:\n"
                         f"{tail}")
    os.remove(log.name)
    try:
      os.rename(scratch, final)
    except OSError:  # another process finished the same folder first
      shutil.rmtree(scratch, ignore_errors=True)
  return folders
