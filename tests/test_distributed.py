"""Training under tf.distribute: every task under the default strategy and a
MirroredStrategy over 2 logical CPU devices, and MultiWorkerMirroredStrategy
with 2 worker processes on 127.0.0.1.

Logical devices and TF_CONFIG must be set before TensorFlow starts, so the
runs happen in fresh processes (`tests/training_runs.py`), all started
together by the `runs` fixture, and the tests read what they wrote.

What "the same result" means here. Both strategies see the same global batch
(a fixed batch of 10 digits, one per class, on their evaluation views), the
same initial weights and the same learning rate; batch norm is synchronised
when there are 2 replicas and the loss is averaged over the global batch. So
the first step agrees to float rounding: every variable (batch-norm moving
statistics included) after it, and the losses of steps 1-3 to 1e-3. Later
weights are compared only through "finite and falling": at a learning rate
of 0.1 on 10 digits, rounding differences (summation order in the
all-reduce) flip ReLUs and max-pool choices on the digits' flat background
and grow step by step (measured on ResNet18 v2, Rotation: 1e-5 relative
after step 1, over 1e-3 after step 2). Patch tasks run with dropout 0 (masks are drawn per replica).
Exemplar's triplet loss mines within groups of images (`mining_group`); the
10-image batch here is smaller than one group, so each replica mines among
its own images and for it only "trains, finite, falling" is checked. "Falling" is judged on averages over thirds of each run (24 steps
for Exemplar, whose mined loss is not one smooth objective and follows the
processor's rounding step by step, and for Jigsaw, whose 100-way loss moves
slowly): a property of the algorithm, not one trajectory.
`SELFSUP_TEST_SEED=1` runs all of this on other initial weights.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import training_runs

SCRIPT = training_runs.__file__
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(SCRIPT)))
TIMEOUT = 600  # seconds, for the slowest process on a loaded machine
KINDS = ("default", "mirrored")
MATCHING = [t for t in training_runs.TASKS if t != "exemplar"]


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class _Process:
  """A started `training_runs.py` (or `script`) process with its log."""

  def __init__(self, out, name, *args, script=SCRIPT):
    self.out = str(out)
    self.log = os.path.join(self.out, f"{name}.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    with open(self.log, "w") as log:
      self.proc = subprocess.Popen(
          [sys.executable, script, *args], cwd=ROOT, env=env, stdout=log,
          stderr=subprocess.STDOUT)
    self._result = None

  def wait(self):
    """Waits for the process; fails the test with its log if it failed."""
    if self._result is None:
      try:
        self._result = self.proc.wait(timeout=TIMEOUT)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
        self._result = "timeout"
    if self._result != 0:
      with open(self.log) as f:
        tail = f.read()[-6000:]
      pytest.fail(f"{self.proc.args} ended with {self._result}:\n{tail}")
    return self

  def json(self, name):
    with open(os.path.join(self.out, name)) as f:
      return json.load(f)

  def npz(self, name):
    with np.load(os.path.join(self.out, name)) as f:
      return dict(f)

  def stop(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGKILL)
      self.proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Starts the default-vs-mirrored runs and both workers at once."""
  compare_dir = tmp_path_factory.mktemp("compare")
  workers_dir = tmp_path_factory.mktemp("workers")
  ports = ",".join(str(p) for p in _free_ports(2))
  procs = {
      f"compare-{part}": _Process(compare_dir, f"compare-{part}", "compare",
                                  str(compare_dir), part)
      for part in training_runs.COMPARE_PARTS}
  procs.update({
      "worker0": _Process(workers_dir, "worker0", "worker", str(workers_dir),
                          "0", ports),
      "worker1": _Process(workers_dir, "worker1", "worker", str(workers_dir),
                          "1", ports),
  })
  yield procs
  for proc in procs.values():
    proc.stop()


@pytest.fixture(scope="module")
def compare(runs):
  results = {}
  for part in training_runs.COMPARE_PARTS:
    proc = runs[f"compare-{part}"].wait()
    results.update(proc.json(f"results-{part}.json"))
  return proc, results


