"""Checks every backbone must pass; the model tests loop over the registry."""
import keras
import numpy as np
import tensorflow as tf

import selfsup


def count_trainable(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def check_config_round_trip(model):
  config = model.get_config()
  # Batch norm is set by constructor arguments, kept in the config.
  assert {"batch_norm", "bn_momentum"} <= set(config)
  clone = type(model).from_config(config)
  assert clone.get_config() == config
  assert count_trainable(clone) == count_trainable(model)
  assert clone.endpoint_names == model.endpoint_names


def check_gradients(model, images):
  """Every trainable variable gets a finite, non-zero gradient; no NaN."""
  with tf.GradientTape() as tape:
    out = model(images, training=True)
    loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(v, tf.float32)))
                     for v in out.values()])
  for name, value in out.items():
    assert np.all(np.isfinite(value.numpy())), name
  grads = tape.gradient(loss, model.trainable_variables)
  for var, grad in zip(model.trainable_variables, grads):
    assert grad is not None, f"{var.path} receives no gradient"
    grad = tf.convert_to_tensor(grad).numpy()
    assert np.all(np.isfinite(grad)), f"{var.path} has a non-finite gradient"
    assert np.any(grad != 0), f"{var.path} has an all-zero gradient"


def check_predict_on_dataset(model, images):
  eager = model(images, training=False)
  ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
  predicted = model.predict(ds, verbose=0)
  assert set(predicted) == set(eager)
  for key, value in eager.items():
    np.testing.assert_allclose(predicted[key], value.numpy(), rtol=1e-4,
                               atol=1e-4, err_msg=key)


def check_save_load(model, images, path):
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, type(model))
  before = model(images, training=False)
  after = loaded(images, training=False)
  for key, value in before.items():
    np.testing.assert_allclose(after[key].numpy(), value.numpy(), rtol=1e-5,
                               atol=1e-5, err_msg=key)


def build(name, **kwargs):
  return selfsup.models.get(name, **kwargs)
