"""Pretext tasks: arguments, batch formats and loss/metric definitions.

Tiny models (ResNet18 v2 at width 0.25, 4-pixel patches, 16-unit heads); the
training itself is tested in test_trainer.py and test_distributed.py.
"""
import numpy as np
import pytest
import tensorflow as tf

import selfsup
from selfsup import preprocess as pp
from selfsup.tasks import base, losses
from tests import training_runs

P = 4  # patch side
# The authors' head starts with near-zero logits (sigma 0.005 kernels): every
# input gives a loss within ~1e-5 of log(classes). Tests that tell two inputs
# apart by their loss use the glorot-initialised head.
DISTINCT_HEAD = "task"


def _patch_task(name, **kwargs):
  kwargs = dict(training_runs.PATCH_KWARGS, **kwargs)
  return training_runs.make_task(name, **kwargs).build()


def _patches(batch, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(batch, 9, P, P, 3)), tf.float32)


class _Embeddings:
  """Stands in for a backbone: returns fixed embeddings as its logits."""

  def __init__(self, embeddings):
    self.embeddings = tf.constant(embeddings, tf.float32)
    self.inputs = None

  def __call__(self, images, training):
    del training
    self.inputs = images
    return {"logits": self.embeddings}


# --------------------------------------------------------------------------
# Registry and arguments.


def test_registry_lists_the_five_tasks_and_the_three_methods():
  assert selfsup.tasks.names() == ["barlow_twins", "byol", "exemplar",
                                   "jigsaw", "relative_patch_location",
                                   "rotation", "simclr", "supervised"]
  for name in selfsup.tasks.TASKS:
    assert selfsup.tasks.get(name).name == name


