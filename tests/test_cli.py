"""bin/pretrain and bin/linear_eval end to end on the digits demo."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--gin_file=gin/rotation.gin", "--gin_file=gin/demo.gin",
        "--gin_param=build_task.width=0.25",
        "--gin_param=build_task.image_size=16",
        "--gin_param=build_source.source_kwargs={'image_size': 16}",
        "--gin_param=TrainConfig.train_steps=4",
        "--gin_param=TrainConfig.steps_per_loop=2",
        "--gin_param=TrainConfig.checkpoint_steps=2",
        "--gin_param=TrainConfig.eval_batches=1",
        "--gin_param=TrainConfig.online_probe=False"]


def _run(script, *args, check=True):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bin", script),
                         *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  if check and proc.returncode:
    raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
  return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("cli") / "rotation")
  proc = _run("pretrain", *TINY, f"--workdir={path}")
  assert "pretrained rotation" in proc.stdout
  return path


def test_pretrain_writes_everything(workdir):
  ckpts = os.listdir(os.path.join(workdir, "checkpoints"))
  assert any(f.startswith("ckpt-4") for f in ckpts)
  assert any(f.startswith("ckpt-2") for f in ckpts)
  with open(os.path.join(workdir, "config.gin")) as f:
    assert "TrainConfig.train_steps = 4" in f.read()
  with open(os.path.join(workdir, "operative_config.gin")) as f:
    operative = f.read()
  assert "build_task.name = 'rotation'" in operative
  assert os.listdir(os.path.join(workdir, "train"))  # TensorBoard events
  export = os.path.join(workdir, "export")
  assert {"backbone.keras", "saved_model", "info.json"} <= set(
      os.listdir(export))
  with open(os.path.join(workdir, "pretrain_results.json")) as f:
    results = json.load(f)
  assert results["step"] == 4
  assert 0.0 <= results["pretext_eval_end"]["accuracy"] <= 1.0


def test_linear_eval_on_the_workdir(workdir):
  proc = _run("linear_eval", f"--workdir={workdir}",
              "--gin_file=gin/eval/lbfgs.gin",
              "--gin_param=linear_eval.layers=('block3', 'pre_logits')",
              "--gin_param=linear_eval.max_iter=50")
  lines = [l for l in proc.stdout.splitlines() if "top-1" in l]
  assert len(lines) == 2 and "block3" in lines[0] and "pre_logits" in lines[1]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert [r["layer"] for r in results] == ["block3", "pre_logits"]
  for r in results:
    assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
    assert r["num_eval"] == 359 and r["iterations"] <= 50
  assert results[0]["dim"] <= 9000


def test_linear_eval_without_export_fails_clearly(tmp_path):
  proc = _run("linear_eval", f"--workdir={tmp_path}", check=False)
  assert proc.returncode != 0
  assert "no exported backbone" in proc.stderr


def _error_lines(proc):
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


def _digest(workdir):
  """{relative path: sha256} of every file under `workdir`."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def test_rerunning_a_finished_workdir_changes_nothing(workdir):
  before = _digest(workdir)
  proc = _run("pretrain", *TINY, f"--workdir={workdir}")
  assert "already finished" in proc.stdout
  assert _digest(workdir) == before


def test_incompatible_rerun_leaves_the_records_alone(workdir):
  before = _digest(workdir)
  proc = _run("pretrain", *TINY, "--gin_param=build_task.width=0.5",
              f"--workdir={workdir}", check=False)
  assert proc.returncode == 1
  [line] = _error_lines(proc)
  assert "does not match this model" in line and workdir in line
  assert _digest(workdir) == before


