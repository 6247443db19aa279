"""SimCLR, BYOL and Barlow Twins as tasks: heads, BYOL's target network (its
tau schedule, EMA update, stop-gradient) and an exact resume of BYOL.
Training under the default and a mirrored strategy: tests/test_distributed.py
(it loops over every registered task)."""
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

import selfsup.models
import selfsup.tasks
from selfsup.core.checks import ConfigError
from selfsup.tasks.two_view_tasks import tau_schedule
from selfsup.train import Trainer
from tests import training_runs as runs

METHODS = ("simclr", "byol", "barlow_twins")


def _byol():
  return runs.make_task("byol").build()


def _batch(task, n=4, seed=0):
  s = task.image_size
  return {"image": tf.random.stateless_uniform([n, 2, s, s, 3], [seed, 1],
                                               -1.0, 1.0)}


@pytest.mark.parametrize("k,want", [(0, 0.996), (50, 0.998), (100, 1.0),
                                    (25, 1 - 0.004 * (math.cos(math.pi / 4)
                                                      + 1) / 2)])
def test_tau_schedule_is_the_cosine_from_base_to_one(k, want):
  assert float(tau_schedule(k, 100)) == pytest.approx(want, abs=1e-7)


def test_byol_target_starts_as_the_online_network_and_follows_by_ema():
  task = _byol()
  online = task._online_variables(all_=True)  # pylint: disable=protected-access
  target = task._target_variables(all_=True)  # pylint: disable=protected-access
  assert len(online) == len(target) > 0
  for o, t in zip(online, target):
    np.testing.assert_array_equal(o.numpy(), t.numpy())
  rng = np.random.default_rng(0)
  for v in task.trainable_variables:
    v.assign(v + rng.normal(size=v.shape).astype(np.float32))
  before_t = [t.numpy() for t in task._target_variables()]  # pylint: disable=protected-access
  now_o = [o.numpy() for o in task._online_variables()]  # pylint: disable=protected-access
  task.after_update(tf.constant(30), 120)
  tau = 1 - 0.004 * (math.cos(math.pi * 30 / 120) + 1) / 2
  for t, b, o in zip(task._target_variables(), before_t, now_o):  # pylint: disable=protected-access
    np.testing.assert_allclose(t.numpy(), tau * b + (1 - tau) * o, rtol=1e-6,
                               atol=1e-7, err_msg=t.path)


def test_byol_trains_only_the_online_network():
  task = _byol()
  target_ids = {id(v) for m in (task.target_backbone, task.target_projector)
                for v in m.variables}
  assert not target_ids & {id(v) for v in task.trainable_variables}
  predictor = {id(v) for v in task.predictor.trainable_variables}
  assert predictor <= {id(v) for v in task.trainable_variables}
  with tf.GradientTape() as tape:
    loss, _ = task.step(_batch(task), training=True)
  grads = tape.gradient(loss, task.target_projector.trainable_variables)
  assert all(g is None for g in grads)


@pytest.mark.parametrize("name", METHODS)
def test_step_is_finite_and_export_is_the_backbone_only(name):
  task = runs.make_task(name).build()
  loss, metrics = task.step(_batch(task), training=True)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert set(metrics) == set(task.metric_names)
  assert "projector" in task.modules
  assert task.backbone.name != task.modules["projector"].name
  # The export writes task.backbone: its outputs are the backbone endpoints.
  assert "pre_logits" in task.backbone.output and \
      "logits" not in task.backbone.output


_BACKBONES = [pytest.param(b, marks=pytest.mark.slow)
              if b not in ("vgg19_bn", "revnet50") else b
              for b in selfsup.models.BACKBONES.names()]


@pytest.mark.parametrize("backbone", _BACKBONES)
def test_simclr_works_with_every_backbone(backbone):
  task = selfsup.tasks.get("simclr", backbone=backbone, width=0.25,
                           image_size=32, projector=(8, 4)).build()
  loss, _ = task.step(_batch(task, n=2), training=True)
  assert np.isfinite(float(loss))


@pytest.mark.parametrize("kwargs,match", [
    (dict(projector=(16,)), "projector"),
    (dict(projector=(16, None)), "projector"),
    (dict(projector_layers=0), "projector_layers"),
])
def test_bad_settings_are_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    selfsup.tasks.get("simclr", **kwargs)


def test_bad_method_settings_are_config_errors():
  with pytest.raises(ConfigError, match="temperature"):
    selfsup.tasks.get("simclr", temperature=0)
  with pytest.raises(ConfigError, match="base_tau"):
    selfsup.tasks.get("byol", base_tau=1.5)


def test_byol_resume_is_exact_target_included(tmp_path):
  """A run stopped after its step-2 checkpoint and resumed by a new trainer
  ends where the uninterrupted run ends, target network included."""
  cfg = dict(batch_size=8, train_steps=4, checkpoint_steps=2,
             shuffle_buffer=16, steps_per_loop=2, sync_batch_norm=False)

  def trainer(workdir):
    runs._seed()  # pylint: disable=protected-access
    return Trainer(runs.make_task("byol"), runs.digits(), str(workdir),
                   runs.config(**cfg))

  straight = trainer(tmp_path / "a")
  start = runs.weights(straight.task.modules)
  straight.train(max_steps=2)
  # What a run killed right after its step-2 checkpoint leaves behind.
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  straight.train()
  resumed = trainer(tmp_path / "b")
  assert resumed.restore().endswith("ckpt-2")
  resumed.train()
  a, b = runs.weights(straight.task.modules), runs.weights(
      resumed.task.modules)
  assert sorted(a) == sorted(b)
  targets = [k for k in a if k.startswith("target_")]
  assert targets and any(not np.array_equal(a[k], start[k]) for k in targets)
  for key in a:
    np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6,
                               err_msg=key)


def test_simclr_evaluation_views_are_augmented_and_fixed():
  """The evaluation views are two training augmentations, the same at every
  evaluation (the pipeline is seeded per example): with two identical crops
  NT-Xent top-1 was 1.0 at random initialisation."""
  import selfsup.data as data_lib
  task = runs.make_task("simclr").build()
  source = runs.digits()

  def first_batch():
    ds = data_lib.make_pipeline(source, "val", task.specs["eval"],
                                batch_size=32, training=False, seed=0)
    return next(iter(ds))

  batch, again = first_batch(), first_batch()
  np.testing.assert_array_equal(batch["image"].numpy(),
                                again["image"].numpy())
  views = batch["image"].numpy()
  gaps = np.abs(views[:, 0] - views[:, 1]).mean(axis=(1, 2, 3))
  assert (gaps > 1e-3).all(), gaps
  _, metrics = task.step({"image": batch["image"]}, training=False)
  assert float(metrics["accuracy"]) < 0.9, float(metrics["accuracy"])
