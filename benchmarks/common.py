"""Small helpers shared by the benchmark scripts: children, memory, output.

A benchmark that compares peak memory runs each contender in its own child
process (ru_maxrss is per process and never goes down); the child prints one
JSON line last, which `run_child` returns. `--json PATH` output goes through
`write_json`, with `machine()` alongside so that numbers from a busy machine
can be recognised as such.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def maxrss_mb() -> float:
  """Peak resident memory of this process so far, MiB (Linux: KiB units)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
  """User + system CPU time of this process, all threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def child_env(threads: int = 0, **extra) -> dict:
  """The environment of a child: the repo importable, TF quiet.

  threads > 0 caps BLAS and OpenMP, which read these variables when they
  load (TensorFlow's pools are set by the child itself). Keys of `extra`
  whose value is None are removed from the environment.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
  if threads:
    env.update({var: str(threads) for var in _THREAD_VARS})
  for key, value in extra.items():
    if value is None:
      env.pop(key, None)
    else:
      env[key] = str(value)
  return env


def run_child(argv, env=None, timeout=None) -> dict:
  """Runs `python argv...` and returns the JSON object on its last line."""
  proc = subprocess.run([sys.executable, *argv], env=env or child_env(),
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"benchmark child {argv[:2]} failed "
                       f"({proc.returncode}):\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
  """What the numbers depend on: cores, load, library settings."""
  return dict(cpus=os.cpu_count(), load_average=list(os.getloadavg()),
              python=platform.python_version(),
              openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"),
              time=time.strftime("%Y-%m-%dT%H:%M:%S"))


def write_json(path: str, payload: dict) -> None:
  """Writes `payload` plus `machine()` to `path` (atomically)."""
  if not path:
    return
  payload = dict(payload, machine=machine())
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=float)
  os.replace(tmp, path)


def table(rows, columns) -> str:
  """Rows of dicts as a fixed-width text table.

  columns: [(key, format, title)]; a missing value prints as "-".
  """
  cells = [[title for _, _, title in columns]]
  for row in rows:
    cells.append([("-" if row.get(key) is None else fmt.format(row[key]))
                  for key, fmt, _ in columns])
  widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
  return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
                   for r in cells)


def median(values):
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
