"""One writer per workdir: a lock the commands take before they touch it.

Two pretrainings in one workdir corrupt it (the second one's start-up
cleanup deletes the first one's scratch export, then records its own
settings for weights the first trained), and an evaluation that reads the
export while a pretraining rewrites it labels new weights with the old
step. So a command that writes a workdir holds its lock for as long as it
runs: `exclusive` for pretraining, `bin/import_tf1` and the demo, `shared`
for evaluations, which may run side by side (they merge results.json under
`file_lock`) but never beside a pretraining.

The lock is `fcntl.flock` on `<workdir>/selfsup.lock`: the kernel releases
it when its process dies, however it dies, so a stale lock of a killed run
never blocks the next one; the file itself stays (emptied by a holder
that ends normally). The exclusive holder writes its pid, host and command
into the file and each shared holder into its own file in
`selfsup.lock.d/`, so that a refusal names who holds the workdir. Remote
workdirs (gs://, ...) cannot be locked: a warning says so and the command
runs unlocked. Imports no TensorFlow.
"""
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
import uuid

from selfsup.core.errors import WorkdirLockedError

LOCK_FILE = "selfsup.lock"
SHARED_DIR = "selfsup.lock.d"

_log = logging.getLogger(__name__)


def process_alive(pid, host=None):
  """Whether process `pid` of `host` (default this one) still runs. A
  process of another host counts as alive: it cannot be asked."""
  if host not in (None, socket.gethostname()):
    return True
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # alive, another user's
  except (OverflowError, ValueError):
    return False
  return True


def owner_tag():
  """`<host>-<pid>-<random>`: a name part no other live process uses."""
  return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def owned_by_live_process(tag):
  """Whether the process an `owner_tag` (`<host>-<pid>-<random>`) names
  still runs; a tag of another form counts as alive (not ours to judge)."""
  parts = tag.rsplit("-", 2)
  if len(parts) == 2 and parts[0].isdigit():  # `<pid>-<random>`: this host
    return process_alive(int(parts[0]))
  if len(parts) != 3 or not parts[1].isdigit():
    return True
  return process_alive(int(parts[1]), parts[0])


def _describe(info):
  if not info:
    return "another process (it has not said which yet)"
  return (f"pid {info.get('pid')} on {info.get('host')} "
          f"({info.get('command')}, since {info.get('since')})")


def _read_json(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


class WorkdirLock:
  """The lock of `workdir` for `command` (e.g. "pretrain"); `shared` for
  readers that may run together. Use as a context manager, or
  `acquire()` / `release()`.

  Raises:
    WorkdirLockedError: the workdir is held in a conflicting way; the
      message names the holder(s).
  """

  def __init__(self, workdir, command, *, shared=False):
    self.workdir = str(workdir)
    self.command = command
    self.shared = bool(shared)
    self._fd = None
    self._mine = None  # this holder's file in SHARED_DIR

  @property
  def path(self):
    return os.path.join(self.workdir, LOCK_FILE)

  def _info(self):
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": self.command, "shared": self.shared,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

  def acquire(self):
    if "://" in self.workdir:
      _log.warning("%s is remote: it cannot be locked, so nothing stops "
                   "another command from writing it at the same time.",
                   self.workdir)
      return self
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise NotADirectoryError(errno.ENOTDIR, "not a directory",
                               self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
    try:
      fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as err:
      os.close(fd)
      if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise WorkdirLockedError(self._refusal()) from None
    self._fd = fd
    if self.shared:
      folder = os.path.join(self.workdir, SHARED_DIR)
      os.makedirs(folder, exist_ok=True)
      self._mine = os.path.join(folder, owner_tag() + ".json")
      _write(self._mine, self._info())
    else:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(self._info()) + "\n").encode(), 0)
      self._clean_shared_dir()
    return self

  def _holders(self):
    """Who holds the lock now, as far as their records say."""
    if self.shared:  # refused: an exclusive holder
      return [_read_json(self.path)]
    folder = os.path.join(self.workdir, SHARED_DIR)
    infos = [_read_json(os.path.join(folder, n))
             for n in sorted(os.listdir(folder))] if os.path.isdir(
                 folder) else []
    infos = [i for i in infos if i and process_alive(i.get("pid"),
                                                     i.get("host"))]
    exclusive = _read_json(self.path)
    return infos or [exclusive]

  def _refusal(self):
    holders = "; ".join(_describe(h) for h in self._holders())
    return (f"{self.workdir} is in use by {holders}: {self.command} cannot "
            f"run there until it ends (the lock is {self.path}; a process "
            "that died releases it).")

  def _clean_shared_dir(self):
    """Records of shared holders that died (none is alive now: we hold the
    lock exclusively)."""
    folder = os.path.join(self.workdir, SHARED_DIR)
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        with contextlib.suppress(OSError):
          os.remove(os.path.join(folder, name))

  def release(self):
    if self._fd is None:
      return
    if self._mine:
      with contextlib.suppress(OSError):
        os.remove(self._mine)
      self._mine = None
    if not self.shared:  # a finished run leaves the workdir as it found it
      os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _write(path, info):
  with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps(info) + "\n")


@contextlib.contextmanager
def file_lock(path):
  """Holds an exclusive lock on `<path>.lock`, waiting for it: around a
  read-merge-write of `path` by processes that may run together (two
  evaluations adding their results.json entries). Local paths only; a
  remote path is not locked."""
  if "://" in str(path):
    yield
    return
  fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
