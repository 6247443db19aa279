"""Issue 25: no score that lies, no workdir two runs can corrupt.

Top-k counts ties against the model (a network that learned nothing scores
at chance, not 100%), a fit that is not finite gives no score, evaluations
running together keep every results.json entry, and a workdir's lock
refuses a second writer, naming the holder, and outlives no dead process.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from selfsup.core import errors, lock
from selfsup.evaluation import lbfgs, protocol
from selfsup.train import experiment
from selfsup.workdir import sources
from tests import training_runs as runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _result(weights, bias):
  return lbfgs.LogisticRegressionResult(
      weights=np.asarray(weights, np.float32),
      bias=np.asarray(bias, np.float32), objective=0.0, iterations=0,
      seconds=0.0, converged=True, l2=0.0)


def test_topk_counts_ties_and_nan_against_the_model():
  x = np.ones((6, 2), np.float32)
  y = np.array([0, 1, 2, 0, 1, 2])
  tied = lbfgs.evaluate(_result(np.zeros((2, 3)), np.zeros(3)), x, y)
  assert tied["top1"] == 0.0  # was 1.0: every label "ranked first"
  nan = lbfgs.evaluate(_result(np.full((2, 3), np.nan), np.zeros(3)), x, y)
  assert nan["top1"] == nan["top5"] == 0.0  # was 1.0
  # One strict winner: right for its own class only.
  win = lbfgs.evaluate(_result(np.zeros((2, 3)), [1, 0, 0]), x, y)
  assert win["top1"] == pytest.approx(1 / 3) and win["top5"] == 1.0


def test_sgd_topk_counts_ties_and_nan_against_the_model():
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from selfsup.evaluation import sgd  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=protected-access
  inputs = sgd._Inputs(key="features", input_dim=2, features_of=lambda x: x)
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
      6, kernel_initializer="zeros", bias_initializer="zeros")])
  data = tf.data.Dataset.from_tensor_slices(
      {"features": np.ones((6, 2), np.float32),
       "label": np.arange(6)}).batch(3)
  assert sgd.evaluate_head(model, data, inputs, 6)["top1"] == 0.0
  model.layers[-1].bias.assign(np.full(6, np.nan, np.float32))
  scores = sgd.evaluate_head(model, data, inputs, 6)
  assert scores["top1"] == scores["top5"] == 0.0


def _black_folder(root, per_class):
  """Identical black images in three classes: nothing to learn."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  png = tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy()
  for split, n in (("train", per_class), ("val", 2)):
    for c in ("a", "b", "c"):
      os.makedirs(os.path.join(root, split, c))
      for i in range(n):
        with open(os.path.join(root, split, c, f"{i}.png"), "wb") as f:
          f.write(png)


@pytest.fixture(scope="module")
def black_workdir(tmp_path_factory):
  """A `train_steps=0` rotation pretraining on the black folder."""
  from selfsup.train import Trainer  # pylint: disable=import-outside-toplevel
  tmp = tmp_path_factory.mktemp("black")
  _black_folder(str(tmp / "images"), 4)
  source = sources.make_source(sources.source_record(
      "image_folder", data_dir=str(tmp / "images")))
  workdir = str(tmp / "w")
  experiment.run(Trainer(runs.make_task("rotation"), source, workdir,
                         runs.config(train_steps=0, batch_size=6)))
  return workdir


def test_identical_images_score_at_chance_not_100(black_workdir):
  [entry] = protocol.linear_eval(black_workdir, max_iter=20)
  assert entry["top1"] <= 1 / 3 + 1e-9  # was 1.0
  assert entry["num_eval"] == 6


def test_a_fit_that_is_not_finite_gives_no_score(black_workdir):
  path = os.path.join(black_workdir, "results.json")
  before = open(path).read() if os.path.exists(path) else None
  with pytest.raises(errors.NotFiniteError, match="non-finite objective"):
    protocol.linear_eval(black_workdir, l2=1e308, max_iter=5)
  after = open(path).read() if os.path.exists(path) else None
  assert after == before  # nothing recorded


@pytest.mark.parametrize("name", ["results.json", "pretrain_results.json"])
def test_garbage_record_fails_before_the_fit(black_workdir, monkeypatch,
                                             name):
  path = os.path.join(black_workdir, name)
  saved = open(path).read() if os.path.exists(path) else None
  with open(path, "w") as f:
    f.write("{not json")
  monkeypatch.setattr(lbfgs, "fit", lambda *a, **k: pytest.fail("fit ran"))
  try:
    with pytest.raises(errors.WorkdirError, match=path):
      protocol.linear_eval(black_workdir, max_iter=5)
  finally:
    if saved is None:
      os.remove(path)
    else:
      with open(path, "w") as f:
        f.write(saved)


def test_export_rewritten_during_the_evaluation_is_refused(black_workdir,
                                                          monkeypatch):
  """A pretraining re-exporting (step 8) while the features of step 4 are
  computed: no entry labels one model's features with the other's step."""
  path = os.path.join(black_workdir, "export", "info.json")
  with open(path) as f:
    original = f.read()
  real = protocol.extract.export_features

  def reexported(*args, **kwargs):
    out = real(*args, **kwargs)
    info = dict(json.loads(original), weights_sha256="0" * 64, step=8)
    with open(path, "w") as f:
      json.dump(info, f)
    return out

  monkeypatch.setattr(protocol.extract, "export_features", reexported)
  try:
    with pytest.raises(errors.WorkdirError, match="changed during the eval"):
      protocol.linear_eval(black_workdir, max_iter=5)
  finally:
    with open(path, "w") as f:
      f.write(original)


