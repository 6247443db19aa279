"""Batch-norm momentum: how fast the moving statistics follow the batches.

0.99 (Keras' and the authors' default) suits long runs. A run of a few
hundred steps leaves the moving statistics far behind the weights (the
digits demo: 0.70 training-mode accuracy, 0.10 in inference mode), so short
runs want e.g. 0.9.
"""
import numbers

import keras

DEFAULT_MOMENTUM = 0.99


def check_momentum(momentum):
  if (not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
      or not 0.0 <= momentum < 1.0):
    raise ValueError(f"bn_momentum={momentum!r} is not valid: expected a "
                     "number in [0, 1), e.g. 0.99 (long runs) or 0.9 (short).")
  return float(momentum)


def set_momentum(model, momentum):
  """Sets the momentum of every batch norm in `model` (read at call time)."""
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = momentum
