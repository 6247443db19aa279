"""Tests for selfsup.core.schedules."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from selfsup.core import schedules

# The paper's recipe at B = 1024 with 100 steps per epoch: peak 0.1 * 4 = 0.4,
# warm-up until step 500, /10 from step 1500 and again from step 2500.
PAPER = dict(base_lr=0.1, batch_size=1024, steps_per_epoch=100,
             warmup_epochs=5, decay_epochs=[15, 25])


def paper_schedule():
  return schedules.WarmupStepDecay(**PAPER)


@pytest.mark.parametrize("step,expected", [
    (0, 0.0),
    (250, 0.2),
    (499, 0.4 * 499 / 500),
    (500, 0.4),
    (1499, 0.4),
    (1500, 0.04),
    (2499, 0.04),
    (2500, 0.004),
    (3499, 0.004),
])
def test_paper_values_at_key_steps(step, expected):
  np.testing.assert_allclose(float(paper_schedule()(step)), expected,
                             rtol=1e-6, atol=1e-9)


def test_from_paper_and_properties():
  sched = schedules.WarmupStepDecay.from_paper(batch_size=1024,
                                               steps_per_epoch=100)
  assert sched.get_config() == paper_schedule().get_config()
  assert sched.peak_lr == pytest.approx(0.4)
  assert sched.warmup_steps == 500
  assert sched.decay_steps == (1500, 2500)


def test_warmup_is_linear_and_increasing():
  lrs = paper_schedule()(tf.range(501)).numpy()
  assert np.all(np.diff(lrs) > 0)
  np.testing.assert_allclose(lrs, 0.4 * np.arange(501) / 500, rtol=1e-5,
                             atol=1e-8)


def test_no_warmup_starts_at_peak():
  sched = schedules.WarmupStepDecay(0.1, 256, 10, 0, [1], decay_factor=0.5)
  np.testing.assert_allclose(sched(tf.constant([0, 9, 10])), [0.1, 0.1, 0.05],
                             rtol=1e-6)


def test_fractional_epochs_are_snapped_to_steps():
  # 0.1 * 30 is 3.0000000000000004 in floating point; it must still be 3.
  sched = schedules.WarmupStepDecay(0.1, 256, 30, 0.1, [0.2, 0.7])
  assert sched.warmup_steps == 3 and sched.decay_steps == (6, 21)
  np.testing.assert_allclose(sched(tf.constant([3, 5, 6, 20, 21])),
                             [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-5)


def test_jit_compiled_and_variable_step_match_eager():
  sched = paper_schedule()
  steps = tf.range(3500, dtype=tf.int64)
  eager = sched(steps).numpy()
  jitted = tf.function(sched.__call__, jit_compile=True)(steps).numpy()
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  step = tf.Variable(1500, dtype=tf.int64)
  np.testing.assert_allclose(float(tf.function(lambda: sched(step))()), 0.04,
                             rtol=1e-6)


def test_config_round_trip():
  sched = paper_schedule()
  config = sched.get_config()
  assert config == dict(PAPER, decay_factor=0.1, reference_batch=256,
                        base_lr=0.1, warmup_epochs=5.0,
                        decay_epochs=[15.0, 25.0])
  clone = schedules.WarmupStepDecay.from_config(config)
  assert clone.get_config() == config
  assert keras.saving.get_registered_name(
      schedules.WarmupStepDecay) == "selfsup>WarmupStepDecay"
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(sched))
  assert isinstance(restored, schedules.WarmupStepDecay)
  steps = tf.constant([0, 123, 1500, 2600])
  np.testing.assert_allclose(restored(steps), sched(steps))


@pytest.mark.parametrize("jit", [False, True])
def test_drives_sgd_with_momentum(jit):
  sched = schedules.WarmupStepDecay(0.1, 512, 2, 1, [2])  # peak 0.2
  opt = keras.optimizers.SGD(learning_rate=sched, momentum=0.9)
  w = keras.Variable(np.zeros(3, np.float32))
  grad = tf.constant([1.0, -2.0, 0.5])

  @tf.function(jit_compile=jit)
  def train_step():
    opt.apply_gradients([(grad, w)])

  velocity, expected_w = np.zeros(3), np.zeros(3)
  for step in range(6):
    lr = float(sched(step))
    np.testing.assert_allclose(float(opt.learning_rate), lr, rtol=1e-6)
    train_step()
    velocity = 0.9 * velocity - lr * grad.numpy()
    expected_w += velocity
    np.testing.assert_allclose(w.numpy(), expected_w, rtol=1e-5, atol=1e-7)
  # lr went 0, 0.1, 0.2, 0.2, 0.02, 0.02
  assert float(sched(0)) == 0.0 and float(sched(4)) == pytest.approx(0.02)
  # The optimizer's own config carries the schedule through a round trip.
  clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
  lr_config = clone.get_config()["learning_rate"]
  assert lr_config["registered_name"] == "selfsup>WarmupStepDecay"
  assert lr_config["config"] == sched.get_config()


@pytest.mark.parametrize("override,shown", [
    (dict(base_lr=0.0), "base_lr=0.0"),
    (dict(base_lr="0.1"), "base_lr='0.1'"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=256.0), "batch_size=256.0"),
    (dict(steps_per_epoch=-1), "steps_per_epoch=-1"),
    (dict(warmup_epochs=-5), "warmup_epochs=-5"),
    (dict(decay_epochs=[25, 15]), r"decay_epochs=\[25, 15\]"),
    (dict(decay_epochs=15), "decay_epochs=15"),
    (dict(decay_epochs=[-1]), "decay_epochs=-1"),
    (dict(decay_factor=10), "decay_factor=10"),
    (dict(decay_factor=0), "decay_factor=0"),
    (dict(reference_batch=0), "reference_batch=0"),
])
def test_rejects_bad_arguments(override, shown):
  with pytest.raises(ValueError, match=shown):
    schedules.WarmupStepDecay(**dict(PAPER, **override))


def test_epochs_to_steps():
  assert schedules.epochs_to_steps(35, 1281167, 1024) == 35 * 1251
  assert schedules.epochs_to_steps(0.5, 100, 10) == 5
  assert schedules.epochs_to_steps(0.1, 300, 10) == 3
  assert schedules.epochs_to_steps(1, 105, 10) == 10  # remainder dropped
  for bad, shown in [((-1, 100, 10), "epochs=-1"),
                     ((1, 100, 0), "batch_size=0"),
                     ((1, 5, 10), "batch_size=10")]:
    with pytest.raises(ValueError, match=shown):
      schedules.epochs_to_steps(*bad)


# --------------------------------------------------------------------------
# Warm-up + cosine (SimCLR, BYOL, Barlow Twins) and the batch scalings.


def test_warmup_cosine_follows_its_formula():
  from selfsup.core.schedules import WarmupCosineDecay
  sched = WarmupCosineDecay(0.3, batch_size=512, steps_per_epoch=10,
                            warmup_epochs=2, total_steps=100,
                            final_factor=0.01)
  peak = 0.3 * 512 / 256
  assert sched.peak_lr == pytest.approx(peak)
  steps = np.arange(0, 120)
  got = sched(steps).numpy()
  want = np.where(
      steps < 20, peak * steps / 20,
      peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(
          np.pi * np.clip((steps - 20) / 80, 0, 1)))))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert got[0] == 0 and got[20] == pytest.approx(peak)
  assert got[100] == pytest.approx(0.01 * peak) == got[119]
  assert np.all(np.diff(got[20:]) <= 1e-7)  # never rises after the warm-up


def test_sqrt_scaling_and_config_round_trip():
  from selfsup.core.schedules import WarmupCosineDecay, scaled_peak
  assert scaled_peak(0.075, 4096, "sqrt") == pytest.approx(4.8)
  assert scaled_peak(0.3, 4096, "linear") == pytest.approx(4.8)
  sched = WarmupCosineDecay(0.075, 1024, 5, 0, 50, scaling="sqrt")
  assert float(sched(0)) == pytest.approx(0.075 * 32)
  again = WarmupCosineDecay.from_config(sched.get_config())
  np.testing.assert_allclose(again(np.arange(50)).numpy(),
                             sched(np.arange(50)).numpy())
  with pytest.raises(ValueError, match="scaling"):
    WarmupCosineDecay(0.1, 256, 5, 0, 50, scaling="cube")
  with pytest.raises(ValueError, match="final_factor"):
    WarmupCosineDecay(0.1, 256, 5, 0, 50, final_factor=2)
