"""Cross-replica helpers for the methods whose loss couples the examples.

NT-Xent's negatives and Barlow Twins' batch statistics are terms of the
*global* batch. `gather_global` all-gathers one replica's embeddings so each
replica can compute the loss of the whole batch.

Why the gradients come out right. The trainer divides each replica's loss by
the number of replicas R and sums the replicas' gradients. When every
replica computes the same global loss L from gathered embeddings, the
gradient of the gather (`ReplicaContext.all_gather`'s registered gradient)
sums, over the replicas, the gradient that reaches this replica's slice:
R * dL/dz_r. Scaled by 1/R that is dL/dz_r, and the summed parameter
gradient is dL/dtheta: exactly what one replica computes with the whole
batch. (The duplicated loss costs O((global batch)^2 * dim) per replica,
small beside the backbone.)

`ema_update` moves variables towards others (BYOL's target network) in a way
that works in replica context under every strategy.
"""
import tensorflow as tf


def num_replicas():
  """Replicas of the current strategy (1 outside any)."""
  return tf.distribute.get_strategy().num_replicas_in_sync


def gather_global(x):
  """Concatenates `x` [n, ...] of every replica along axis 0, in replica order.

  With one replica, or outside replica context, returns `x` unchanged.
  Differentiable: see the module docstring for the gradient.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return x
  return ctx.all_gather(x, axis=0)


def ema_update(targets, sources, decay):
  """targets <- decay * targets + (1 - decay) * sources, variable by variable.

  Called in replica context (from a train step under `strategy.run`) it
  updates each mirrored variable once per device through the strategy, as an
  optimizer does; in cross-replica context (or without a strategy) it
  assigns directly.

  Args:
    targets, sources: lists of Keras (or tf) variables of equal shapes.
    decay: float scalar (tensor or number) in [0, 1].
  """
  targets, sources = list(targets), list(sources)
  if len(targets) != len(sources):
    raise ValueError(f"ema_update needs as many targets as sources, got "
                     f"{len(targets)} and {len(sources)}.")
  for t, s in zip(targets, sources):
    if tuple(t.shape) != tuple(s.shape):
      raise ValueError(f"ema_update: {t.path} {tuple(t.shape)} does not match "
                       f"{s.path} {tuple(s.shape)}.")
  decay = tf.cast(decay, tf.float32)
  ctx = tf.distribute.get_replica_context()
  if ctx is None or not tf.distribute.has_strategy():
    _assign_all(targets, sources, decay)
    return
  ctx.merge_call(_merged_update, args=(targets, sources, decay))


def _merged_update(strategy, targets, sources, decay):
  tf_targets = [_tf_variable(t) for t in targets]
  tf_sources = [_tf_variable(s) for s in sources]

  def update(target, source, decay):
    value = decay * target + (1.0 - decay) * tf.cast(source, target.dtype)
    return target.assign(value)

  for target, source in zip(tf_targets, tf_sources):
    strategy.extended.update(target, update, args=(source, decay),
                             group=False)


def _assign_all(targets, sources, decay):
  for t, s in zip(targets, sources):
    t.assign(decay * t + (1.0 - decay) * tf.cast(s, t.dtype))


def _tf_variable(variable):
  """The tf.Variable (distributed, under a strategy) behind a Keras one."""
  return getattr(variable, "value", variable)