def test_evaluations_running_together_keep_every_entry(tmp_path, monkeypatch):
  slow_write = protocol.files.atomic_write

  def write(*args, **kwargs):  # widens the read-merge-write window
    time.sleep(0.05)
    slow_write(*args, **kwargs)

  monkeypatch.setattr(protocol.files, "atomic_write", write)
  record = protocol._record  # pylint: disable=protected-access
  threads = [threading.Thread(target=record,
                              args=(str(tmp_path), [{"key": str(i)}]))
             for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  with open(tmp_path / "results.json") as f:
    assert sorted(e["key"] for e in json.load(f)) == ["0", "1", "2", "3"]


_HOLD = ("import sys, time; sys.path.insert(0, {root!r}); "
         "from selfsup.core import lock; "
         "l = lock.WorkdirLock({workdir!r}, 'pretrain').acquire(); "
         "print('held', flush=True); time.sleep(60)")


def _holder(workdir):
  """A child process holding `workdir`'s lock (no TensorFlow: quick)."""
  proc = subprocess.Popen(
      [sys.executable, "-c", _HOLD.format(root=ROOT, workdir=str(workdir))],
      stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_lock_refuses_a_second_writer_naming_the_holder(tmp_path):
  proc = _holder(tmp_path)
  try:
    for shared in (False, True):
      with pytest.raises(errors.WorkdirLockedError) as err:
        lock.WorkdirLock(tmp_path, "linear_eval", shared=shared).acquire()
      message = str(err.value)
      assert f"pid {proc.pid}" in message and "pretrain" in message
      assert str(tmp_path) in message
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The holder died without releasing: its lock is gone with it.
  with lock.WorkdirLock(tmp_path, "pretrain"):
    pass


def test_shared_holders_run_together_but_not_beside_a_writer(tmp_path):
  with lock.WorkdirLock(tmp_path, "linear_eval", shared=True):
    with lock.WorkdirLock(tmp_path, "linear_eval", shared=True):
      with pytest.raises(errors.WorkdirLockedError,
                         match=f"pid {os.getpid()}.*linear_eval"):
        lock.WorkdirLock(tmp_path, "pretrain").acquire()
  with lock.WorkdirLock(tmp_path, "pretrain"):
    pass
  # A finished holder leaves no record that changes the workdir.
  assert os.path.getsize(tmp_path / lock.LOCK_FILE) == 0
  assert not os.listdir(tmp_path / lock.SHARED_DIR)


def test_lock_on_a_file_is_not_a_directory(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(NotADirectoryError):
    lock.WorkdirLock(path, "pretrain").acquire()


def test_changed_image_folder_is_recomputed_not_reused(black_workdir):
  """Last in the module: it changes the black folder."""
  [first] = protocol.linear_eval(black_workdir, max_iter=5)
  images = os.path.join(os.path.dirname(black_workdir), "images")
  # An added image: another cache and another entry, never the old one's.
  with open(os.path.join(images, "train", "a", "0.png"), "rb") as f:
    png = f.read()
  with open(os.path.join(images, "train", "a", "extra.png"), "wb") as f:
    f.write(png)
  [added] = protocol.linear_eval(black_workdir, max_iter=5)
  assert added["num_train"] == first["num_train"] + 1
  assert added["key"] != first["key"]
  assert added["features_sha256"] != first["features_sha256"]
  # A renamed class (same images, same label numbers): recomputed too.
  for split in ("train", "val"):
    os.rename(os.path.join(images, split, "c"),
              os.path.join(images, split, "d"))
  [renamed] = protocol.linear_eval(black_workdir, max_iter=5)
  assert renamed["num_train"] == added["num_train"]
  assert renamed["features_sha256"] != added["features_sha256"]
  with open(os.path.join(black_workdir, "results.json")) as f:
    keys = [e["key"] for e in json.load(f)]
  assert {first["key"], added["key"], renamed["key"]} <= set(keys)
  assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("text,kind,needle", [
    ('{"a": 1', dict, "not valid JSON"), ("[1, 2]", dict, "WRONG"),
    ('[{"a": 1}, 2]', list, "WRONG"), ('{"a": 1}', list, "WRONG")])
def test_damaged_or_misshapen_records_name_the_file(tmp_path, text, kind,
                                                    needle):
  from selfsup.core import files  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "record.json")
  with open(path, "w") as f:
    f.write(text)
  with pytest.raises(errors.WorkdirError, match=needle) as err:
    files.read_record(path, kind, damaged="DAMAGED", wrong="WRONG")
  assert path in str(err.value)
  with open(path, "w") as f:
    f.write('[{"a": 1}]' if kind is list else '{"a": 1}')
  assert files.read_record(path, kind, damaged="", wrong="") in (
      [{"a": 1}], {"a": 1})
