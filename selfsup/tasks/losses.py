"""Losses shared by the pretext tasks.

`triplet_semihard_loss` replaces `tf.contrib.losses.metric_learning.
triplet_semihard_loss`, which the paper's Exemplar model used (supplementary
section 1, margin 0.5) and which no longer exists in TensorFlow 2 (its
successor in tensorflow-addons does not import with TF >= 2.16).

Semantics, as in contrib (FaceNet, Schroff et al. 2015, semi-hard mining):
  * d is the pairwise *squared* Euclidean distance. contrib built its distance
    matrix with `pairwise_distance(embeddings, squared=True)`, and FaceNet's
    loss is written with squared norms. tensorflow-addons later changed the
    default to the non-squared distance; `squared=False` gives that.
  * Every ordered pair (a, p) with label[a] == label[p] and a != p is an
    anchor-positive pair. Its negative is the semi-hard one: the smallest
    d(a, n) over n with label[n] != label[a] and d(a, n) > d(a, p). If no
    negative is that far, it falls back to the largest d(a, n).
  * loss = mean over anchor-positive pairs of
    max(d(a, p) - d(a, n) + margin, 0).

Where this differs from contrib: contrib divided by zero (NaN) when the batch
had no positive pair, and, when all labels were equal (no negative at all),
used the anchor's zero self-distance as the "negative". Here both cases give a
loss of 0 with zero gradients: no triplet exists, so there is nothing to learn.
"""
import tensorflow as tf


def pairwise_distances(embeddings, squared=True):
  """Euclidean distances between all rows of `embeddings`.

  Args:
    embeddings: float tensor [batch, dim].
    squared: return squared distances (True) or distances (False).

  Returns:
    float tensor [batch, batch] with an exactly zero diagonal.
  """
  embeddings = tf.convert_to_tensor(embeddings)
  sq_norms = tf.reduce_sum(tf.square(embeddings), axis=1)
  # The Gram-matrix form needs O(batch^2) memory; differencing all pairs would
  # need O(batch^2 * dim), which does not fit for Exemplar batches.
  dist = (sq_norms[:, None] + sq_norms[None, :]
          - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True))
  # Cancellation can leave tiny negatives; distances are never negative.
  dist = tf.maximum(dist, 0.0)
  off_diagonal = 1.0 - tf.eye(tf.shape(embeddings)[0], dtype=dist.dtype)
  dist *= off_diagonal
  if squared:
    return dist
  # sqrt has an infinite derivative at 0 (the diagonal, duplicate embeddings):
  # the inner where keeps sqrt away from 0 so no NaN reaches the gradient.
  nonzero = dist > 0.0
  return tf.where(nonzero, tf.sqrt(tf.where(nonzero, dist, 1.0)), 0.0)


def _check_inputs(labels, embeddings, margin):
  """Raises ValueError for inputs whose static shapes cannot work."""
  if isinstance(margin, (int, float)) and margin < 0:
    raise ValueError(f"margin must be >= 0, got margin={margin!r}.")
  if embeddings.shape.rank is not None and embeddings.shape.rank != 2:
    raise ValueError(f"embeddings must be [batch, dim], got shape "
                     f"{embeddings.shape}.")
  if labels.shape.rank is not None and labels.shape.rank != 1:
    raise ValueError(f"labels must be [batch] (or [batch, 1]), got shape "
                     f"{labels.shape}.")
  if (labels.shape[0] is not None and embeddings.shape[0] is not None
      and labels.shape[0] != embeddings.shape[0]):
    raise ValueError(f"labels and embeddings disagree on the batch size: "
                     f"{labels.shape[0]} vs {embeddings.shape[0]}.")


