"""The trainer on one device: resuming (also after SIGKILL), the NaN guard,
XLA-compiled steps, bfloat16, export.

Multi-device runs are in test_distributed.py. Sizes and configurations are
shared with it through `tests/training_runs.py`.
"""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import selfsup
from selfsup.train import Trainer, TrainingDivergedError
from selfsup.train import trainer as trainer_lib
from tests import training_runs as runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(runs.__file__)))


@pytest.fixture(autouse=True, scope="module")
def _no_graph_rewrites():
  """Grappler's rewrites only slow the first call of these tiny graphs down
  (the killed subprocess turns them off too, for the same numbers)."""
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": True})
  yield
  tf.config.optimizer.set_experimental_options(
      {"disable_meta_optimizer": False})


def _trainer(workdir, task="rotation", deterministic=True, config=None,
             **task_kwargs):
  keras.utils.set_random_seed(0)
  task = runs.make_task(task, **task_kwargs)
  if deterministic:
    runs.make_deterministic(task)
  source = runs.digits(runs.FIXED_FRACTION if deterministic else None)
  return Trainer(task, source, str(workdir), config or runs.config())


def _assert_same_weights(got, want, rtol=1e-5, atol=1e-6):
  assert sorted(got) == sorted(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol,
                               err_msg=key)


def _latest_step(workdir):
  path = tf.train.latest_checkpoint(os.path.join(str(workdir), "checkpoints"))
  return None if path is None else int(path.rsplit("-", 1)[1])


# --------------------------------------------------------------------------
# Kill and resume: Rotation with its random augmentation and a shuffle
# buffer, so the restored input position matters.


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  trainer = _trainer(tmp_path_factory.mktemp("straight"), deterministic=False,
                     config=runs.resume_config())
  trainer.train()
  return trainer.step, runs.weights(trainer.task.modules)


def test_resume_after_max_steps_matches_uninterrupted(tmp_path, uninterrupted):
  steps, want = uninterrupted
  assert steps == runs.RESUME_STEPS
  first = _trainer(tmp_path, deterministic=False, config=runs.resume_config())
  first.train(max_steps=23)  # not a multiple of checkpoint_steps
  assert first.step == 23 and _latest_step(tmp_path) == 23
  del first
  second = _trainer(tmp_path, deterministic=False,
                    config=runs.resume_config())
  assert second.step == 0
  assert second.checkpoint.restore_latest().endswith("ckpt-23")
  assert second.step == 23
  second.train()
  assert second.step == steps
  _assert_same_weights(runs.weights(second.task.modules), want)


def test_resume_after_sigkill_continues_from_last_checkpoint(
    tmp_path, uninterrupted):
  steps, want = uninterrupted
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  log_path = tmp_path / "train.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, runs.__file__, "train", str(tmp_path)], cwd=ROOT,
        env=env, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 300
    while _latest_step(tmp_path) is None and proc.poll() is None:
      assert time.time() < deadline, "no checkpoint within 300 s"
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  output = log_path.read_text()
  assert proc.returncode == -signal.SIGKILL, output[-3000:]
  assert "finished" not in output
  killed_at = _latest_step(tmp_path)
  assert 0 < killed_at < steps and killed_at % runs.RESUME_CHECKPOINT_STEPS == 0
  trainer = _trainer(tmp_path, deterministic=False,
                     config=runs.resume_config())
  assert trainer.checkpoint.restore_latest().endswith(f"ckpt-{killed_at}")
  assert trainer.step == killed_at
  trainer.train()
  assert trainer.step == steps
  _assert_same_weights(runs.weights(trainer.task.modules), want)


# --------------------------------------------------------------------------
# The NaN guard.


class _Poisoned(selfsup.tasks.Rotation):
  """Rotation whose loss is multiplied by `factor` (set to NaN to diverge)."""

  name = "rotation"

  def __init__(self, factor, **kwargs):
    self.factor = factor
    super().__init__(**kwargs)

  def step(self, batch, training):
    loss, metrics = super().step(batch, training)
    return loss * self.factor, metrics


