"""Fault injection: pretraining and feature export killed (SIGKILL) at random
points, several times each, then run to the end, must end exactly where an
uninterrupted run ends: bit-identical weights, byte-identical shards.

Slow (about two minutes on two cores); CI runs it once:

    python -m pytest -q -m slow tests/test_fault_injection.py

As a script it is the feature-export child the test kills, and the
pretraining child killed inside its N-th final record write (N = 0: not
killed):

    python tests/test_fault_injection.py export EXPORT_DIR OUT_DIR
    python tests/test_fault_injection.py records WORKDIR N
"""
# pylint: disable=import-outside-toplevel
import os
import random
import signal
import subprocess
import sys
import time

if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "tests", "training_runs.py")
KILLS = 3
# Feature export: small shards, so a kill lands between, inside or at the
# end of a shard.
SHARD_SIZE = 64
ENDPOINT = "block3"
# What a pretraining writes at its end (through atomic_write), in order.
FINAL_RECORDS = ("config.gin", "data.json", "operative_config.gin",
                 "pretrain_results.json", "info.json")


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _run(args):
  """Runs a child to the end."""
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr.decode()[-3000:]


def _kill_when(args, ready, rng):
  """Starts a child and SIGKILLs it a random 0-0.3 s after `ready()` holds
  (so kills land before, inside and after saves). Whether it was killed."""
  proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    while not ready() and proc.poll() is None:
      assert time.time() < deadline, "no progress within 300 s"
      time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode == -signal.SIGKILL


def _kill_at_random(args, progress, total, rng):
  """Kills `args` KILLS times at random points (`progress()` counts done
  units out of `total`), then runs it to the end; returns the kills."""
  killed = 0
  for _ in range(KILLS):
    done = progress()
    if done >= total - 1:
      break
    target = rng.randint(done + 1, total - 1)
    killed += _kill_when(args, lambda t=target: progress() >= t, rng)
  _run(args)
  return killed


def _checkpoint_values(workdir):
  import tensorflow as tf
  path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  reader = tf.train.load_checkpoint(path)
  names = [n for n in reader.get_variable_to_shape_map()
           if not n.startswith(("iterator", "save_counter", "_CHECKPOINTABLE"))]
  return path, {n: reader.get_tensor(n) for n in names}


def _files(out_dir):
  out = {}
  for name in sorted(os.listdir(out_dir)):
    with open(os.path.join(out_dir, name), "rb") as f:
      out[name] = f.read()
  return out


@pytest.mark.slow
def test_killed_pretraining_resumes_to_identical_weights(tmp_path):
  import numpy as np
  sys.path.insert(0, ROOT)
  from tests import training_runs as runs
  import tensorflow as tf
  rng = random.Random(int(os.environ.get("SELFSUP_FAULT_SEED", "0")))
  straight = str(tmp_path / "straight")
  _run([RUNS, "train", straight])
  killed = str(tmp_path / "killed")

  def saved():  # checkpoints written so far
    path = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
    return 0 if path is None else int(path.rsplit("-", 1)[1]) // (
        runs.RESUME_CHECKPOINT_STEPS)

  kills = _kill_at_random([RUNS, "train", killed], saved,
                          runs.RESUME_STEPS // runs.RESUME_CHECKPOINT_STEPS,
                          rng)
  assert kills >= 2, "too few runs were killed"
  want_path, want = _checkpoint_values(straight)
  got_path, got = _checkpoint_values(killed)
  assert os.path.basename(got_path) == os.path.basename(want_path)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  # Killed saves left nothing behind once a run started again.
  assert not [n for n in os.listdir(os.path.join(killed, "checkpoints"))
              if n.endswith("_temp")]


