"""Batch-norm recalibration: moving statistics measured on data, weights kept.

A network left at its random initialisation (the study's and bin/demo's
random-init baseline) has moving statistics of 0 and 1, which no data has.
`recalibrate` gives every batch norm the statistics of the data instead: it
runs forward passes in training mode with the momentum set to 0 (so each
pass sets the moving statistics to that batch's), averages them over the
batches, and assigns the averages. Trainable weights are not touched; the
moving variance is the mean of the batch variances, as precise batch norm
does.
"""
import numpy as np
import tensorflow as tf

from selfsup.core import checks


def batch_norm_layers(modules):
  """Every layer of `modules` (Keras models) that keeps moving statistics."""
  found = []
  for module in modules:
    for layer in module._flatten_layers(include_self=False):  # pylint: disable=protected-access
      if all(hasattr(layer, a) for a in ("moving_mean", "moving_variance",
                                         "momentum")):
        found.append(layer)
  return found


def recalibrate(forward, batches, layers):
  """Sets each layer's moving statistics to their mean over `batches`.

  Args:
    forward: batch -> anything; runs the model in training mode (traced once
      here, with every momentum at 0).
    batches: an iterable of batches (at least one).
    layers: the batch norms to recalibrate (`batch_norm_layers`).
  Returns:
    The number of batches used.
  """
  saved = [layer.momentum for layer in layers]
  sums = [[np.zeros(v.shape, np.float64) for v in (layer.moving_mean,
                                                   layer.moving_variance)]
          for layer in layers]
  count = 0
  try:
    for layer in layers:
      layer.momentum = 0.0  # read when `step` is traced
    step = tf.function(forward)
    for batch in batches:
      step(batch)
      for total, layer in zip(sums, layers):
        total[0] += layer.moving_mean.numpy()
        total[1] += layer.moving_variance.numpy()
      count += 1
  finally:
    for layer, momentum in zip(layers, saved):
      layer.momentum = momentum
  checks.integer("recalibration batches", count, minimum=1)
  for total, layer in zip(sums, layers):
    layer.moving_mean.assign((total[0] / count).astype(
        layer.moving_mean.dtype))
    layer.moving_variance.assign((total[1] / count).astype(
        layer.moving_variance.dtype))
  return count