def test_nan_loss_stops_cleanly_keeping_the_last_good_checkpoint(tmp_path):
  factor = tf.Variable(1.0, trainable=False)
  keras.utils.set_random_seed(0)
  kwargs = dict(runs.TASK_KWARGS["rotation"], backbone="resnet18_v2",
                width=0.25)
  task = runs.make_deterministic(_Poisoned(factor, **kwargs))
  source = runs.digits(runs.FIXED_FRACTION)
  config = runs.config(checkpoint_steps=2, steps_per_loop=2)
  trainer = Trainer(task, source, str(tmp_path), config)
  trainer.train(max_steps=4)
  good = runs.weights(task.modules)
  factor.assign(float("nan"))
  with pytest.raises(TrainingDivergedError, match="ckpt-4"):
    trainer.train(max_steps=8)
  assert trainer.step == 6  # the loop that went bad ran, and stopped there
  assert _latest_step(tmp_path) == 4
  assert sorted(os.listdir(tmp_path / "checkpoints")) == sorted(
      ["checkpoint", "ckpt-2.index", "ckpt-2.data-00000-of-00001",
       "ckpt-4.index", "ckpt-4.data-00000-of-00001"])
  assert not all(np.isfinite(v).all() for v in runs.weights(
      task.modules).values())
  # A new trainer loads the last good checkpoint and can go on.
  again = _trainer(tmp_path)
  again.checkpoint.restore_latest()
  assert again.step == 4
  _assert_same_weights(runs.weights(again.task.modules), good, 0, 0)
  logs = again.train(max_steps=6)
  assert again.step == 6 and np.isfinite(logs["loss"])


# --------------------------------------------------------------------------
# XLA: `jit_compile=True` on one CPU device stands in for TPU compilation.


def _first_batch(trainer):
  """The batch the trainer reads first (same pipeline, same seed)."""
  cfg = trainer.config
  ds = selfsup.data.make_pipeline(
      trainer.source, cfg.train_split, trainer.task.specs["train"],
      batch_size=cfg.batch_size, training=True, seed=trainer.input_seed,
      input_context=tf.distribute.InputContext(),
      batch_spec=trainer.task.specs["batch"] or None,
      shuffle_buffer=cfg.shuffle_buffer)
  return next(iter(ds))


# Supervised and RPL compile the same kinds of ops as Rotation and Jigsaw:
# slow, to keep the default run short.
_XLA_TASKS = [pytest.param(t, marks=pytest.mark.slow)
              if t in ("supervised", "relative_patch_location") else t
              for t in runs.TASKS]


@pytest.mark.parametrize("task", _XLA_TASKS)
def test_xla_compiled_step_matches_eager_gradient(tmp_path, task):
  """The first compiled step applies exactly -lr * (eager gradient): no
  momentum yet, no warm-up, a fixed batch; later steps stay finite."""
  trainer = _trainer(tmp_path, task, config=runs.config(jit_compile=True))
  variables = [v for m in trainer.task.modules.values() for v in m.variables]
  before = [v.numpy() for v in variables]
  trainable = trainer.task.trainable_variables
  batch = _first_batch(trainer)
  with tf.GradientTape() as tape:
    loss, _ = trainer.task.step(batch, training=True)
    total = loss + tf.add_n(trainer.task.regularization_losses)
  grads = tape.gradient(total, trainable)
  for var, value in zip(variables, before):  # undo the BN statistics update
    var.assign(value)
  w0 = [v.numpy() for v in trainable]

  logs = trainer.train(max_steps=1)
  assert trainer.step == 1
  np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-4)
  lr = float(trainer.schedule(0))
  assert lr == pytest.approx(0.1)
  for var, start, grad in zip(trainable, w0, grads):
    want = start - lr * tf.convert_to_tensor(grad).numpy()
    np.testing.assert_allclose(var.numpy(), want, rtol=1e-3, atol=2e-5,
                               err_msg=var.path)
  logs = trainer.train(max_steps=3)
  assert trainer.step == 3 and np.isfinite(logs["loss"])


def test_jit_compile_is_refused_with_several_replicas(tmp_path):
  """Checked here without devices: a strategy claiming two replicas."""

  class TwoReplicas:
    num_replicas_in_sync = 2

  with pytest.raises(ValueError, match="jit_compile=True needs one replica"):
    Trainer(runs.make_task("rotation"), runs.digits(), str(tmp_path),
            runs.config(jit_compile=True), strategy=TwoReplicas())


# --------------------------------------------------------------------------
# Mixed precision.