@pytest.mark.slow
def test_killed_feature_export_resumes_to_identical_shards(tmp_path):
  sys.path.insert(0, ROOT)
  import keras
  from tests import training_runs as runs
  from selfsup.train import Trainer
  keras.utils.set_random_seed(0)
  trainer = Trainer(runs.make_task("rotation"), runs.digits(),
                    str(tmp_path / "model"), runs.config(train_steps=0))
  export_dir = trainer.export()
  rng = random.Random(int(os.environ.get("SELFSUP_FAULT_SEED", "0")) + 1)
  script = os.path.abspath(__file__)
  straight = str(tmp_path / "straight")
  _run([script, "export", export_dir, straight])
  total = len([n for n in os.listdir(straight) if n.endswith(".tfrecord")])
  killed = str(tmp_path / "killed")

  def shards():
    if not os.path.isdir(killed):
      return 0
    return len([n for n in os.listdir(killed) if n.endswith(".tfrecord")])

  kills = _kill_at_random([script, "export", export_dir, killed], shards,
                          total, rng)
  assert kills >= 2, "too few exports were killed"
  want, got = _files(straight), _files(killed)
  assert sorted(got) == sorted(want)
  assert len([n for n in want if n.endswith(".tfrecord")]) > 4
  for name in want:
    assert got[name] == want[name], name


@pytest.mark.slow
def test_killed_inside_the_final_records_completes_them(tmp_path):
  """Killed (SIGKILL) inside each write of the end of a pretraining, after
  its bytes are on disk and before the rename: the next run completes the
  records and the export, and counts as finished only then."""
  import json
  sys.path.insert(0, ROOT)
  from selfsup.train import experiment
  from selfsup.workdir import export as export_lib
  script = os.path.abspath(__file__)
  workdir = str(tmp_path / "w")
  for kill_at in range(1, len(FINAL_RECORDS) + 1):
    proc = subprocess.run([sys.executable, script, "records", workdir,
                           str(kill_at)], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
  _run([script, "records", workdir, "0"])
  with open(os.path.join(workdir, experiment.RESULTS)) as f:
    results = json.load(f)
  assert results["step"] == 4 and not results.get("already_finished")
  assert 0 <= results["pretext_eval_start"]["accuracy"] <= 1
  for name in experiment.RECORDS:
    assert os.path.exists(os.path.join(workdir, name)), name
  export_dir = os.path.join(workdir, "export")
  assert export_lib.load_info(export_dir)["step"] == 4
  export_lib.verify(export_dir, hashes=True)
  # Nothing of the killed writes is left beside the records.
  assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]


def _records(workdir, kill_at):
  """The child: a 4-step pretraining (resumed if the workdir has one),
  SIGKILLed inside its `kill_at`-th final record write."""
  from selfsup.train import Trainer, experiment
  from selfsup.workdir import sources
  from tests import training_runs as runs
  real, count = os.replace, [0]

  def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) in FINAL_RECORDS:
      count[0] += 1
      if count[0] == kill_at:  # atomic_write's bytes on disk, not renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)

  os.replace = replace
  source = sources.make_source(sources.source_record(
      "digits", source_kwargs={"image_size": runs.IMAGE_SIZE}))
  config = runs.config(train_steps=4, seed=1, steps_per_loop=2,
                       checkpoint_steps=2, eval_split="val", eval_batches=1)
  experiment.run(Trainer(runs.make_task("rotation"), source, workdir,
                         config))


def _export(export_dir, out_dir):
  """The child: exports ENDPOINT features of the digits' train and val."""
  import selfsup  # noqa: F401  (registers the backbones for loading)
  from selfsup.evaluation import extract
  from tests import training_runs as runs
  extract.export_features(export_dir, runs.digits(), ("train", "val"),
                          out_dir, endpoint=ENDPOINT, batch_size=32,
                          shard_size=SHARD_SIZE)


if __name__ == "__main__":
  if sys.argv[1] == "export":
    _export(sys.argv[2], sys.argv[3])
  elif sys.argv[1] == "records":
    _records(sys.argv[2], int(sys.argv[3]))
  else:
    raise SystemExit(f"unknown mode {sys.argv[1]!r}")
