"""The online linear probe: it learns, counts ties against itself, and never
touches the backbone."""
import keras
import numpy as np
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
