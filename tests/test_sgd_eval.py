"""Tests for selfsup.evaluation.sgd."""
import math

import numpy as np
import pytest
import tensorflow as tf

from selfsup import models
from selfsup.evaluation import extract
from selfsup.evaluation import features
from selfsup.evaluation import lbfgs
from selfsup.evaluation import sgd

C, D = 4, 16


def _blobs(n, draw, separation=1.0, noise=0.5):
  """Gaussian classes around fixed random means; `draw` picks the sample."""
  means = np.random.default_rng(0).normal(size=(C, D)) * separation
  rng = np.random.default_rng([1, draw])
  y = rng.integers(0, C, size=n)
  x = means[y] + noise * rng.normal(size=(n, D))
  return x.astype(np.float32), y


def _ds(x, y, batch, shuffle=False):
  ds = tf.data.Dataset.from_tensor_slices((x, y))
  if shuffle:
    ds = ds.shuffle(len(x), seed=0)
  return ds.batch(batch)


def _objective(model, x, y, l2):
  """Mean cross-entropy + l2 * ||W||^2 over all kernels, in numpy."""
  logits = model(x, training=False).numpy().astype(np.float64)
  logits -= logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  kernels = [v.numpy() for v in model.trainable_variables if v.ndim == 2]
  return (-log_p[np.arange(len(y)), y].mean()
          + l2 * sum(float(np.sum(k ** 2)) for k in kernels))


@pytest.fixture(scope="module")
def backbone():
  return models.get("resnet50_v2", width=0.25, input_shape=(None, None, 3))


def test_linear_head_on_cached_features(tmp_path):
  x, y = _blobs(512, draw=0)
  xv, yv = _blobs(256, draw=1)
  for split, (a, b) in {"train": (x, y), "val": (xv, yv)}.items():
    features.write_split(str(tmp_path), split, [(a, b)], layer="pre_logits",
                         shard_size=200, progress=False)
  train = features.dataset(str(tmp_path), "train", 64, shuffle_buffer=512,
                           seed=0)
  val = features.dataset(str(tmp_path), "val", 100)
  result = sgd.train_head("linear", train_data=train, eval_data=val,
                          num_classes=C, epochs=6, seed=0, log=lambda _: None)
  assert result["top1"] > 0.95 and result["top5"] == 1.0
  assert result["steps_per_epoch"] == 8  # counted: the cache's is unknown
  assert result["batch_size"] == 64 and result["num_eval_examples"] == 256
  assert result["l2"] == 0.0  # the authors' linear_eval: no weight decay
  losses = [h["train_loss"] for h in result["history"]]
  # Zero initialisation: the objective starts at log(C) and must go down.
  assert losses[0] < math.log(C)
  assert all(b < a + 1e-3 for a, b in zip(losses, losses[1:]))
  assert losses[-1] < losses[0] - 0.05
  full = _objective(result["model"], x, y, result["l2"])
  assert full < math.log(C) - 0.3
  assert result["train_loss"] == pytest.approx(full, abs=0.05)


def test_mlp_head_separates_clusters():
  x, y = _blobs(512, draw=0)
  xv, yv = _blobs(256, draw=1)
  # 100 / (M * C) is 1.6 here: on the 16 * 1000 hidden weights that penalty
  # zeroes the MLP (it is ~0.02 of the loss at ImageNet's M and C), so this
  # test sets a lambda of ImageNet's relative strength.
  result = sgd.train_head(
      "mlp", train_data=_ds(x, y, 32, shuffle=True), eval_data=_ds(xv, yv, 64),
      num_classes=C, epochs=8, l2=1e-2, seed=0, eval_every_epochs=4,
      log=lambda _: None)
  assert result["top1"] > 0.95
  model = result["model"]
  assert [l.name for l in model.layers[1:]] == ["hidden", "dropout", "logits"]
  assert model.get_layer("hidden").units == 1000
  assert model.get_layer("dropout").rate == 0.5
  history = result["history"]
  assert "top1" in history[3] and "top1" not in history[4]
  assert history[-1]["top1"] == result["top1"]
  assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("head", sgd.HEADS)
def test_l2_penalty_is_lambda_times_squared_kernels(head):
  model = sgd.make_head(head, C, D, l2=0.3, seed=1)
  kernels = [l.kernel for l in model.layers if hasattr(l, "kernel")]
  assert len(kernels) == (2 if head == "mlp" else 1)
  for k in kernels:  # the linear head starts at 0: give it weights to penalise
    k.assign(tf.random.normal(k.shape, seed=2))
  expected = 0.3 * sum(float(tf.reduce_sum(k ** 2)) for k in kernels)
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)
  default = sgd.make_head(head, C, D)
  if head == "mlp":  # the supplementary: "the same l2 scheme as L-BFGS"
    assert float(default.get_layer("logits").kernel_regularizer.l2) == (
        pytest.approx(100 / (D * C)))
  else:  # the paper is silent; the authors' code used no weight decay
    assert not default.losses
  lbfgs_like = sgd.make_head(head, C, D, l2="lbfgs")
  assert float(lbfgs_like.get_layer("logits").kernel_regularizer.l2) == (
      pytest.approx(100 / (D * C)))
  assert not sgd.make_head(head, C, D, l2=0).losses


