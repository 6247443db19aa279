"""Bad settings are refused before any work, each with one line naming the
binding, the value and what is expected; known failures of the command-line
tools become one `error:` line; the folder scan survives odd entries."""
import errno
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

import selfsup
from selfsup.cli import common
from selfsup.evaluation import protocol
from selfsup.train import TrainConfig, Trainer, TrainingDivergedError
from selfsup.train import experiment
from selfsup.core.checks import ConfigError
from tests import training_runs as runs


@pytest.mark.parametrize("field, value, expected", [
    ("train_steps", -5, "an integer >= 0 or None"),
    ("epochs", -1, "a finite number >= 0"),
    ("epochs", float("nan"), "a finite number >= 0"),
    ("batch_size", 0, "an integer >= 1"),
    ("batch_size", -64, "an integer >= 1"),
    ("batch_size", 64.5, "an integer >= 1"),
    ("batch_size", True, "an integer >= 1"),
    ("batch_size", "64", "an integer >= 1"),
    ("checkpoint_steps", 0, "an integer >= 1"),
    ("steps_per_loop", 0, "an integer >= 1"),
    ("max_checkpoints", 0, "an integer >= 1"),
    ("base_lr", 0, "a finite number > 0"),
    ("momentum", 1.0, "a finite number >= 0 and < 1"),
    ("warmup_epochs", -1, "a finite number >= 0"),
    ("decay_epochs", (25, 15), "epochs in increasing order"),
    ("decay_epochs", 15, "a list or tuple"),
    ("seed", -1, "an integer >= 0"),
    ("shuffle_buffer", -1, "an integer >= 0"),
    ("eval_batches", 0, "an integer >= 1 or None"),
    ("sync_batch_norm", "yes", "True or False"),
    ("mixed_precision", 1, "True or False"),
    ("train_split", "", "a non-empty string"),
])
def test_train_config_refuses_bad_values(field, value, expected):
  with pytest.raises(ConfigError) as err:
    TrainConfig(**{field: value})
  message = str(err.value)
  assert message.startswith(f"TrainConfig.{field}={value!r} is invalid")
  assert expected in message and "\n" not in message


def test_train_config_defaults_are_valid():
  config = TrainConfig()
  assert config.sync_batch_norm is False and config.eval_batches is None
  assert TrainConfig(train_steps=0, epochs=0).train_steps == 0


@pytest.mark.parametrize("binding, value, expected", [
    ("width", 0, "a finite number > 0"),
    ("image_size", -3, "an integer >= 1"),
    ("patch_size", 6.5, "an integer >= 1"),
    ("weight_decay", -1e-4, "a finite number >= 0"),
    ("name", "rotaton", "one of"),
    ("task_kwargs", [1], "a dict or None"),
])
def test_build_task_refuses_bad_values(binding, value, expected):
  kwargs = {"name": "rotation", binding: value}
  with pytest.raises(ConfigError, match=expected) as err:
    experiment.build_task(**kwargs)
  assert str(err.value).startswith(f"build_task.{binding}={value!r}")


@pytest.mark.parametrize("binding, value, expected", [
    ("max_iter", 0, "an integer >= 1"),
    ("batch_size", 0, "an integer >= 1"),
    ("fraction", 1.5, "<= 1"),
    ("fraction", 0.0, r"\(0, 1\]"),
    ("l2", -1.0, ">= 0 or None"),
    ("max_features", 0, "an integer >= 1"),
    ("layers", (), "a non-empty list or tuple"),
    ("layers", "pre_logits", "a list or tuple"),
    ("protocol", "svm", "one of"),
    ("precondition", "no", "True or False"),
])
def test_linear_eval_refuses_bad_values_before_any_work(tmp_path, binding,
                                                        value, expected):
  # The workdir has no export: a check that read it first would fail on that.
  with pytest.raises(ConfigError, match=expected) as err:
    protocol.linear_eval(str(tmp_path / "missing"), **{binding: value})
  assert str(err.value).startswith(f"linear_eval.{binding}={value!r}")
  assert not os.path.exists(tmp_path / "missing")


class _Replicas:
  """A strategy claiming `n` replicas; the checks run before it is used."""

  def __init__(self, n):
    self.num_replicas_in_sync = n


def test_batch_must_divide_over_the_replicas(tmp_path):
  with pytest.raises(ConfigError, match=r"batch_size=10 is invalid: expected "
                     r"a multiple of the 3 replicas"):
    Trainer(runs.make_task("rotation"), runs.digits(), str(tmp_path),
            runs.config(), strategy=_Replicas(3))
  assert not os.listdir(tmp_path)


def test_unknown_eval_split_is_refused_before_training(tmp_path):
  with pytest.raises(ConfigError, match=r"TrainConfig.eval_split='official_val' is "
                     r"invalid: expected a split of 'digits'"):
    Trainer(runs.make_task("rotation"), runs.digits(), str(tmp_path),
            runs.config(eval_split="official_val"))
  assert not os.listdir(tmp_path)


