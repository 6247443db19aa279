"""bin/demo (selfsup/cli/demo.py): the choice of data, the table, the verdict and demo.json; end to
end on a tiny digits run (slow)."""
import json
import os
import subprocess
import sys

import pytest

from selfsup.cli import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def _record(pretrained, random):
  return demo.summary("rotation", "resnet50_v2", "fashion_mnist", "test",
                      dict(zip(demo.LAYERS, pretrained)),
                      dict(zip(demo.LAYERS, random)), 12.345)


def test_choose_data():
  installed, missing = (lambda: "/usr/share/x"), (lambda: None)
  assert demo.choose_data(None, False, installed) == ("fashion_mnist", None)
  assert demo.choose_data("digits", False, installed) == ("digits", None)
  data, note = demo.choose_data(None, False, missing)
  assert data == "digits"
  assert "apt-get install dataset-fashion-mnist" in note
  assert "--download" in note and "digits" in note
  with pytest.raises(demo.DemoError, match="not installed.*--download"):
    demo.choose_data("fashion_mnist", False, missing)
  assert demo.choose_data(None, True, missing) == ("fashion_mnist", None)


def test_arguments():
  args = demo.parse_args([])
  assert args.task == "rotation" and args.data is None
  assert args.workdir.endswith("selfsup_demo")
  args = demo.parse_args(["jigsaw", "/tmp/w", "--data=digits",
                          "--gin_param=TrainConfig.epochs=1"])
  assert (args.task, args.workdir, args.data) == ("jigsaw", "/tmp/w",
                                                  "digits")
  assert args.gin_param == ["TrainConfig.epochs=1"]
  with pytest.raises(SystemExit):
    demo.parse_args(["--data=mnist"])


def test_summary_is_the_issue_format():
  record = _record([0.9, 0.8, 0.7, 0.6, 0.5], [0.85, 0.8, 0.72, 0.5, 0.4])
  assert list(record) == ["task", "backbone", "data", "eval_split", "layers",
                          "seconds"]
  assert list(record["layers"]) == list(demo.LAYERS)
  assert record["layers"]["block1"] == {"pretrained": 0.9, "random": 0.85}
  assert record["seconds"] == 12.3
  json.dumps(record)  # JSON-able as it is


def test_table():
  record = _record([0.9, 0.8, 0.7, 0.6, 0.5], [0.85, 0.8, 0.72, 0.5, 0.4])
  lines = demo.table(record).splitlines()
  assert lines[0].split() == ["layer", "pretrained", "random", "difference"]
  assert len(lines) == 1 + len(demo.LAYERS)
  assert lines[1].split() == ["block1", "90.00%", "85.00%", "+5.00"]
  assert lines[3].split() == ["block3", "70.00%", "72.00%", "-2.00"]


def test_verdict():
  # Best layer against random's best layer (not the same layer), and
  # pre_logits.
  clear = demo.verdict(_record([0.9, 0.8, 0.7, 0.6, 0.5],
                               [0.86, 0.8, 0.7, 0.6, 0.4]))
  assert clear.startswith("Verdict: rotation pretraining helps")
  assert "90.00% (block1)" in clear and "+4.00 points" in clear
  assert "+10.00 at pre_logits" in clear
  small = demo.verdict(_record([0.9, 0.8, 0.7, 0.6, 0.5],
                               [0.88, 0.8, 0.7, 0.6, 0.4]))
  assert small.startswith("Verdict: a small gain") and "+2.00 points" in small
  # A big gain at one layer but behind at pre_logits is not a clear win.
  behind = demo.verdict(_record([0.95, 0.8, 0.7, 0.6, 0.39],
                                [0.85, 0.8, 0.7, 0.6, 0.4]))
  assert behind.startswith("Verdict: a small gain")
  assert "-1.00 at pre_logits" in behind
  # Random's block1 beats every pretrained layer.
  none = demo.verdict(_record([0.7, 0.8, 0.7, 0.6, 0.5],
                              [0.9, 0.6, 0.5, 0.4, 0.3]))
  assert none.startswith("Verdict: no gain") and "-10.00 points" in none
  for line in (clear, small, behind, none):
    assert "\n" not in line


def test_latest_top1(tmp_path):
  entry = dict(protocol="lbfgs", eval_split="test", train_split="train",
               fraction=0.1, backbone="resnet50_v2")
  entries = [dict(entry, layer="block1", top1=0.5),
             dict(entry, layer="block1", top1=0.6, eval_split="val"),
             dict(entry, layer="pre_logits", top1=0.7, fraction=None),
             dict(entry, layer="pre_logits", top1=0.4),
             dict(entry, layer="block1", top1=0.55)]
  path = tmp_path / "results.json"
  path.write_text(json.dumps(entries))
  assert demo.latest_top1(str(path), "test", "train", 0.1) == {
      "block1": (0.55, "resnet50_v2"), "pre_logits": (0.4, "resnet50_v2")}


def test_fashion_mnist_dir_matches_the_source():
  from selfsup.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  assert demo.fashion_mnist_dir() == fashion_mnist.find()


@pytest.mark.slow
def test_demo_end_to_end_on_digits(tmp_path):
  workdir = str(tmp_path / "demo")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "bin", "demo"), "rotation", workdir,
       "--data=digits", "--gin_param=build_task.width=0.25",
       "--gin_param=build_task.image_size=16",
       "--gin_param=build_source.source_kwargs={'image_size': 16}",
       "--gin_param=TrainConfig.train_steps=4",
       "--gin_param=TrainConfig.steps_per_loop=2",
       "--gin_param=TrainConfig.eval_batches=1",
       "--eval_gin_param=linear_eval.max_iter=20"],
      cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(os.path.join(workdir, "demo.json"), encoding="utf-8") as f:
    record = json.load(f)
  assert (record["task"], record["data"], record["eval_split"]) == (
      "rotation", "digits", "val")
  assert list(record["layers"]) == list(demo.LAYERS)
  for top1 in record["layers"].values():
    assert 0 <= top1["pretrained"] <= 1 and 0 <= top1["random"] <= 1
  out = proc.stdout.splitlines()
  assert any(line.startswith("Verdict: ") for line in out)
  assert any(line.split()[:1] == ["pre_logits"] for line in out)
  # TensorFlow's and absl's INFO lines go to the log, not the console.
  assert len(out) < 15 and "I0000" not in proc.stdout + proc.stderr
  with open(os.path.join(workdir, "demo.log"), encoding="utf-8") as f:
    assert "pretrained rotation" in f.read()