def test_larger_l2_gives_smaller_weights():
  x, y = _blobs(256, draw=0)
  norms = []
  for l2 in (0.0, 1e-2, 1.0):
    result = sgd.train_head("linear", train_data=_ds(x, y, 64),
                            eval_data=_ds(x, y, 64), num_classes=C, epochs=4,
                            l2=l2, log=lambda _: None)
    norms.append(float(np.linalg.norm(result["model"].get_layer(
        "logits").kernel.numpy())))
  assert norms[0] > norms[1] > norms[2] > 0


def test_mlp_schedule_is_the_papers():
  x, y = _blobs(8, draw=0)
  result = sgd.train_head("mlp", train_data=_ds(x, y, 8),
                          eval_data=_ds(x, y, 8), num_classes=C, seed=0,
                          log=lambda _: None)
  lrs = [h["lr"] for h in result["history"]]
  assert result["epochs"] == len(lrs) == 180
  # 0.01 as given, not scaled by 8/256; x0.1 after 60 and after 120 epochs.
  assert lrs[:60] == pytest.approx([0.01] * 60)
  assert lrs[60:120] == pytest.approx([0.001] * 60)
  assert lrs[120:] == pytest.approx([1e-4] * 60)


def test_linear_schedule_is_the_papers():
  config = sgd.paper_config("linear", first_decay=30)
  assert config == dict(epochs=70, decay_epochs=(30, 50), base_lr=0.1,
                        scale_lr=True, batch_size=2048)
  assert sgd.paper_config("linear")["decay_epochs"] == (480, 500)
  assert sgd.paper_config("linear", patch_based=True)["batch_size"] == 1024
  assert sgd.paper_config("mlp")["batch_size"] == 512
  x, y = _blobs(16, draw=0)
  messages = []
  kwargs = {k: v for k, v in config.items() if k != "batch_size"}
  result = sgd.train_head("linear", train_data=_ds(x, y, 8),
                          eval_data=_ds(x, y, 8), num_classes=C,
                          batch_size=2048, log=messages.append, **kwargs)
  lrs = [h["lr"] for h in result["history"]]
  assert result["steps_per_epoch"] == 2 and len(lrs) == 70
  # 0.1 * 2048 / 256 = 0.8, then x0.1 after 30 and after 50 epochs.
  assert lrs[:30] == pytest.approx([0.8] * 30)
  assert lrs[30:50] == pytest.approx([0.08] * 20)
  assert lrs[50:] == pytest.approx([0.008] * 20)
  assert any("batch_size=2048" in m for m in messages)  # 8 != 2048: told
  schedule = sgd.learning_rate_schedule(0.1, 1024, 10, (30, 50))
  assert float(schedule(0)) == pytest.approx(0.4)
  assert float(schedule(299)) == pytest.approx(0.4)
  assert float(schedule(300)) == pytest.approx(0.04)


def test_repeating_data_with_steps_per_epoch_and_dict_batches():
  x, y = _blobs(64, draw=0)
  train = tf.data.Dataset.from_tensor_slices(
      {"features": x, "label": y}).repeat().batch(16)
  result = sgd.train_head("linear", train_data=train,
                          eval_data=_ds(x, y, 16), num_classes=C, epochs=3,
                          steps_per_epoch=5, log=lambda _: None)
  assert result["steps_per_epoch"] == 5 and len(result["history"]) == 3
  with pytest.raises(ValueError, match="steps_per_epoch"):
    sgd.train_head("linear", train_data=train, eval_data=_ds(x, y, 16),
                   num_classes=C, epochs=1, log=lambda _: None)


def _image_batches(images, labels, batch):
  return tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": labels}).batch(batch)


def test_on_the_fly_images_keep_the_backbone_frozen(backbone):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=16)
  before = [w.copy() for w in backbone.get_weights()]
  data = _image_batches(images, labels, 8)
  result = sgd.train_head("linear", train_data=data, eval_data=data,
                          num_classes=3, epochs=2, backbone=backbone,
                          log=lambda _: None)
  # input_dim comes from pre_logits (512 * 0.25); the head did train.
  kernel = result["model"].get_layer("logits").kernel.numpy()
  assert kernel.shape == (128, 3) and np.abs(kernel).max() > 0
  for old, new in zip(before, backbone.get_weights()):  # BN statistics too
    np.testing.assert_array_equal(old, new)
  rep = extract.representation(backbone, tf.constant(images[:4]), "pre_logits")
  expected = backbone(images[:4], training=False)["pre_logits"]
  np.testing.assert_allclose(rep, expected, rtol=1e-5, atol=1e-6)