def test_gin_syntax_error_is_one_line_with_file_and_line(tmp_path):
  path = tmp_path / "bad.gin"
  path.write_text("TrainConfig.batch_size = 8\nTrainConfig.epochs = (\n"
                  "foo.bar = 3\n")
  try:
    with pytest.raises(common.GinError) as err:
      common.parse_gin([str(path)], [])
  finally:
    gin.clear_config()
  message = str(err.value)
  assert "\n" not in message
  assert f"{path}, line 3" in message or f"{path}, line 2" in message


def test_gin_binding_syntax_error_is_one_line():
  try:
    with pytest.raises(common.GinError, match="gin syntax error") as err:
      common.parse_gin([], ["TrainConfig.decay_epochs = (1,"])
  finally:
    gin.clear_config()
  assert "\n" not in str(err.value)


def test_gin_context_is_dropped_from_a_bad_value():
  gin.parse_config("TrainConfig.batch_size = -64")
  try:
    with pytest.raises(ConfigError) as err:
      experiment.ConfiguredTrainConfig()
  finally:
    gin.clear_config()
  assert common.first_line(err.value) == (
      "TrainConfig.batch_size=-64 is invalid: expected an integer >= 1.")


# --------------------------------------------------------------------------
# Known failures -> one `error:` line; --verbosity=1 -> the traceback.


@pytest.mark.parametrize("err, wanted", [
    (tf.errors.FailedPreconditionError(None, None,
                                       "/runs/w is not a directory"),
     "error: cannot use the path: /runs/w is not a directory"),
    (tf.errors.PermissionDeniedError(None, None,
                                     "/runs/ro/checkpoints; Permission denied"),
     "error: permission denied: /runs/ro/checkpoints; Permission denied"),
    (tf.errors.ResourceExhaustedError(
        None, None, "/runs/w/checkpoints/ckpt-5_temp; No space left on "
        "device"), "error: out of space or memory: /runs/w/checkpoints/"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/w/export"),
     "error: No space left on device: /runs/w/export"),
    (TrainingDivergedError("Non-finite training logs {'loss': nan} between "
                           "steps 4 and 6; the last good checkpoint in "
                           "/runs/w/checkpoints is kept"),
     "error: training diverged: Non-finite training logs"),
    (selfsup.data.BadImagesError("12 of 40 files in /data/val do not "
                                 "decode:\n/data/val/a/1.jpg"),
     "error: 12 of 40 files in /data/val do not decode:"),
    (ConfigError("linear_eval.eval_split='test' is invalid: expected a "
                 "split of 'digits'"),
     "error: linear_eval.eval_split='test' is invalid"),
])
def test_known_failures_become_one_error_line(err, wanted):
  with pytest.raises(SystemExit) as exit_info:
    with common.reporting():
      raise err
  text = str(exit_info.value.code)
  first = text.splitlines()[0]
  assert first.startswith(wanted)
  assert common.TRACEBACK_HINT in first


def test_verbosity_shows_the_traceback():
  with pytest.raises(tf.errors.PermissionDeniedError):
    with common.reporting(show_traceback=True):
      raise tf.errors.PermissionDeniedError(None, None, "/ro; denied")


def test_bugs_are_not_hidden():
  with pytest.raises(ZeroDivisionError):
    with common.reporting():
      raise ZeroDivisionError("a bug keeps its traceback")


# --------------------------------------------------------------------------
# The folder scan.


def _png(path, seed):
  image = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)
  tf.io.write_file(str(path), tf.io.encode_png(image))


def test_folder_scan_survives_a_directory_named_like_an_image(tmp_path):
  for c in ("a", "b"):
    os.makedirs(tmp_path / "train" / c)
    for i in range(100):
      _png(tmp_path / "train" / c / f"{i}.png", i)
  os.makedirs(tmp_path / "train" / "a" / "x.jpg")  # a folder, not an image
  source = selfsup.data.get("image_folder", root=str(tmp_path))
  assert source.num_examples("train") == 200
  assert not any("x.jpg" in p for p in source.bad_files.get("train", []))


def test_folder_scan_counts_unreadable_files_as_bad(tmp_path, monkeypatch):
  for c in ("a", "b"):
    os.makedirs(tmp_path / "train" / c)
    for i in range(100):
      _png(tmp_path / "train" / c / f"{i}.png", i)
  locked = str(tmp_path / "train" / "b" / "7.png")
  read_file = tf.io.read_file

  def read(path, *args, **kwargs):
    # Root reads any file, so an unreadable one is simulated.
    if (path if isinstance(path, str) else path.numpy().decode()) == locked:
      raise tf.errors.PermissionDeniedError(None, None,
                                            f"{locked}; Permission denied")
    return read_file(path, *args, **kwargs)

  monkeypatch.setattr(tf.io, "read_file", read)
  source = selfsup.data.get("image_folder", root=str(tmp_path),
                            max_bad_fraction=0.01)
  assert source.num_examples("train") == 199
  assert source.bad_files["train"] == [locked]
