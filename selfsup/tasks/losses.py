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

Mining groups (`group_size`): the authors built the loss per TPU core, so
each core mined among its own ~16 images x 8 copies. `group_size=n` cuts the
batch into consecutive groups of n embeddings, mines within each and averages
the groups' losses: the same groups give the same loss on any number of
devices. None mines among the whole batch.
"""
import tensorflow as tf

from selfsup.core.checks import ConfigError


def pairwise_distances(embeddings, squared=True):
  """Euclidean distances between all rows of `embeddings`.

  Args:
    embeddings: float tensor [batch, dim], or [groups, batch, dim] for the
      distances within each group.
    squared: return squared distances (True) or distances (False).

  Returns:
    float tensor [batch, batch] (or [groups, batch, batch]) with an exactly
    zero diagonal.
  """
  embeddings = tf.convert_to_tensor(embeddings)
  sq_norms = tf.reduce_sum(tf.square(embeddings), axis=-1)
  # The Gram-matrix form needs O(batch^2) memory; differencing all pairs would
  # need O(batch^2 * dim), which does not fit for Exemplar batches.
  dist = (sq_norms[..., :, None] + sq_norms[..., None, :]
          - 2.0 * tf.matmul(embeddings, embeddings, transpose_b=True))
  # Cancellation can leave tiny negatives; distances are never negative.
  dist = tf.maximum(dist, 0.0)
  off_diagonal = 1.0 - tf.eye(tf.shape(embeddings)[-2], dtype=dist.dtype)
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


def _mining_groups(labels, embeddings, group_size):
  """[batch], [batch, dim] -> [groups, n], [groups, n, dim]."""
  if group_size is None:
    return labels[None], embeddings[None]
  if (not isinstance(group_size, int) or isinstance(group_size, bool)
      or group_size < 1):
    raise ConfigError(f"group_size={group_size!r} is invalid: expected None "
                      "or a positive integer (embeddings per mining group).")
  batch = embeddings.shape[0]
  if batch is not None and batch % group_size:
    raise ConfigError(
        f"group_size={group_size} is invalid for a batch of {batch} "
        "embeddings: expected a group size that divides the batch.")
  return (tf.reshape(labels, [-1, group_size]),
          tf.reshape(embeddings, [-1, group_size, embeddings.shape[-1]]))


def triplet_semihard_loss(labels, embeddings, margin=0.5, squared=True,
                          group_size=None):
  """Triplet loss with semi-hard negative mining over the batch (FaceNet).

  See the module docstring for the exact definition. The embeddings are used
  as given: normalise them first if the model needs it (Exemplar normalises
  each embedding). The loss is averaged over the anchor-positive pairs of
  each mining group, then over the groups of *this* batch (per replica):
  under a distribution strategy, divide by the number of replicas before
  summing gradients.

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
    group_size: None (mine among the whole batch) or the number of
      consecutive embeddings per mining group; it must divide the batch.

  Returns:
    float32 scalar. A group without anchor-positive-negative triplet adds 0.

  Raises:
    ValueError: for a negative margin or shapes that cannot match
      (ConfigError, a ValueError, for a group size that does not divide).
  """
  embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
  labels = tf.convert_to_tensor(labels)
  if labels.shape.rank == 2 and labels.shape[1] == 1:
    labels = tf.squeeze(labels, axis=1)
  _check_inputs(labels, embeddings, margin)
  labels, embeddings = _mining_groups(labels, embeddings, group_size)

  dist = pairwise_distances(embeddings, squared=squared)
  same = tf.equal(labels[..., :, None], labels[..., None, :])
  negative = tf.logical_not(same)
  positive_pair = tf.logical_and(
      same, tf.logical_not(tf.eye(tf.shape(labels)[-1], dtype=tf.bool)))

  # Mining only selects indices: no gradient flows through the sort.
  mining_dist = tf.stop_gradient(dist)
  # Each anchor's negative distances in ascending order; non-negatives are
  # pushed past the end with a finite sentinel, so no inf enters the graph.
  masked = tf.where(negative, mining_dist, tf.float32.max)
  order = tf.argsort(masked, axis=-1, stable=True)
  sorted_neg = tf.gather(masked, order, batch_dims=2)
  num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=-1, keepdims=True)
  # Row a, column p: how many negatives of a lie at distance <= d(a, p). The
  # next one in sorted order is the closest strictly farther: the semi-hard one.
  num_closer = tf.searchsorted(sorted_neg, mining_dist, side="right",
                               out_type=tf.int32)
  has_semihard = num_closer < num_neg
  # Fallback: the last real negative, i.e. the largest negative distance.
  # max(., 0) keeps the index valid for anchors with no negative at all; those
  # pairs are masked out below.
  rank = tf.where(has_semihard, num_closer, tf.maximum(num_neg - 1, 0))
  neg_index = tf.gather(order, rank, batch_dims=2)
  neg_dist = tf.gather(dist, neg_index, batch_dims=2)  # gradient flows here

  valid = tf.logical_and(positive_pair, num_neg > 0)
  hinge = tf.maximum(dist - neg_dist + margin, 0.0)
  hinge = tf.where(valid, hinge, 0.0)
  num_valid = tf.reduce_sum(tf.cast(valid, tf.float32), axis=[-2, -1])
  return tf.reduce_mean(tf.math.divide_no_nan(
      tf.reduce_sum(hinge, axis=[-2, -1]), num_valid))


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


# --------------------------------------------------------------------------
# The losses of the methods that came after the paper (SimCLR, BYOL, Barlow
# Twins). Each is a pure function of the embeddings of *one* batch: under a
# distribution strategy, gather the global batch first
# (`selfsup.tasks.distributed.gather_global`), so N replicas compute what one
# replica computes with the whole batch.


def _check_pair(name_a, a, name_b, b):
  """Raises ValueError unless a and b are [batch, dim] of one shape."""
  for name, x in ((name_a, a), (name_b, b)):
    if x.shape.rank is not None and x.shape.rank != 2:
      raise ValueError(f"{name} must be [batch, dim], got shape {x.shape}.")
  if a.shape.is_fully_defined() and b.shape.is_fully_defined() and \
      a.shape != b.shape:
    raise ValueError(f"{name_a} and {name_b} must have one shape, got "
                     f"{a.shape} and {b.shape}.")


def nt_xent_loss(z1, z2, temperature=0.1):
  """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

  Row i of `z1` and row i of `z2` are the two views of image i (a positive
  pair); every other of the 2N embeddings is a negative. With cosine
  similarity s(u, v) = u.v / (|u| |v|), the loss of anchor k with positive
  k+ is

      l(k) = -log( exp(s(k, k+)/t) / sum_{m != k} exp(s(k, m)/t) )

  and the result is the mean of l over all 2N anchors (Chen et al. 2020,
  eq. 1 and Algorithm 1).

  Args:
    z1, z2: float tensors [N, dim], the projections of the two views (any
      float dtype; computed in float32).
    temperature: t > 0 (0.1 for SimCLR's large batches, 0.5 for small).

  Returns:
    float32 scalar.
  """
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}.")
  z1 = tf.cast(tf.convert_to_tensor(z1), tf.float32)
  z2 = tf.cast(tf.convert_to_tensor(z2), tf.float32)
  _check_pair("z1", z1, "z2", z2)
  logits, positives = _nt_xent_logits(z1, z2, temperature)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=positives, logits=logits))


def _nt_xent_logits(z1, z2, temperature):
  """The [2N, 2N] similarity logits with the self-similarities masked out,
  and each anchor's positive column."""
  z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
  n = tf.shape(z1)[0]
  logits = tf.matmul(z, z, transpose_b=True) / temperature
  # A large finite value, not inf: softmax of -inf is fine, but its gradient
  # through 0 * inf would not be.
  logits -= 1e9 * tf.eye(2 * n)
  positives = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
  return logits, positives


def nt_xent_accuracy(z1, z2, temperature=0.1):
  """Fraction of the 2N anchors whose most similar other embedding is their
  positive (SimCLR's contrastive accuracy)."""
  z1 = tf.cast(tf.convert_to_tensor(z1), tf.float32)
  z2 = tf.cast(tf.convert_to_tensor(z2), tf.float32)
  logits, positives = _nt_xent_logits(z1, z2, temperature)
  best = tf.argmax(logits, axis=1, output_type=tf.int32)
  return tf.reduce_mean(tf.cast(tf.equal(best, positives), tf.float32))


def byol_loss(p, z):
  """BYOL's regression loss: mean over the batch of 2 - 2 cos(p_i, z_i).

  `z` is the target network's projection: no gradient flows into it (Grill
  et al. 2020, eq. 2; the symmetric loss is byol_loss(p1, z2) +
  byol_loss(p2, z1)).

  Args:
    p: float tensor [N, dim], the online network's predictions.
    z: float tensor [N, dim], the target's projections of the other view.

  Returns:
    float32 scalar in [0, 4].
  """
  p = tf.cast(tf.convert_to_tensor(p), tf.float32)
  z = tf.stop_gradient(tf.cast(tf.convert_to_tensor(z), tf.float32))
  _check_pair("p", p, "z", z)
  cos = tf.reduce_sum(tf.math.l2_normalize(p, axis=1)
                      * tf.math.l2_normalize(z, axis=1), axis=1)
  return tf.reduce_mean(2.0 - 2.0 * cos)


def barlow_twins_loss(z1, z2, lambda_=0.0051, epsilon=1e-5):
  """Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, eq. 1).

  Each view's embeddings are normalised over the batch (zero mean, unit
  standard deviation per dimension, `epsilon` added to the variance as batch
  norm does), c = z1n^T z2n / N is their [dim, dim] cross-correlation, and

      loss = sum_i (1 - c_ii)^2 + lambda_ * sum_{i != j} c_ij^2.

  Args:
    z1, z2: float tensors [N, dim], the projections of the two views.
    lambda_: weight of the off-diagonal terms (0.0051 in the paper).
    epsilon: added to the variance before the square root.

  Returns:
    float32 scalar.
  """
  if isinstance(lambda_, (int, float)) and lambda_ < 0:
    raise ValueError(f"lambda_ must be >= 0, got {lambda_!r}.")
  z1 = tf.cast(tf.convert_to_tensor(z1), tf.float32)
  z2 = tf.cast(tf.convert_to_tensor(z2), tf.float32)
  _check_pair("z1", z1, "z2", z2)
  n = tf.cast(tf.shape(z1)[0], tf.float32)
  c = tf.matmul(_batch_normalise(z1, epsilon), _batch_normalise(z2, epsilon),
                transpose_a=True) / n
  diagonal = tf.linalg.diag_part(c)
  on = tf.reduce_sum(tf.square(1.0 - diagonal))
  # A mask, not sum(c^2) - sum(diag^2): no cancellation at large dims.
  off = tf.reduce_sum(tf.square(c) * (1.0 - tf.eye(tf.shape(c)[0])))
  return on + lambda_ * off


def _batch_normalise(z, epsilon):
  mean, var = tf.nn.moments(z, axes=[0])
  return (z - mean) * tf.math.rsqrt(var + epsilon)
