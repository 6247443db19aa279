"""LARS against its update rule written out by hand in NumPy; the optimizer
and schedule settings of TrainConfig."""
import keras
import numpy as np
import pytest

from selfsup.core.checks import ConfigError
from selfsup.train import LARS, TrainConfig
from selfsup.train.optimizers import make_optimizer


def _np_lars(w, g, v, lr, momentum, wd, eeta, decay, adapt, nesterov,
             factor=1.0):
  """One step of the rule in LARS's docstring (You et al. 2017; SimCLR);
  `factor` is the variable's rate multiplier."""
  lr = lr * factor
  g = g + wd * w if decay else g
  ratio = 1.0
  if adapt:
    wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    ratio = eeta * wn / gn if wn > 0 and gn > 0 else 1.0
  v = momentum * v + lr * ratio * g
  update = momentum * v + lr * ratio * g if nesterov else v
  return w - update, v


class _Layer(keras.layers.Layer):
  def build(self, input_shape):
    self.kernel = self.add_weight(shape=(3, 2), name="kernel")
    self.bias = self.add_weight(shape=(2,), name="bias")
    self.zero = self.add_weight(shape=(2,), name="zero_kernel",
                                initializer="zeros")


@pytest.mark.parametrize("nesterov,factor", [(False, 1.0), (True, 1.0),
                                             (False, 0.024)])
def test_lars_follows_its_update_rule(nesterov, factor):
  rng = np.random.default_rng(0)
  layer = _Layer(name="dense")
  layer.build(None)
  layer.bias.assign(rng.normal(size=2))
  variables = [layer.kernel, layer.bias, layer.zero]
  lr, momentum, wd, eeta = 0.7, 0.9, 0.01, 0.002
  # factor != 1: Barlow Twins' lower rate for biases (and batch norm).
  opt = LARS(lr, momentum=momentum, weight_decay=wd,
             exclude_from_weight_decay=["bias"], eeta=eeta, nesterov=nesterov,
             learning_rate_multipliers={"bias": factor})
  opt.build(variables)
  factors = [1.0, factor, 1.0]
  assert [opt.rate_multiplier(v) for v in variables] == factors
  assert [opt.decays(v) for v in variables] == [True, False, True]
  assert [opt.adapts(v) for v in variables] == [True, False, True]
  w = [v.numpy().astype(np.float64) for v in variables]
  m = [np.zeros_like(x) for x in w]
  for step in range(3):
    grads = [rng.normal(size=x.shape) for x in w]
    if step == 0:
      grads[2] = np.zeros(2)  # |g| = 0 and |w| = 0: ratio 1
    opt.apply_gradients([(g.astype(np.float32), v)
                         for g, v in zip(grads, variables)])
    for i, decay in enumerate([True, False, True]):
      w[i], m[i] = _np_lars(w[i], grads[i], m[i], lr, momentum, wd, eeta,
                            decay, decay, nesterov, factors[i])
    for v, want in zip(variables, w):
      np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-7,
                                 err_msg=f"{v.path} step {step}")


def test_lars_separate_adaptation_patterns_and_config_round_trip():
  opt = LARS(0.1, weight_decay=1e-6, exclude_from_weight_decay=["bias"],
             exclude_from_layer_adaptation=["kernel"],
             learning_rate_multipliers={"zero": 0.5, "bias|gamma": 0.1})
  layer = _Layer(name="d")
  layer.build(None)
  assert opt.decays(layer.kernel) and not opt.adapts(layer.kernel)
  assert not opt.decays(layer.bias) and opt.adapts(layer.bias)
  again = LARS.from_config(opt.get_config())
  assert again.get_config() == opt.get_config()
  assert again.rate_multiplier(layer.bias) == 0.1
  assert again.rate_multiplier(layer.zero) == 0.5  # the first match wins
  assert again.rate_multiplier(layer.kernel) == 1.0
  assert again.lars_weight_decay == 1e-6


@pytest.mark.parametrize("kwargs,match", [
    (dict(momentum=1.0), "momentum"), (dict(eeta=0), "eeta"),
    (dict(weight_decay=-1), "weight_decay"),
    (dict(exclude_from_weight_decay="bias"), "exclude_from_weight_decay"),
    (dict(exclude_from_weight_decay=["(bias"]), "regular expression"),
    (dict(learning_rate_multipliers={"bias": -1}), "learning_rate_mult"),
    (dict(learning_rate_multipliers={"(bias": 1}), "regular expression"),
    (dict(learning_rate_multipliers=0.1), "learning_rate_multipliers")])
def test_lars_refuses_bad_arguments(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    LARS(0.1, **kwargs)


def test_make_optimizer_builds_each_kind():
  assert isinstance(make_optimizer("lars", 0.1, weight_decay=1e-6), LARS)
  adamw = make_optimizer("adamw", 1e-3, weight_decay=0.05,
                         exclude_from_weight_decay=("bias",))
  assert isinstance(adamw, keras.optimizers.AdamW)
  assert isinstance(make_optimizer("sgd", 0.1), keras.optimizers.SGD)


@pytest.mark.parametrize("kwargs,match", [
    (dict(optimizer="lamb"), "optimizer"), (dict(schedule="poly"), "schedule"),
    (dict(lr_scaling="cube"), "lr_scaling"),
    (dict(weight_decay=1e-6), "weight_decay"),
    (dict(optimizer="lars", final_lr_factor=2.0), "final_lr_factor"),
    (dict(lr_multipliers={"bias": 0.1}), "only 'lars'"),
    (dict(optimizer="lars", lr_multipliers={"bias": "x"}), "lr_multipliers")])
def test_train_config_refuses_bad_optimizer_settings(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    TrainConfig(**kwargs)
