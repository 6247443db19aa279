"""Issue 25: a workdir is read as data, never as code, and one command at a
time writes it; images too large to decode are refused before decoding.

`bin/linear_eval` on a workdir whose config.gin would call `os.system`
runs nothing of it; a fit that is not finite ends the command with one
error line and no score; a second `bin/pretrain` is refused while another
process holds the workdir.
"""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from selfsup.data import decode
from selfsup.workdir import sources
from tests import training_runs as runs
from tests.test_reliability import _holder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CRAFTED = """from __gin__ import dynamic_registration
import os
import selfsup.workdir.sources

selfsup.workdir.sources.build_source.name = 'digits'
selfsup.workdir.sources.build_source.source_kwargs = {{'image_size': 16}}
selfsup.workdir.sources.build_source.subset_seed = @os.system()
os.system.command = 'touch {marker}'
"""  # gin ran os.system for this (checked with the code before issue 25)


def _run(script, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, os.path.join(REPO, "bin", script),
                         *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def _error_lines(proc):
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


def test_config_gin_is_read_as_literals_only(tmp_path):
  marker = tmp_path / "ran"
  (tmp_path / "config.gin").write_text(CRAFTED.format(marker=marker))
  assert sources.recorded_bindings(str(tmp_path)) == {
      "name": "digits", "source_kwargs": {"image_size": 16}}
  assert not marker.exists()


def test_linear_eval_runs_nothing_of_the_workdir_and_gives_no_nan_score(
    tmp_path):
  from selfsup.train import Trainer  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "w"
  Trainer(runs.make_task("rotation"), runs.digits(), str(workdir),
          runs.config(train_steps=0)).export()
  marker = tmp_path / "ran"
  (workdir / "config.gin").write_text(CRAFTED.format(marker=marker))
  proc = _run("linear_eval", f"--workdir={workdir}",
              "--gin_param=linear_eval.max_iter=3",
              "--gin_param=linear_eval.l2=1e308")
  assert not marker.exists()  # was created: gin ran os.system
  assert proc.returncode == 1, proc.stderr[-2000:]  # was 0, with 100%
  [line] = _error_lines(proc)
  assert "non-finite" in line and "Traceback" not in proc.stderr
  assert not (workdir / "results.json").exists()
  assert "top-1" not in proc.stdout


@pytest.mark.slow  # the lock itself: tests/test_reliability.py
def test_second_pretrain_is_refused_while_the_workdir_is_held(tmp_path):
  workdir = tmp_path / "w"
  holder = _holder(workdir)
  try:
    proc = _run("pretrain", "--gin_file=rotation", "--gin_file=demo",
                "--gin_param=build_task.width=0.25",
                "--gin_param=build_task.image_size=16",
                "--gin_param=build_source.source_kwargs={'image_size': 16}",
                "--gin_param=TrainConfig.train_steps=2",
                f"--workdir={workdir}")
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 1
  [line] = _error_lines(proc)
  assert f"pid {holder.pid}" in line and "pretrain" in line
  assert not (workdir / "checkpoints").exists()


def _png_header(height, width):
  """A PNG signature and IHDR chunk claiming `height` x `width`, with no
  image data: only the header is read before the size is refused."""
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
          + struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
          + b"\x00" * 4)


def test_huge_image_is_refused_before_decoding(tmp_path):
  huge = tf.constant(_png_header(20000, 20000))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="20000 x 20000 pixels, more than"):
    decode.decode_rgb(huge)
  with pytest.raises(tf.errors.InvalidArgumentError, match="20000 x 20000"):
    list(tf.data.Dataset.from_tensors(huge).map(decode.decode_rgb))
  # The scan skips it as a bad file; ordinary images still decode.
  good = tmp_path / "good.png"
  good.write_bytes(tf.io.encode_png(np.zeros((5, 7, 3), np.uint8)).numpy())
  bad = tmp_path / "huge.png"
  bad.write_bytes(_png_header(20000, 20000))
  assert decode.find_bad_images([str(good), str(bad)]) == [str(bad)]
  assert decode.decode_rgb(tf.io.read_file(str(good))).shape == (5, 7, 3)
  assert [int(v) for v in decode.header_size(tf.io.read_file(
      str(good)))] == [5, 7]