@pytest.mark.parametrize("task", ["rotation", "jigsaw"])
def test_bfloat16_trains_with_finite_loss(tmp_path, task):
  trainer = _trainer(tmp_path, task, config=runs.config(mixed_precision=True))
  backbone = trainer.task.backbone
  convs = [l for l in backbone.layers
           if isinstance(l, keras.layers.Conv2D)]
  assert convs and all(l.compute_dtype == "bfloat16" for l in convs)
  assert all(v.dtype == "float32" for v in trainer.task.trainable_variables)
  logs = trainer.train(max_steps=4)
  assert trainer.step == 4
  assert np.isfinite(logs["loss"]) and np.isfinite(logs["total_loss"])
  # The global policy is left as it was.
  assert keras.config.dtype_policy().name == "float32"
  if task == "rotation":  # the export is a float32 copy
    exported = selfsup.train.load_backbone(trainer.export())
    assert all(l.compute_dtype == "float32" for l in exported.layers
               if isinstance(l, keras.layers.Conv2D))
    images = np.random.default_rng(0).uniform(
        -1, 1, (2, runs.IMAGE_SIZE, runs.IMAGE_SIZE, 3)).astype(np.float32)
    want = backbone(images, training=False)["pre_logits"]
    got = exported(images, training=False)["pre_logits"]
    assert got.dtype == "float32"
    want = tf.cast(want, tf.float32).numpy()
    # bfloat16 keeps 8 bits of mantissa: compare at the scale of the output.
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


# --------------------------------------------------------------------------
# Export.

_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = loaded.signatures["serve"](image=tf.constant(images))
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
imported = any(m.startswith("selfsup") for m in sys.modules)
print(json.dumps({"selfsup": imported}))
"""


def test_export_writes_keras_savedmodel_and_info(tmp_path):
  trainer = _trainer(tmp_path)
  trainer.train(max_steps=0)
  assert trainer.step == 0
  trainer.train(max_steps=2)
  out = trainer.export()
  assert out == os.path.join(str(tmp_path), "export")
  assert sorted(os.listdir(out)) == ["backbone.keras", "head.keras",
                                     "info.json", "saved_model"]
  with open(os.path.join(out, "info.json")) as f:
    info = json.load(f)
  assert info["task"] == "rotation" and info["backbone"] == "resnet18_v2"
  assert info["step"] == 2 and info["image_size"] == runs.IMAGE_SIZE
  # The pretext head (Rotation's 4-way logits) is its own file.
  assert info["endpoints"] == ["after_root", "block1", "block2", "block3",
                               "block4", "pre_logits"]
  assert info["head"] == {"file": "head.keras", "input": "pre_logits",
                          "units": 4}
  assert info["input"]["shape"] == [None, runs.IMAGE_SIZE, runs.IMAGE_SIZE, 3]
  assert info == selfsup.train.load_info(out)
  metrics = trainer.evaluate(split="val", num_batches=2, batch_size=5)
  assert sorted(metrics) == ["accuracy", "images", "loss"]
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1

  images = np.random.default_rng(0).uniform(
      -1, 1, (3, runs.IMAGE_SIZE, runs.IMAGE_SIZE, 3)).astype(np.float32)
  want = {k: v.numpy() for k, v in trainer.task.backbone(
      images, training=False).items()}
  keras_model = selfsup.train.load_backbone(out)
  got = keras_model(images, training=False)
  assert sorted(got) == sorted(set(want) - {"logits"})
  for key in got:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
  head = keras.saving.load_model(os.path.join(out, "head.keras"))
  np.testing.assert_allclose(head(got["pre_logits"]), want["logits"],
                             rtol=1e-5, atol=1e-5)

  # Plain TensorFlow, in a process that never imports selfsup.
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run(
      [sys.executable, "-c", _SERVE, os.path.join(out, "saved_model"),
       str(tmp_path / "images.npy"), str(tmp_path / "served.npz")],
      cwd=str(tmp_path), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {
      "selfsup": False}
  with np.load(tmp_path / "served.npz") as served:
    assert sorted(served.files) == sorted(got)
    for key in got:
      np.testing.assert_allclose(served[key], want[key], rtol=1e-5,
                                 atol=1e-5, err_msg=key)


def test_batch_larger_than_the_split_is_refused(tmp_path):
  with pytest.raises(ValueError, match="batch_size=20 is invalid: expected at most"):
    _trainer(tmp_path, config=runs.config(batch_size=20))


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    (None, None, None, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
])
def test_only_the_chief_writes(cluster, task_type, task_id, chief):
  """Who writes checkpoints, summaries and the export in a multi-worker run
  (the run itself is in test_distributed.py)."""
  class Strategy:
    cluster_resolver = None if cluster is None else (
        tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type,
            task_id=task_id))

  is_chief = trainer_lib._is_chief  # pylint: disable=protected-access
  assert is_chief(Strategy()) is chief
