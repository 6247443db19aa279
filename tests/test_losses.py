"""Tests for selfsup.tasks.losses against a plain numpy reference."""
import numpy as np
import pytest
import tensorflow as tf

from selfsup.tasks import losses


def reference_triplet(labels, embeddings, margin, squared=True):
  """Loops over the definition; returns (loss, num_semihard, num_fallback)."""
  x = np.asarray(embeddings, np.float64)
  n = len(labels)
  d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  if not squared:
    d = np.sqrt(d)
  terms, semihard, fallback = [], 0, 0
  for a in range(n):
    negs = [d[a, k] for k in range(n) if labels[k] != labels[a]]
    if not negs:
      continue  # no negative: no triplet for this anchor
    for p in range(n):
      if p == a or labels[p] != labels[a]:
        continue
      farther = [v for v in negs if v > d[a, p]]
      if farther:
        d_an, semihard = min(farther), semihard + 1
      else:
        d_an, fallback = max(negs), fallback + 1
      terms.append(max(d[a, p] - d_an + margin, 0.0))
  loss = float(np.mean(terms)) if terms else 0.0
  return loss, semihard, fallback


def random_case(seed, normalize=True):
  rng = np.random.default_rng(seed)
  batch = int(rng.integers(8, 33))
  classes = int(rng.integers(2, 7))
  dim = int(rng.integers(3, 17))
  labels = rng.integers(0, classes, size=batch).astype(np.int32)
  emb = rng.normal(size=(batch, dim))
  if normalize:
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return labels, emb.astype(np.float32)


def loss_and_grad(labels, emb, margin=0.5, squared=True, jit=False):
  @tf.function(jit_compile=jit)
  def fn(labels, emb):
    with tf.GradientTape() as tape:
      tape.watch(emb)
      loss = losses.triplet_semihard_loss(labels, emb, margin, squared=squared)
    return loss, tape.gradient(loss, emb)
  loss, grad = fn(tf.constant(labels), tf.constant(emb))
  return float(loss), grad.numpy()


@pytest.mark.parametrize("squared,expected", [(True, 3.39), (False, 0.925)])
def test_hand_computed_value(squared, expected):
  # 1-D points, worked out by hand: pair (0,1) takes a semi-hard negative
  # inside the margin, pair (2,3) has none and falls back to the largest.
  emb = np.array([[0.0], [1.0], [1.2], [5.0]], np.float32)
  labels = np.array([0, 0, 1, 1])
  loss = losses.triplet_semihard_loss(labels, emb, margin=0.5, squared=squared)
  assert loss.dtype == tf.float32
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert reference_triplet(labels, emb, 0.5, squared)[0] == pytest.approx(
      expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("squared", [True, False])
def test_matches_reference_on_random_batches(seed, squared):
  labels, emb = random_case(seed, normalize=seed % 2 == 0)
  if seed % 2:
    emb *= 1.5  # unnormalised, so distances exceed the margin scale
  expected, semihard, _ = reference_triplet(labels, emb, 0.5, squared)
  assert semihard > 0
  got = losses.triplet_semihard_loss(labels, emb, margin=0.5, squared=squared)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_anchors_without_semihard_negative_use_largest(seed):
  # Class 0 is spread wide, class 1 packed at the origin: anchors of class 0
  # often see every negative closer than their positive.
  rng = np.random.default_rng(100 + seed)
  dim = 4
  wide = rng.normal(scale=5.0, size=(8, dim))
  tight = rng.normal(scale=0.1, size=(8, dim))
  emb = np.concatenate([wide, tight]).astype(np.float32)
  labels = np.array([0] * 8 + [1] * 8)
  perm = rng.permutation(16)
  emb, labels = emb[perm], labels[perm]
  expected, semihard, fallback = reference_triplet(labels, emb, 0.5)
  assert fallback > 0 and semihard > 0, (fallback, semihard)
  got = losses.triplet_semihard_loss(labels, emb, margin=0.5)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@pytest.mark.parametrize("labels", [[3] * 8, list(range(8))],
                         ids=["all_equal", "all_different"])
@pytest.mark.parametrize("squared", [True, False])
def test_no_triplet_gives_zero_loss_and_gradient(labels, squared):
  emb = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
  for jit in (False, True):
    loss, grad = loss_and_grad(np.array(labels), emb, squared=squared, jit=jit)
    assert loss == 0.0
    assert np.all(grad == 0.0)


def test_gradient_matches_finite_differences():
  labels, emb = random_case(7, normalize=False)
  labels, emb = labels[:8], emb[:8, :3]
  labels[:4] = [0, 0, 1, 1]  # ensure positives and negatives exist
  _, grad = loss_and_grad(labels, emb)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
  x, eps = emb.astype(np.float64), 1e-6
  numeric = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    up, down = x.copy(), x.copy()
    up[idx] += eps
    down[idx] -= eps
    numeric[idx] = (reference_triplet(labels, up, 0.5)[0]
                    - reference_triplet(labels, down, 0.5)[0]) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


def test_gradient_finite_with_duplicate_embeddings():
  # Identical rows put sqrt at 0 off the diagonal, the classic NaN source.
  emb = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]],
                 np.float32)
  labels = np.array([0, 0, 1, 1, 1])
  for squared in (True, False):
    loss, grad = loss_and_grad(labels, emb, squared=squared)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("squared", [True, False])