@pytest.mark.parametrize("binding, expected", [
    ("TrainConfig.train_steps=-5",
     "error: TrainConfig.train_steps=-5 is invalid: expected an integer >= 0"),
    ("TrainConfig.batch_size=64.5",
     "error: TrainConfig.batch_size=64.5 is invalid: expected an integer"),
    ("build_task.width=0", "error: build_task.width=0 is invalid"),
])
def test_bad_numbers_fail_before_any_work(tmp_path, binding, expected):
  workdir = tmp_path / "w"
  proc = _run("pretrain", *TINY, f"--gin_param={binding}",
              f"--workdir={workdir}", check=False)
  assert proc.returncode == 1
  [line] = _error_lines(proc)
  assert line.startswith(expected)
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_gin_syntax_error_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("TrainConfig.train_steps = 4\nTrainConfig.epochs = )\n")
  proc = _run("pretrain", *TINY, f"--gin_file={bad}",
              f"--workdir={tmp_path / 'w'}", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  [line] = _error_lines(proc)
  assert f"{bad}, line 2" in line


def test_workdir_that_is_a_file_is_one_error_line(tmp_path):
  path = tmp_path / "file"
  path.write_text("not a folder")
  proc = _run("pretrain", *TINY, f"--workdir={path}", check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  [line] = _error_lines(proc)
  assert str(path) in line and "not a directory" in line
  verbose = _run("pretrain", *TINY, f"--workdir={path}", "--verbosity=1",
                 check=False)
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def _image_folder(root, per_class):
  rng = np.random.default_rng(per_class)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for c in ("ants", "bees", "cats"):
    os.makedirs(os.path.join(root, "train", c))
    for i in range(per_class):
      image = rng.integers(0, 256, (20, 20, 3), np.uint8)
      image[..., "abc".index(c[0])] = 255  # a class the probe can find
      tf.io.write_file(os.path.join(root, "train", c, f"{i}.png"),
                       tf.io.encode_png(image))


def test_linear_eval_finds_the_image_folder_of_the_workdir(tmp_path):
  small, large = str(tmp_path / "small"), str(tmp_path / "large")
  _image_folder(small, 12)
  _image_folder(large, 20)
  workdir = str(tmp_path / "w")
  folder = ["--gin_param=build_source.name='image_folder'",
            "--gin_param=build_source.source_kwargs={'holdout': 6}",
            "--gin_param=TrainConfig.batch_size=6"]
  _run("pretrain", *TINY, *folder, f"--workdir={workdir}",
       f"--data_dir={small}")
  with open(os.path.join(workdir, "data.json")) as f:
    assert json.load(f)["source"]["data_dir"] == small
  # No --data_dir: the recorded folder.
  _run("linear_eval", f"--workdir={workdir}", "--gin_file=gin/eval/lbfgs.gin",
       "--gin_param=linear_eval.max_iter=5")
  # Another --data_dir: honoured (the cache is recomputed) and recorded.
  _run("linear_eval", f"--workdir={workdir}", "--gin_file=gin/eval/lbfgs.gin",
       "--gin_param=linear_eval.max_iter=5", f"--data_dir={large}")
  with open(os.path.join(workdir, "results.json")) as f:
    first, second = json.load(f)
  assert first["source_args"]["data_dir"] == small
  assert second["source_args"]["data_dir"] == large
  assert (first["num_train"], second["num_train"]) == (3 * 12 - 6,
                                                       3 * 20 - 6)
  assert first["num_eval"] == second["num_eval"] == 6
  shutil.rmtree(large)
  proc = _run("linear_eval", f"--workdir={workdir}", f"--data_dir={large}",
              check=False)
  assert proc.returncode == 1
  [line] = _error_lines(proc)
  assert large in line


def test_pretrain_unknown_binding_fails_before_training(tmp_path):
  proc = _run("pretrain", *TINY, "--gin_param=TrainConfig.batchsize=8",
              f"--workdir={tmp_path}", check=False)
  assert proc.returncode != 0 and "batchsize" in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_pretrain_missing_task_fails_before_training(tmp_path):
  proc = _run("pretrain", "--gin_file=gin/demo.gin", f"--workdir={tmp_path}",
              check=False)
  assert proc.returncode != 0 and "build_task" in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_pretrain_without_imagenet_points_to_the_demo(tmp_path):
  proc = _run("pretrain", "--gin_file=gin/jigsaw.gin",
              f"--data_dir={tmp_path}", check=False)
  assert proc.returncode != 0
  assert "ILSVRC2012_img_train.tar" in proc.stderr
  assert "bin/demo" in proc.stderr