def _close(a, b, rtol):
  """Whether max |a - b| <= rtol * (max |a| + 1e-3): relative to the scale."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-3)) <= rtol


def test_mirrored_strategy_has_two_replicas_and_syncs_batch_norm(compare):
  _, results = compare
  assert results["strategy"] == "MirroredStrategy"
  assert results["replicas"] == 2
  for task in training_runs.TASKS:
    default = results[f"{task}/default"]["synchronized"]
    mirrored = results[f"{task}/mirrored"]["synchronized"]
    assert default and not any(default), task
    assert len(mirrored) == len(default) and all(mirrored), task


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", training_runs.TASKS)
def test_loss_is_finite_and_falls(compare, task, kind):
  _, results = compare
  run = results[f"{task}/{kind}"]
  losses = np.array(run["losses"])
  steps = training_runs.FIXED_STEPS.get(task, 12)
  assert run["step"] == steps and len(losses) == steps
  assert np.all(np.isfinite(losses))
  third = steps // 3
  # Mined triplets fall steeply but not step by step; the others smoothly.
  drop = 0.75 if task == "exemplar" else 0.99
  assert losses[-third:].mean() < drop * losses[:third].mean(), losses


@pytest.mark.parametrize("task", MATCHING)
def test_mirrored_matches_default(compare, task):
  proc, results = compare
  default = results[f"{task}/default"]["losses"]
  mirrored = results[f"{task}/mirrored"]["losses"]
  np.testing.assert_allclose(mirrored[:3], default[:3], rtol=1e-3)
  a = proc.npz(f"{task}-default-step1.npz")
  b = proc.npz(f"{task}-mirrored-step1.npz")
  assert sorted(a) == sorted(b)
  assert any("moving_mean" in k for k in a)
  bad = [k for k in a if not _close(a[k], b[k], 1e-3)]
  assert not bad, bad


@pytest.mark.parametrize("task", training_runs.TASKS)
def test_every_variable_is_the_same_on_both_replicas(compare, task):
  _, results = compare
  spread = results[f"{task}/mirrored"]["replica_spread"]
  stats = [k for k in spread if "moving_mean" in k or "moving_variance" in k]
  assert stats and len(spread) > len(stats)
  assert {k: v for k, v in spread.items() if v != 0.0} == {}


def test_mirrored_random_augmentation_sees_the_single_device_batch(compare):
  """With the real (random) training spec and a seed, the two replicas' halves
  make up exactly the batch one device reads."""
  _, results = compare
  np.testing.assert_allclose(results["real/mirrored"]["losses"][:2],
                             results["real/default"]["losses"], rtol=1e-4)


def test_mirrored_resume_continues_the_input_exactly(compare):
  """The input iterator is checkpointed under MirroredStrategy: a new trainer
  resumed from the step-2 checkpoint ends where the uninterrupted run did."""
  proc, results = compare
  resumed = results["real/resumed"]
  assert resumed["restored"].endswith("ckpt-2")
  assert resumed["step"] == results["real/mirrored"]["step"] == 4
  straight = proc.npz("real-mirrored.npz")
  again = proc.npz("real-resumed.npz")
  assert sorted(straight) == sorted(again)
  for key, value in straight.items():
    np.testing.assert_allclose(again[key], value, rtol=1e-5, atol=1e-6,
                               err_msg=key)


def test_multi_worker_mirrored_two_local_workers(runs, compare):
  workers = [runs["worker0"].wait(), runs["worker1"].wait()]
  results = [w.json(f"worker{i}.json") for i, w in enumerate(workers)]
  for result in results:
    assert result["strategy"] in ("MultiWorkerMirroredStrategy",
                                  "CollectiveAllReduceStrategy")
    assert result["replicas"] == 2
    assert result["step"] == 4
    assert np.isfinite(result["last_loss"])
  assert [r["is_chief"] for r in results] == [True, False]
  # Synchronous training: both workers hold the same weights.
  a, b = (w.npz(f"worker{i}.npz") for i, w in enumerate(workers))
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # Each worker reads its half of the 10 images, all of it at every step:
  # the global batch is the single-device one, so the losses match it.
  _, compared = compare
  np.testing.assert_allclose(results[0]["losses"],
                             compared["rotation/default"]["losses"][:4],
                             rtol=1e-3)
  # Only the chief writes the run's files.
  workdir = os.path.join(workers[0].out, "workdir")
  assert len(os.listdir(os.path.join(workdir, "train"))) == 1
  assert "ckpt-4.index" in os.listdir(os.path.join(workdir, "checkpoints"))
  assert results[0]["export"] == os.path.join(workdir, "export")
  assert os.path.exists(os.path.join(workdir, "export", "info.json"))
  assert results[1]["export"] is None


# --------------------------------------------------------------------------
# Batch-norm groups and Exemplar's mining groups (tests/group_runs.py): one
# global batch on 1 and on 2 replicas, each replica holding whole groups,
# gives the same loss, gradients and moving statistics, with no cross-replica
# batch norm.

GROUP_SCRIPT = os.path.join(ROOT, "tests", "group_runs.py")
GROUPED = ("rotation", "rotation_revnet", "exemplar", "jigsaw")


@pytest.fixture(scope="module")
def group_runs(tmp_path_factory):
  out = tmp_path_factory.mktemp("groups")
  proc = _Process(out, "groups", str(out), script=GROUP_SCRIPT)
  yield proc.wait()
  proc.stop()


def _group_mismatches(proc, case):
  """Variables/gradients of 1 vs 2 replicas that differ beyond rounding:
  relative to the value's scale, with a floor of 1% of the largest gradient
  (a bias before batch norm has a zero gradient: only rounding is left)."""
  a = proc.npz(f"{case}-default.npz")
  b = proc.npz(f"{case}-mirrored.npz")
  assert sorted(a) == sorted(b)
  largest = max(np.max(np.abs(v)) for k, v in a.items()
                if k.startswith("grad/"))
  bad = []
  for key in a:
    if key.startswith("spread/") or key == "loss":
      continue
    floor = 1e-2 * (largest if key.startswith("grad/") else 1.0)
    scale = np.max(np.abs(a[key])) + floor
    if np.max(np.abs(a[key] - b[key])) > 5e-3 * scale:
      bad.append(key)
  return a, b, bad


@pytest.mark.parametrize("case", GROUPED)
def test_groups_make_one_and_two_replicas_agree(group_runs, case):
  a, b, bad = _group_mismatches(group_runs, case)
  np.testing.assert_allclose(float(b["loss"]), float(a["loss"]), rtol=1e-5)
  assert any(k.startswith("grad/") for k in a)
  assert any("moving_mean" in k for k in a)
  assert any("moving_variance" in k for k in a)
  assert not bad, bad
  # Every replica holds the same moving statistics (no synchronised BN).
  spread = {k: float(v) for k, v in b.items() if k.startswith("spread/")}
  assert {k: v for k, v in spread.items() if v != 0.0} == {}


def test_without_groups_one_and_two_replicas_differ(group_runs):
  """The control: per-replica statistics see 4 images on one device and 2 on
  each of two, so the same batch gives another loss and other gradients."""
  a, b, bad = _group_mismatches(group_runs, "rotation_per_replica")
  assert abs(float(a["loss"]) - float(b["loss"])) > 1e-4
  assert any(k.startswith("grad/") for k in bad)