def triplet_semihard_loss(labels, embeddings, margin=0.5, squared=True):
  """Triplet loss with semi-hard negative mining over the batch (FaceNet).

  See the module docstring for the exact definition. The embeddings are used
  as given: normalise them first if the model needs it (Exemplar normalises
  each embedding). The loss is averaged over the anchor-positive pairs of
  *this* batch (per replica): under a distribution strategy, divide by the
  number of replicas before summing gradients.

  Cost: O(batch^2 * dim) for the distances and O(batch^2 log batch) for the
  mining; shapes are static, there is no Python loop over the batch, and the
  function compiles with XLA (`jit_compile=True`).

  Args:
    labels: integer tensor [batch] or [batch, 1]; equal labels mark positives.
    embeddings: float tensor [batch, dim]. bfloat16/float16 are upcast: the
      mining compares distances and needs float32 precision.
    margin: the margin alpha of the hinge; the paper uses 0.5.
    squared: use squared Euclidean distances, as contrib did (default), or
      plain Euclidean distances, as tensorflow-addons' default did.

  Returns:
    float32 scalar. 0 when the batch has no anchor-positive-negative triplet.

  Raises:
    ValueError: for a negative margin or shapes that cannot match.
  """
  embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
  labels = tf.convert_to_tensor(labels)
  if labels.shape.rank == 2 and labels.shape[1] == 1:
    labels = tf.squeeze(labels, axis=1)
  _check_inputs(labels, embeddings, margin)

  dist = pairwise_distances(embeddings, squared=squared)
  same = tf.equal(labels[:, None], labels[None, :])
  negative = tf.logical_not(same)
  positive_pair = tf.logical_and(
      same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))

  # Mining only selects indices: no gradient flows through the sort.
  mining_dist = tf.stop_gradient(dist)
  # Each anchor's negative distances in ascending order; non-negatives are
  # pushed past the end with a finite sentinel, so no inf enters the graph.
  masked = tf.where(negative, mining_dist, tf.float32.max)
  order = tf.argsort(masked, axis=1, stable=True)
  sorted_neg = tf.gather(masked, order, batch_dims=1)
  num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1, keepdims=True)
  # Row a, column p: how many negatives of a lie at distance <= d(a, p). The
  # next one in sorted order is the closest strictly farther: the semi-hard one.
  num_closer = tf.searchsorted(sorted_neg, mining_dist, side="right",
                               out_type=tf.int32)
  has_semihard = num_closer < num_neg
  # Fallback: the last real negative, i.e. the largest negative distance.
  # max(., 0) keeps the index valid for anchors with no negative at all; those
  # pairs are masked out below.
  rank = tf.where(has_semihard, num_closer, tf.maximum(num_neg - 1, 0))
  neg_index = tf.gather(order, rank, batch_dims=1)
  neg_dist = tf.gather(dist, neg_index, batch_dims=1)  # gradient flows here

  valid = tf.logical_and(positive_pair, num_neg > 0)
  hinge = tf.maximum(dist - neg_dist + margin, 0.0)
  hinge = tf.where(valid, hinge, 0.0)
  num_valid = tf.reduce_sum(tf.cast(valid, tf.float32))
  return tf.math.divide_no_nan(tf.reduce_sum(hinge), num_valid)


def sparse_softmax_cross_entropy(labels, logits):
  """Per-example softmax cross-entropy, computed in float32.

  Under mixed precision the heads emit bfloat16 logits; the cross-entropy of
  bfloat16 logits is off by ~1e-3 (3 significant digits), enough to blur the
  loss curves of a 1000-way Jigsaw or a 4-way Rotation head. The result is not
  reduced: the caller averages over the *global* batch (e.g. with
  `tf.nn.compute_average_loss`).

  Args:
    labels: integer tensor [...], class indices.
    logits: float tensor [..., num_classes], any float dtype.

  Returns:
    float32 tensor with the shape of `labels`.

  Raises:
    ValueError: if the ranks of labels and logits do not match.
  """
  logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
  labels = tf.convert_to_tensor(labels)
  if (labels.shape.rank is not None and logits.shape.rank is not None
      and labels.shape.rank != logits.shape.rank - 1):
    raise ValueError(f"labels must have rank logits.rank - 1, got labels "
                     f"{labels.shape} and logits {logits.shape}.")
  if labels.dtype not in (tf.int32, tf.int64):
    labels = tf.cast(labels, tf.int32)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)
