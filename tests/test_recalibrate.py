"""Batch-norm recalibration: the moving statistics become the data's, the
weights stay."""
import keras
import numpy as np
import tensorflow as tf

from selfsup.train import recalibrate


def _model():
  inputs = keras.Input((3,))
  x = keras.layers.Dense(4, name="dense")(inputs)
  x = keras.layers.BatchNormalization(momentum=0.99, name="bn")(x)
  return keras.Model(inputs, x)


def test_moving_statistics_are_the_mean_of_the_batch_statistics():
  model = _model()
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, (16, 3)).astype(np.float32)
             for _ in range(4)]
  weights = [w.copy() for w in model.get_weights()]
  bn = model.get_layer("bn")
  layers = recalibrate.batch_norm_layers([model])
  assert layers == [bn]
  used = recalibrate.recalibrate(lambda b: model(b, training=True), batches,
                                 layers)
  assert used == 4
  kernel, bias = model.get_layer("dense").get_weights()
  acts = [b @ kernel + bias for b in batches]
  np.testing.assert_allclose(bn.moving_mean.numpy(),
                             np.mean([a.mean(0) for a in acts], 0),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy(),
                             np.mean([a.var(0) for a in acts], 0),
                             rtol=1e-4, atol=1e-5)
  assert bn.momentum == 0.99  # restored
  np.testing.assert_array_equal(kernel, weights[0])
  np.testing.assert_array_equal(model.get_layer("bn").gamma.numpy(),
                                weights[2])
  # Inference now normalises the data: outputs near zero mean, unit variance.
  out = model(np.concatenate(batches), training=False).numpy()
  assert np.all(np.abs(out.mean(0)) < 0.1)
  assert np.all(np.abs(out.std(0) - 1.0) < 0.1)


def test_no_batch_is_an_error_and_restores_momentum():
  model = _model()
  layers = recalibrate.batch_norm_layers([model])
  try:
    recalibrate.recalibrate(lambda b: model(b, training=True), [], layers)
  except ValueError as err:
    assert "recalibration batches" in str(err)
  else:
    raise AssertionError("no batch must fail")
  assert layers[0].momentum == 0.99
  assert tf.reduce_all(layers[0].moving_mean == 0.0)


def test_random_init_baseline_recalibrates_without_training(tmp_path):
  """train_steps=0 with bn_recalibration_batches: the exported weights are
  the initial ones, the moving statistics the data's (no longer 0 and 1)."""
  from selfsup.train import Trainer, experiment  # pylint: disable=import-outside-toplevel
  from tests import training_runs as runs  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  task = runs.make_task("rotation")
  trainer = Trainer(task, runs.digits(runs.FIXED_FRACTION), str(tmp_path),
                    runs.config(train_steps=0, bn_recalibration_batches=3,
                                sync_batch_norm=False))
  trainer.gin_config = ""
  trainer.restore()
  task_initial = runs.weights(task.modules)
  results = experiment.run(trainer)
  assert results["bn_recalibration_batches"] == 3 and trainer.step == 0
  after = runs.weights(task.modules)
  moved = [k for k in after if "moving" in k
           and not np.allclose(after[k], task_initial[k])]
  assert moved  # statistics measured
  for key, value in after.items():
    if "moving" not in key:
      np.testing.assert_array_equal(value, task_initial[key], err_msg=key)