def test_jit_compile_matches_eager(squared):
  labels, emb = random_case(11)
  eager_loss, eager_grad = loss_and_grad(labels, emb, squared=squared)
  jit_loss, jit_grad = loss_and_grad(labels, emb, squared=squared, jit=True)
  assert eager_loss > 0
  np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
  np.testing.assert_allclose(jit_grad, eager_grad, rtol=1e-4, atol=1e-6)


def test_unknown_batch_size_in_tf_function():
  labels, emb = random_case(3)
  fn = tf.function(losses.triplet_semihard_loss, input_signature=[
      tf.TensorSpec([None], tf.int32),
      tf.TensorSpec([None, emb.shape[1]], tf.float32)])
  np.testing.assert_allclose(float(fn(labels, emb)),
                             reference_triplet(labels, emb, 0.5)[0], rtol=1e-5)


def test_accepts_column_labels_int64_and_bfloat16():
  labels, emb = random_case(4)
  expected = float(losses.triplet_semihard_loss(labels, emb))
  got = losses.triplet_semihard_loss(labels[:, None].astype(np.int64), emb)
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  got = losses.triplet_semihard_loss(labels, tf.cast(emb, tf.bfloat16))
  assert got.dtype == tf.float32
  np.testing.assert_allclose(float(got), expected, rtol=0.05)


def test_pairwise_distances_diagonal_and_values():
  emb = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
  want = ((emb[:, None] - emb[None]) ** 2).sum(-1)
  sq = losses.pairwise_distances(emb).numpy()
  np.testing.assert_allclose(sq, want, rtol=1e-4, atol=1e-5)
  assert np.all(np.diag(sq) == 0)
  np.testing.assert_allclose(losses.pairwise_distances(emb, squared=False),
                             np.sqrt(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(labels=[0, 1], embeddings=np.zeros((2, 3)), margin=-0.1), "-0.1"),
    (dict(labels=[0, 1, 1], embeddings=np.zeros((2, 3))), "batch size"),
    (dict(labels=[0, 1], embeddings=np.zeros((2, 3, 1))), r"\(2, 3, 1\)"),
])
def test_rejects_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    losses.triplet_semihard_loss(**kwargs)


@pytest.mark.parametrize("squared", [True, False])
def test_mining_groups_average_the_groups_losses(squared):
  """group_size=n: each run of n embeddings mines only among itself (the
  authors' per-core loss); the loss is the mean of the groups' losses."""
  rng = np.random.default_rng(7)
  labels = np.repeat(np.arange(12), 2).astype(np.int32)  # 12 images x 2
  emb = rng.normal(size=(24, 5)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  want = np.mean([reference_triplet(labels[i:i + 8], emb[i:i + 8], 0.5,
                                    squared)[0] for i in range(0, 24, 8)])
  got = losses.triplet_semihard_loss(labels, emb, squared=squared,
                                     group_size=8)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  whole = reference_triplet(labels, emb, 0.5, squared)[0]
  assert abs(whole - want) > 1e-3  # mining among all 24 is another loss
  np.testing.assert_allclose(
      float(losses.triplet_semihard_loss(labels, emb, squared=squared,
                                         group_size=24)), whole, rtol=1e-5)


def test_mining_groups_compile_and_refuse_a_group_that_does_not_divide():
  from selfsup.core.checks import ConfigError  # pylint: disable=g-import-not-at-top
  labels, emb = np.repeat(np.arange(6), 2), np.eye(12, 4, dtype=np.float32)
  fn = tf.function(lambda e: losses.triplet_semihard_loss(
      labels, e, group_size=4), jit_compile=True)
  np.testing.assert_allclose(
      float(fn(tf.constant(emb))),
      float(losses.triplet_semihard_loss(labels, emb, group_size=4)),
      rtol=1e-6)
  with pytest.raises(ConfigError, match="group_size=5 .* batch of 12"):
    losses.triplet_semihard_loss(labels, emb, group_size=5)
  with pytest.raises(ConfigError, match="group_size=0"):
    losses.triplet_semihard_loss(labels, emb, group_size=0)


def test_cross_entropy_is_float32_and_exact_for_bfloat16_logits():
  rng = np.random.default_rng(0)
  logits = tf.cast(rng.normal(scale=3.0, size=(5, 7)), tf.bfloat16)
  labels = rng.integers(0, 7, size=5)
  got = losses.sparse_softmax_cross_entropy(labels, logits)
  assert got.dtype == tf.float32 and got.shape == (5,)
  x = tf.cast(logits, tf.float64).numpy()  # the values the model produced
  log_z = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
  want = log_z - x[np.arange(5), labels]
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
  with pytest.raises(ValueError, match="rank"):
    losses.sparse_softmax_cross_entropy(labels[:, None], logits)