@pytest.mark.parametrize("make, match", [
    (lambda: selfsup.tasks.get("colorization"), "'colorization'"),
    (lambda: selfsup.tasks.get("rotation", backbone="resnet7"), "'resnet7'"),
    (lambda: selfsup.tasks.get("supervised", num_classes=1),
     "num_classes=1"),
    (lambda: selfsup.tasks.get("exemplar", copies=1), "copies=1"),
    (lambda: selfsup.tasks.get("exemplar", normalize="rows"),
     "normalize='rows'"),
])
def test_bad_arguments_are_refused_quoting_the_value(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_flatten_copies_keeps_images_and_labels_together():
  images = tf.reshape(tf.range(2 * 3 * 2 * 2 * 1), [2, 3, 2, 2, 1])
  labels = tf.constant([[10, 11, 12], [20, 21, 22]])
  flat, flat_labels = base.flatten_copies(images, labels)
  assert flat.shape == (6, 2, 2, 1)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(flat[3 * i + j], images[i, j])
      assert flat_labels[3 * i + j] == labels[i, j]


# --------------------------------------------------------------------------
# What the pipeline gives is what the model takes.


@pytest.mark.parametrize("name, kwargs", [
    ("rotation", {}), ("supervised", {}), ("exemplar", {}), ("jigsaw", {}),
    ("jigsaw", {"shared_perms": 8}), ("relative_patch_location", {}),
], ids=["rotation", "supervised", "exemplar", "jigsaw", "jigsaw_shared",
        "relative_patch_location"])
def test_pipeline_batches_match_dummy_batch_and_train(name, kwargs):
  task = training_runs.make_task(name, **kwargs).build()
  source = training_runs.digits()
  ds = selfsup.data.make_pipeline(
      source, "train", task.specs["train"], batch_size=4, training=True,
      seed=0, batch_spec=task.specs["batch"] or None)
  batch = next(iter(ds))
  dummy = task.dummy_batch(4)
  assert set(dummy) <= set(batch)
  for key, value in dummy.items():
    assert batch[key].shape == value.shape, (key, batch[key].shape)
    assert batch[key].dtype == value.dtype, (key, batch[key].dtype)
  loss, metrics = task.step(batch, training=True)
  assert task.metric_names == tuple(sorted(metrics)) == ("accuracy",)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
  if kwargs.get("shared_perms"):  # the authors' variant: one subset a batch
    labels = batch["label"].numpy()
    assert labels.shape == (4, 8) and (labels == labels[:1]).all()


# --------------------------------------------------------------------------
# Rotation.


def test_rotation_scores_each_copy_against_its_own_label():
  """A fake backbone that reads the rotation off the image gets accuracy 1
  only if images and labels are flattened the same way."""
  rng = np.random.default_rng(0)
  labels = np.stack([rng.permutation(4) for _ in range(3)]).astype(np.int32)
  images = np.broadcast_to(labels[:, :, None, None, None],
                           (3, 4, 2, 2, 3)).astype(np.float32)
  task = selfsup.tasks.get("rotation", image_size=2)

  class Reader:
    def __call__(self, x, training):
      del training
      return {"logits": 10.0 * tf.one_hot(tf.cast(x[:, 0, 0, 0], tf.int32),
                                          4)}

  task.backbone = Reader()
  loss, metrics = task.step({"image": images, "label": labels}, False)
  assert float(metrics["accuracy"]) == 1.0 and float(loss) < 1e-3
  wrong = labels[:, ::-1].copy()
  _, metrics = task.step({"image": images, "label": wrong}, False)
  assert float(metrics["accuracy"]) < 1.0


# --------------------------------------------------------------------------
# Jigsaw and Relative Patch Location: the efficient grid format equals the
# materialised copies.


@pytest.mark.parametrize("training", [False, True])
def test_jigsaw_grid_equals_materialised_permutations(training):
  """The model permutes the 9 patch embeddings; feeding the permuted copies
  [B, K, 9, p, p, C] gives the same loss. With training=True too: every copy
  holds each patch once, so batch-norm statistics are those of the grid
  (dropout is 0 here, as it draws different masks)."""
  task = _patch_task("jigsaw", head_settings=DISTINCT_HEAD)
  perms = pp.load_permutations()
  patches = _patches(3)
  labels = tf.constant(np.random.default_rng(1).integers(0, 100, (3, 5)),
                       tf.int32)
  materialised = tf.gather(patches, tf.gather(perms, labels), batch_dims=1)
  assert materialised.shape == (3, 5, 9, P, P, 3)
  grid_loss, grid_metrics = task.step({"image": patches, "label": labels},
                                      training)
  mat_loss, mat_metrics = task.step({"image": materialised, "label": labels},
                                    training)
  np.testing.assert_allclose(float(mat_loss), float(grid_loss), rtol=1e-5)
  assert float(mat_metrics["accuracy"]) == float(grid_metrics["accuracy"])
  # The other convention (scatter instead of gather) is a different input.
  inverse = np.argsort(perms, axis=1)
  scattered = tf.gather(patches, tf.gather(inverse, labels), batch_dims=1)
  other, _ = task.step({"image": scattered, "label": labels}, training)
  assert abs(float(other) - float(grid_loss)) > 1e-3


def test_jigsaw_pipeline_formats_agree_through_the_task():
  """`jigsaw(permute=False)` and `jigsaw(permute=True)` with the same seed
  describe the same examples: the task's loss is the same for both."""
  task = _patch_task("jigsaw")
  features = {"image": _patches(1)[0], pp.SEED_KEY: tf.constant([3, 4],
                                                                tf.int64)}
  grid = pp.get("jigsaw(6, permute=False)", training=True)(features)
  copies = pp.get("jigsaw(6)", training=True)(features)
  np.testing.assert_array_equal(grid["label"], copies["label"])
  batch = lambda f: {"image": f["image"][None], "label": f["label"][None]}
  grid_loss, _ = task.step(batch(grid), False)
  copies_loss, _ = task.step(batch(copies), False)
  np.testing.assert_allclose(float(copies_loss), float(grid_loss), rtol=1e-5)


def test_relative_patch_location_grid_equals_materialised_pairs():
  """Label l pairs patch NEIGHBOURS[l] (first) with the centre patch 4."""
  task = _patch_task("relative_patch_location", head_settings=DISTINCT_HEAD)
  patches = _patches(3)
  rng = np.random.default_rng(2)
  labels = np.stack([rng.permutation(8) for _ in range(3)]).astype(np.int32)
  pairs = np.array([[[pp.NEIGHBOURS[l], 4] for l in row] for row in labels])
  materialised = tf.gather(patches, pairs, batch_dims=1)
  assert materialised.shape == (3, 8, 2, P, P, 3)
  grid_loss, grid_metrics = task.step({"image": patches, "label": labels},
                                      False)
  mat_loss, mat_metrics = task.step({"image": materialised, "label": labels},
                                    False)
  np.testing.assert_allclose(float(mat_loss), float(grid_loss), rtol=1e-5)
  assert float(mat_metrics["accuracy"]) == float(grid_metrics["accuracy"])
  swapped = tf.gather(patches, pairs[..., ::-1], batch_dims=1)
  other, _ = task.step({"image": swapped, "label": labels}, False)
  assert abs(float(other) - float(grid_loss)) > 1e-3


def test_patch_task_rejects_other_ranks():
  task = _patch_task("jigsaw")
  with pytest.raises(ValueError, match="expected image"):
    task.step({"image": tf.zeros([2, P, P, 3]),
               "label": tf.zeros([2, 4], tf.int32)}, False)


# --------------------------------------------------------------------------
# Exemplar.


def _reference_accuracy(embeddings, labels):
  """Fraction of embeddings whose nearest OTHER embedding shares the label."""
  d = ((embeddings[:, None] - embeddings[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  return float(np.mean(labels[d.argmin(1)] == labels))


def _exemplar_step(embeddings, copies, normalize="embedding"):
  task = selfsup.tasks.get("exemplar", image_size=2, copies=copies,
                           normalize=normalize)
  task.backbone = _Embeddings(embeddings)
  num_images = len(embeddings) // copies
  batch = {"image": tf.zeros([num_images, copies, 2, 2, 3])}
  loss, metrics = task.step(batch, training=False)
  assert task.backbone.inputs.shape == (num_images * copies, 2, 2, 3)
  return float(loss), float(metrics["accuracy"])


def test_exemplar_accuracy_is_nearest_other_embedding_from_same_image():
  # 3 images x 2 copies (rows 2i, 2i+1 are image i). Image 0's copies lie
  # far apart, each next to a copy of another image; images 1 and 2 are
  # tight pairs. Nearest others: 0->2 (wrong), 1->5 (wrong), 2<->3, 4<->5.
  e = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                [0.99, 0.0, 0.14], [0.98, 0.0, 0.2],
                [0.0, 0.98, -0.2], [0.0, 0.99, -0.14]])
  labels = np.repeat(np.arange(3), 2)
  normalised = e / np.linalg.norm(e, axis=1, keepdims=True)
  expected = _reference_accuracy(normalised, labels)
  assert expected == pytest.approx(4 / 6)
  loss, accuracy = _exemplar_step(e, copies=2)
  assert accuracy == pytest.approx(expected)
  want = losses.triplet_semihard_loss(labels, normalised, margin=0.5)
  assert loss == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("normalize", ["embedding", "batch"])
def test_exemplar_random_embeddings_against_numpy(normalize):
  rng = np.random.default_rng(3)
  e = rng.normal(size=(4 * 3, 5))
  labels = np.repeat(np.arange(4), 3)
  axis = 1 if normalize == "embedding" else 0
  normalised = e / np.linalg.norm(e, axis=axis, keepdims=True)
  loss, accuracy = _exemplar_step(e, copies=3, normalize=normalize)
  assert accuracy == pytest.approx(_reference_accuracy(normalised, labels))
  want = losses.triplet_semihard_loss(labels, normalised, margin=0.5)
  assert loss == pytest.approx(float(want), rel=1e-5)


def test_exemplar_identical_copies_score_one():
  e = np.repeat(np.random.default_rng(4).normal(size=(5, 4)), 2, axis=0)
  loss, accuracy = _exemplar_step(e, copies=2)
  assert accuracy == 1.0
  normalised = e / np.linalg.norm(e, axis=1, keepdims=True)
  want = losses.triplet_semihard_loss(np.repeat(np.arange(5), 2), normalised)
  assert loss == pytest.approx(float(want), rel=1e-5)


def _grouped_step(embeddings, copies, training=False, **kwargs):
  task = selfsup.tasks.get("exemplar", image_size=2, copies=copies, **kwargs)
  task.backbone = _Embeddings(embeddings)
  batch = {"image": tf.zeros([len(embeddings) // copies, copies, 2, 2, 3])}
  loss, metrics = task.step(batch, training=training)
  return float(loss), float(metrics["accuracy"])


@pytest.mark.parametrize("normalize", ["embedding", "batch"])
def test_exemplar_mines_and_normalises_within_groups_of_images(normalize):
  """mining_group=2 images: the loss is the mean of the groups' losses, the
  accuracy looks for neighbours in the group, "batch" normalises per group
  (the authors' per-core batch)."""
  e = np.random.default_rng(5).normal(size=(4 * 2, 3))
  labels = np.repeat(np.arange(4), 2)
  axis = 1 if normalize == "embedding" else 0
  want_loss, want_acc = [], []
  for part, lab in ((e[:4], labels[:4]), (e[4:], labels[4:])):
    n = part / np.linalg.norm(part, axis=axis, keepdims=True)
    want_loss.append(float(losses.triplet_semihard_loss(lab, n)))
    want_acc.append(_reference_accuracy(n, lab))
  loss, accuracy = _grouped_step(e, 2, normalize=normalize, mining_group=2)
  assert loss == pytest.approx(np.mean(want_loss), rel=1e-5)
  assert accuracy == pytest.approx(np.mean(want_acc))
  # The default group (16 images) holds all 4 images: another loss.
  whole, _ = _grouped_step(e, 2, normalize=normalize)
  assert abs(whole - loss) > 1e-4


def test_exemplar_groups_in_training_and_evaluation():
  """A training batch must hold whole groups; an evaluation batch (the last
  may be short) ends with a smaller group."""
  e = np.random.default_rng(6).normal(size=(3 * 2, 3))
  with pytest.raises(selfsup.core.checks.ConfigError,
                     match="mining_group=2 .* batch of 3 images"):
    _grouped_step(e, 2, training=True, mining_group=2)
  loss, accuracy = _grouped_step(e, 2, mining_group=2)
  head = e[:4] / np.linalg.norm(e[:4], axis=1, keepdims=True)
  first = float(losses.triplet_semihard_loss(np.repeat([0, 1], 2), head))
  # The last group is one image: no negative, loss 0, both copies correct.
  assert loss == pytest.approx(first / 2, rel=1e-5)
  assert accuracy == pytest.approx(
      (4 * _reference_accuracy(head, np.repeat([0, 1], 2)) + 2) / 6)
  with pytest.raises(selfsup.core.checks.ConfigError, match="mining_group=0"):
    selfsup.tasks.get("exemplar", mining_group=0)


def test_exemplar_preprocessing_paper_by_default_code_on_request():
  paper = selfsup.tasks.get("exemplar", image_size=32).specs
  assert "to_gray" not in paper["train"] and "standardize" not in paper[
      "train"]
  assert "value_range(-1, 1)" in paper["train"]
  code = selfsup.tasks.get("exemplar", image_size=32, copies=2,
                           preprocessing="code").specs
  assert code["train"].startswith("decode|to_gray(0.66)|exemplar(2, ")
  assert "area_min=10" in code["train"] and code["train"].endswith(
      'standardize")')
  assert "to_gray(0.66, training=True)" in code["eval"]
  with pytest.raises(selfsup.core.checks.ConfigError, match="'slim'"):
    selfsup.tasks.get("exemplar", preprocessing="slim")


def test_supervised_keeps_the_colour_jitter_by_default():
  """The authors' recipe (inception_preprocess with its colour jitter);
  color=False is the jitter-free spec."""
  assert "color_distort" in selfsup.tasks.get("supervised").specs["train"]
  plain = selfsup.tasks.get("supervised", spec_kwargs={"color": False})
  assert "color_distort" not in plain.specs["train"]
  assert "inception_crop(224)" in plain.specs["train"]


def _head_layers(task):
  return {l.name: l for l in task.head.layers}


def test_patch_head_is_the_authors_by_default():
  """patch_utils.py:178-207: weight decay 5e-4 (Keras' L2 of 2.5e-4 gives
  the same gradient), truncated normal sigma 0.005, fc1 bias 0.1, batch norm
  momentum 0.997 and epsilon 1e-5."""
  import keras  # pylint: disable=import-outside-toplevel
  task = _patch_task("jigsaw")
  layers = _head_layers(task)
  for name in ("fc1", "logits"):
    init = layers[name].kernel_initializer
    assert isinstance(init, keras.initializers.TruncatedNormal), name
    assert init.stddev == 0.005 and init.mean == 0.0
    assert layers[name].kernel_regularizer.l2 == pytest.approx(2.5e-4)
  np.testing.assert_array_equal(layers["fc1"].bias.numpy(), np.float32(0.1))
  np.testing.assert_array_equal(layers["logits"].bias.numpy(), 0.0)
  bn = layers["fc1_bn"]
  assert bn.momentum == pytest.approx(0.997) and bn.epsilon == 1e-5
  kernel = layers["fc1"].kernel.numpy()
  assert np.max(np.abs(kernel)) <= 2 * 0.005 + 1e-9  # truncated at 2 sigma
  assert 0.003 < kernel.std() < 0.006


def test_patch_head_task_settings_are_the_previous_ones():
  import keras  # pylint: disable=import-outside-toplevel
  task = _patch_task("relative_patch_location", head_settings="task",
                     weight_decay=3e-4, backbone_kwargs={"bn_momentum": 0.9})
  layers = _head_layers(task)
  assert isinstance(layers["fc1"].kernel_initializer,
                    keras.initializers.GlorotUniform)
  assert layers["fc1"].kernel_regularizer.l2 == pytest.approx(1.5e-4)
  np.testing.assert_array_equal(layers["fc1"].bias.numpy(), 0.0)
  assert layers["fc1_bn"].momentum == 0.9
  assert layers["fc1_bn"].epsilon == 1e-3
  with pytest.raises(selfsup.core.checks.ConfigError,
                     match="head_settings='paper'"):
    _patch_task("jigsaw", head_settings="paper")


def test_patch_head_groups_follow_the_backbone_images():
  """bn_group_size counts patches (9 per image); the head normalises the
  examples of the same images: 2 images x 16 permutations."""
  from selfsup.models import norm  # pylint: disable=import-outside-toplevel
  task = _patch_task("jigsaw", backbone_kwargs={"bn_group_size": 18})
  assert task.head_group_size() == 2 * 16
  bn = _head_layers(task)["fc1_bn"]
  assert isinstance(bn, norm.GroupedBatchNormalization)
  assert bn.group_size == 32
  rpl = _patch_task("relative_patch_location",
                    backbone_kwargs={"bn_group_size": 9})
  assert rpl.head_group_size() == 8
  assert _patch_task("jigsaw").head_group_size() is None
  with pytest.raises(selfsup.core.checks.ConfigError,
                     match="bn_group_size=10 .* multiple of 9"):
    _patch_task("jigsaw", backbone_kwargs={"bn_group_size": 10})
