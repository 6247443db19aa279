"""The online linear probe: it learns, counts ties against itself, and never
touches the backbone."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import selfsup.models
from selfsup.train import probe as probe_lib


def _backbone():
  keras.utils.set_random_seed(0)
  return selfsup.models.get("resnet18_v2", width=0.25, num_classes=None,
                            input_shape=(None, None, 3))


def _weights(model):
  return [np.array(v.numpy()) for v in model.variables]


def test_probe_learns_and_leaves_the_backbone_alone():
  backbone = _backbone()
  dims = probe_lib.feature_dims(backbone, (16, 16, 3), ("pre_logits",
                                                         "block2"))
  probe = probe_lib.OnlineProbe(3, dims, learning_rate=0.05)
  rng = np.random.default_rng(0)
  labels = np.arange(24) % 3
  # Classes differ in brightness: linearly separable in any endpoint.
  images = (rng.normal(0, 0.1, (24, 16, 16, 3))
            + (labels[:, None, None, None] - 1.0)).astype(np.float32)
  batch = {"image": tf.constant(images[:, None].repeat(4, 1)),  # 4 copies
           "class_label": tf.constant(labels)}
  before = _weights(backbone)
  step = tf.function(lambda b: probe.train_step(backbone, b, replicas=1))
  first = step(batch)
  for _ in range(60):
    last = step(batch)
  for got, want in zip(_weights(backbone), before):
    np.testing.assert_array_equal(got, want)  # no gradient, no BN update
  for name in ("pre_logits", "block2"):
    assert float(last[f"probe/{name}/loss"]) < float(
        first[f"probe/{name}/loss"])
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": labels}).batch(10)
  top1 = probe.evaluate(backbone, ds)
  assert set(top1) == {"pre_logits", "block2"}
  assert top1["block2"] > 0.9
  # Later evaluations reuse the traced function (batches of 10 and of 4).
  assert probe.evaluate(backbone, ds) == top1
  assert probe._eval_step.experimental_get_tracing_count() <= 2


def test_patch_batches_average_their_patches():
  backbone = _backbone()
  dims = probe_lib.feature_dims(backbone, (8, 8, 3), ("pre_logits",))
  probe = probe_lib.OnlineProbe(2, dims, patch_based=True)
  patches = tf.random.stateless_normal((2, 9, 8, 8, 3), seed=(1, 2))
  feats = probe.features(backbone, probe.batch_images({"image": patches}))
  one = backbone(tf.reshape(patches, (-1, 8, 8, 3)), training=False)
  want = tf.reduce_mean(tf.reshape(one["pre_logits"], (2, 9, -1)), axis=1)
  np.testing.assert_allclose(feats["pre_logits"], want, rtol=1e-5,
                             atol=1e-6)


def test_ties_and_nans_count_against_the_probe():
  labels = tf.constant([0, 1, 2, 0])
  assert float(probe_lib._top1(tf.zeros((4, 3)), labels)) == 0.0  # pylint: disable=protected-access
  nan = tf.fill((4, 3), float("nan"))
  assert float(probe_lib._top1(nan, labels)) == 0.0  # pylint: disable=protected-access
  good = tf.one_hot(labels, 3)
  assert float(probe_lib._top1(good, labels)) == 1.0  # pylint: disable=protected-access


def test_unknown_endpoint_is_a_config_error():
  backbone = _backbone()
  try:
    probe_lib.feature_dims(backbone, (8, 8, 3), ("pre_logit",))
  except selfsup.core.ConfigError as err:
    assert "probe_endpoints" in str(err) and "pre_logits" in str(err)
  else:
    raise AssertionError("an unknown endpoint must fail")


# --------------------------------------------------------------------------
# In the trainer.


def _trainer(workdir, source=None, **cfg):
  from selfsup.train import Trainer  # pylint: disable=import-outside-toplevel
  from tests import training_runs as runs  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  task = runs.make_task("rotation")
  source = source or runs.digits(runs.FIXED_FRACTION)
  cfg = dict(dict(train_steps=6, eval_split="val", probe_every=2,
                  online_probe=None,
                  probe_eval_batches=2, sync_batch_norm=False,
                  checkpoint_steps=2), **cfg)
  return Trainer(task, source, str(workdir), runs.config(**cfg))


def test_probe_does_not_change_training(tmp_path):
  from tests import training_runs as runs  # pylint: disable=import-outside-toplevel
  trained = {}
  for probe in (False, True):
    trainer = _trainer(tmp_path / str(probe), online_probe=probe)
    assert (trainer.probe is not None) == probe
    logs = trainer.train()
    trained[probe] = runs.weights(trainer.task.modules)
    if probe:
      assert "probe/pre_logits/top1" in logs
      steps = [e["step"] for e in trainer.probe_history.entries]
      assert steps == [0, 2, 4, 6]
      record = json.loads((tmp_path / "True" / "online_probe.json")
                          .read_text())
      assert record["eval_split"] == "val" and len(record["history"]) == 4
  # Identical here; a bound far below what one leaked gradient step moves,
  # in case another processor schedules the extra ops' threads differently.
  for key, value in trained[False].items():
    np.testing.assert_allclose(trained[True][key], value, rtol=1e-6,
                               atol=1e-7, err_msg=key)


def test_resumed_run_continues_the_probe_exactly(tmp_path):
  whole = _trainer(tmp_path / "whole")
  whole.train()
  want = whole.probe_history.entries
  first = _trainer(tmp_path / "split")
  first.train(max_steps=4)
  # A killed run: its history file may hold an entry past the checkpoint.
  first.probe_history.add(5, {"pre_logits": 0.0})
  second = _trainer(tmp_path / "split")
  second.restore()
  assert [e["step"] for e in second.probe_history.entries] == [0, 2, 4]
  second.train()
  got = second.probe_history.entries
  assert [e["step"] for e in got] == [e["step"] for e in want]
  for a, b in zip(got, want):
    assert a["top1"]["pre_logits"] == pytest.approx(b["top1"]["pre_logits"],
                                                     abs=1e-6)


class _Unlabelled:
  """A source whose images have no class labels."""
  num_classes = None

  def __init__(self, source):
    self._source = source

  def __getattr__(self, name):
    return getattr(self._source, name)


def test_probe_is_off_without_labels_and_true_requires_them(tmp_path):
  from tests import training_runs as runs  # pylint: disable=import-outside-toplevel
  source = _Unlabelled(runs.digits(runs.FIXED_FRACTION))
  assert _trainer(tmp_path / "a", source=source).probe is None
  with pytest.raises(selfsup.core.ConfigError, match="online_probe=True"):
    _trainer(tmp_path / "b", source=source, online_probe=True)


def test_every_task_keeps_the_class_labels_for_the_probe():
  import selfsup.tasks  # pylint: disable=import-outside-toplevel
  from selfsup.data import make_pipeline  # pylint: disable=import-outside-toplevel
  from tests import training_runs as runs  # pylint: disable=import-outside-toplevel
  source = runs.digits(runs.FIXED_FRACTION)
  for name in selfsup.tasks.TASKS.names():
    task = runs.make_task(name)
    ds = make_pipeline(source, "train", task.specs["train"], batch_size=4,
                       training=True, seed=0,
                       batch_spec=task.specs["batch"] or None)
    assert task.class_label_key in ds.element_spec, name
