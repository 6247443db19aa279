"""bin/pretrain and bin/linear_eval end to end on the digits demo."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--gin_file=gin/rotation.gin", "--gin_file=gin/demo.gin",
        "--gin_param=build_task.width=0.25",
        "--gin_param=build_task.image_size=16",
        "--gin_param=build_source.source_kwargs={'image_size': 16}",
        "--gin_param=TrainConfig.train_steps=4",
        "--gin_param=TrainConfig.steps_per_loop=2",
        "--gin_param=TrainConfig.checkpoint_steps=2",
        "--gin_param=TrainConfig.eval_batches=1"]


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