def test_on_the_fly_patches_average_the_nine_patches(backbone):
  rng = np.random.default_rng(1)
  patches = rng.uniform(-1, 1, size=(8, 9, 12, 12, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=8)
  rep = extract.representation(backbone, tf.constant(patches[:2]),
                               "pre_logits").numpy()
  for i in range(2):
    each = backbone(patches[i], training=False)["pre_logits"].numpy()
    np.testing.assert_allclose(rep[i], each.mean(axis=0), rtol=1e-4,
                               atol=1e-5)
  before = [w.copy() for w in backbone.get_weights()]
  result = sgd.train_head("mlp", train_data=_image_batches(patches, labels, 4),
                          eval_data=_image_batches(patches, labels, 4),
                          num_classes=3, epochs=1, backbone=backbone,
                          log=lambda _: None)
  assert result["num_eval_examples"] == 8 and 0 <= result["top1"] <= 1
  for old, new in zip(before, backbone.get_weights()):
    np.testing.assert_array_equal(old, new)


def test_spatial_endpoint_is_pooled_as_the_feature_export(backbone):
  """On the fly and cached features are one representation: a spatial
  endpoint is max-pooled on the export's adaptive grid in both."""
  images = np.random.default_rng(2).uniform(size=(4, 32, 32, 3)).astype(
      np.float32)
  data = _image_batches(images, np.array([0, 1, 0, 1]), 2)
  seen = []
  pooled = extract.representation(backbone, tf.constant(images), "block3",
                                  max_features=64)
  result = sgd.train_head("linear", train_data=data, eval_data=data,
                          num_classes=2, epochs=1, backbone=backbone,
                          endpoint="block3", max_features=64, log=seen.append)
  assert result["model"].input_shape == (None, pooled.shape[-1])
  assert f"head on {pooled.shape[-1]} features" in seen[0]
  with pytest.raises(ValueError, match="expected one of"):
    sgd.train_head("linear", train_data=data, eval_data=data, num_classes=2,
                   epochs=1, backbone=backbone, endpoint="pool5",
                   log=lambda _: None)


def _fit(train, val=None, **kwargs):
  kwargs = dict(dict(num_classes=C, epochs=1, log=lambda _: None), **kwargs)
  return sgd.train_head(train_data=train,
                        eval_data=train if val is None else val, **kwargs)


def test_bad_inputs_raise():
  x, y = _blobs(16, draw=0)
  good = _ds(x, y, 8)
  with pytest.raises(ValueError, match="head='svm'.*'linear', 'mlp'"):
    _fit(good, head="svm")
  with pytest.raises(ValueError, match="train_data is empty"):
    _fit(_ds(x[:0], y[:0], 8), good)
  with pytest.raises(ValueError, match="eval_data is empty"):
    _fit(good, _ds(x[:0], y[:0], 8))
  in_range = r"labels must lie in \[0, 4\)"
  with pytest.raises(ValueError, match="train_data " + in_range):
    _fit(_ds(x, np.where(y == 0, C, y), 8))
  with pytest.raises(ValueError, match="train_data " + in_range):
    _fit(_ds(x, np.where(y == 0, -1, y), 8))
  with pytest.raises(ValueError, match="eval_data " + in_range):
    _fit(good, _ds(x, y + C, 8))
  with pytest.raises(ValueError, match="input_dim=8 but train_data's features "
                     "has 16"):
    _fit(good, input_dim=8)
  with pytest.raises(ValueError, match="features \\[B, M\\]"):
    _fit(_ds(x.reshape(16, 4, 4), y, 8))
  with pytest.raises(ValueError, match="labels must be integer"):
    _fit(_ds(x, y.astype(np.float32), 8))
  with pytest.raises(ValueError, match="eval_data repeats forever"):
    _fit(good, good.repeat())
  with pytest.raises(ValueError, match="num_classes=1"):
    _fit(good, num_classes=1)
  with pytest.raises(ValueError, match="l2=-1"):
    _fit(good, l2=-1.0)
  with pytest.raises(ValueError, match="epochs=0"):
    _fit(good, epochs=0)
  with pytest.raises(ValueError, match="decay_epochs must be strictly"):
    _fit(good, decay_epochs=(5, 2))
  with pytest.raises(ValueError, match="tf.data.Dataset"):
    _fit((x, y), good)
  with pytest.raises(ValueError, match="pass backbone="):
    _fit(_ds(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int64), 2))
  with pytest.raises(FloatingPointError, match="lower base_lr"):
    _fit(_ds(x * 1e30, y, 8), base_lr=1e10, l2=0.0)


def test_accuracy_matches_lbfgs_evaluate_on_a_hard_problem():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(300, D)).astype(np.float32)
  y = (x[:, 0] * 3 + rng.normal(size=300) * 2).astype(int) % 10  # noisy
  result = sgd.train_head("linear", train_data=_ds(x, y, 50),
                          eval_data=_ds(x, y, 64), num_classes=10, epochs=2,
                          log=lambda _: None)
  layer = result["model"].get_layer("logits")
  reference = lbfgs.evaluate(lbfgs.LogisticRegressionResult(
      weights=layer.kernel.numpy(), bias=layer.bias.numpy(), objective=0.0,
      iterations=0, seconds=0.0, converged=True, l2=0.0), x, y)
  assert 0 < result["top1"] < result["top5"] < 1  # the two must differ
  assert result["top1"] == pytest.approx(reference["top1"])
  assert result["top5"] == pytest.approx(reference["top5"])
