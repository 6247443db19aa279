"""Optimizers as settings: SGD (the paper), LARS and AdamW (the methods after it).

`LARS` is layer-wise adaptive rate scaling (You et al. 2017) as SimCLR's
reference implementation and BYOL and Barlow Twins use it: the weight decay
is added to the gradient *before* the trust ratio (coupled L2, not Keras'
decoupled decay), and variables whose path matches an exclusion pattern
(biases, batch-norm parameters) skip the decay and/or the adaptation.
`make_optimizer` builds the one a `TrainConfig` names.
"""
import re

import keras
from keras import ops

from selfsup.core import checks

OPTIMIZERS = ("sgd", "lars", "adamw")


@keras.saving.register_keras_serializable(package="selfsup")
class LARS(keras.optimizers.Optimizer):
  """LARS with momentum. For each variable w with gradient g:

      g <- g + weight_decay * w                  (unless excluded from decay)
      r  = eeta * |w| / |g| if |w| > 0 and |g| > 0, else 1
                                                 (1 if excluded from adaptation)
      v <- momentum * v + lr * m * r * g
      w <- w - v     (nesterov: w - (momentum * v + lr * m * r * g))

  where m is the variable's rate multiplier (1 unless a pattern of
  `learning_rate_multipliers` matches its path).

  Args:
    learning_rate: a float or a schedule.
    momentum: in [0, 1).
    weight_decay: the L2 coefficient added to the gradient.
    exclude_from_weight_decay: regular expressions searched in each
      variable's path (`variable.path`); a match skips the decay.
    exclude_from_layer_adaptation: the same for the trust ratio; None uses
      `exclude_from_weight_decay` (as SimCLR's implementation).
    eeta: the trust coefficient (0.001).
    nesterov: Nesterov momentum.
    learning_rate_multipliers: {regular expression: factor}; a variable
      whose path matches a pattern (the first, in order) gets its rate
      multiplied by the factor (Barlow Twins: biases and batch-norm
      parameters at 0.0048 / 0.2 = 0.024 of the weights' rate).
  """

  def __init__(self, learning_rate, momentum=0.9, weight_decay=0.0,
               exclude_from_weight_decay=None,
               exclude_from_layer_adaptation=None, eeta=0.001,
               nesterov=False, learning_rate_multipliers=None, name="lars",
               **kwargs):
    kwargs.pop("weight_decay", None)
    # The base class's weight_decay is decoupled decay: left None here.
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = checks.number("LARS.momentum", momentum, minimum=0,
                                  maximum=1, below=True)
    self.lars_weight_decay = checks.number("LARS.weight_decay", weight_decay,
                                           minimum=0)
    self.eeta = checks.positive("LARS.eeta", eeta)
    self.nesterov = checks.boolean("LARS.nesterov", nesterov)
    self.exclude_from_weight_decay_patterns = _patterns(
        "LARS.exclude_from_weight_decay", exclude_from_weight_decay)
    self.exclude_from_layer_adaptation_patterns = (
        self.exclude_from_weight_decay_patterns
        if exclude_from_layer_adaptation is None else _patterns(
            "LARS.exclude_from_layer_adaptation",
            exclude_from_layer_adaptation))
    self._explicit_adaptation = exclude_from_layer_adaptation
    self.learning_rate_multipliers = _multipliers(
        "LARS.learning_rate_multipliers", learning_rate_multipliers)

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = [self.add_variable_from_reference(v, "momentum")
                      for v in variables]
    # By index: update_step may receive the backend's variable, which has
    # no Keras path.
    self._decay_flags = [self.decays(v) for v in variables]
    self._adapt_flags = [self.adapts(v) for v in variables]
    self._rate_factors = [self.rate_multiplier(v) for v in variables]

  def decays(self, variable):
    """Whether `variable` gets the weight decay."""
    return bool(self.lars_weight_decay) and not _matches(
        self.exclude_from_weight_decay_patterns, _path(variable))

  def adapts(self, variable):
    """Whether `variable`'s rate is scaled by the trust ratio."""
    return not _matches(self.exclude_from_layer_adaptation_patterns,
                        _path(variable))

  def rate_multiplier(self, variable):
    """The factor on `variable`'s learning rate (1.0 unless a pattern of
    `learning_rate_multipliers` matches its path)."""
    path = _path(variable)
    for pattern, factor in self.learning_rate_multipliers.items():
      if re.search(pattern, path):
        return factor
    return 1.0

  def update_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    dtype = variable.dtype
    lr = ops.cast(learning_rate, dtype)
    if self._rate_factors[index] != 1.0:
      lr = lr * ops.cast(self._rate_factors[index], dtype)
    g = ops.cast(gradient, dtype)
    if self._decay_flags[index]:
      g = g + ops.cast(self.lars_weight_decay, dtype) * variable
    if self._adapt_flags[index]:
      w_norm = ops.sqrt(ops.sum(ops.square(variable)))
      g_norm = ops.sqrt(ops.sum(ops.square(g)))
      ratio = ops.where(
          w_norm > 0,
          ops.where(g_norm > 0, self.eeta * w_norm / ops.maximum(g_norm, 1e-30),
                    1.0), 1.0)
      lr = lr * ops.cast(ratio, dtype)
    v = self.momentums[index]
    momentum = ops.cast(self.momentum, dtype)
    self.assign(v, momentum * v + lr * g)
    if self.nesterov:
      self.assign_sub(variable, momentum * v + lr * g)
    else:
      self.assign_sub(variable, v)

  def get_config(self):
    config = super().get_config()
    config.update(
        momentum=self.momentum, weight_decay=self.lars_weight_decay,
        exclude_from_weight_decay=list(
            self.exclude_from_weight_decay_patterns),
        exclude_from_layer_adaptation=(
            None if self._explicit_adaptation is None
            else list(self.exclude_from_layer_adaptation_patterns)),
        eeta=self.eeta, nesterov=self.nesterov,
        learning_rate_multipliers=dict(self.learning_rate_multipliers))
    return config


def _patterns(name, value):
  if value is None:
    return ()
  if isinstance(value, str) or not isinstance(value, (list, tuple)):
    raise checks.ConfigError(f"{name}={value!r} is invalid: expected a list "
                             "of regular expressions (or None).")
  for pattern in value:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as err:
      raise checks.ConfigError(f"{name}: {pattern!r} is not a regular "
                               f"expression ({err}).") from None
  return tuple(value)


def _multipliers(name, value):
  """{pattern: factor} from a dict or (pattern, factor) pairs, checked."""
  if value is None:
    return {}
  if isinstance(value, dict):
    pairs = list(value.items())
  elif isinstance(value, (list, tuple)) and all(
      isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
    pairs = [tuple(p) for p in value]
  else:
    raise checks.ConfigError(f"{name}={value!r} is invalid: expected a dict "
                             "{regular expression: factor}.")
  _patterns(name, [p for p, _ in pairs])
  return {p: float(checks.number(f"{name}[{p!r}]", f, minimum=0))
          for p, f in pairs}


def _path(variable):
  # A plain tf.Variable has a name but no Keras path.
  return getattr(variable, "path", None) or variable.name


def _matches(patterns, path):
  return any(re.search(p, path) for p in patterns)


def check_lr_multipliers(optimizer, lr_multipliers):
  """Raises ConfigError unless `lr_multipliers` is None/empty or a valid
  {pattern: factor} for LARS (the only optimizer with per-variable rates)."""
  if not lr_multipliers:
    return
  if optimizer != "lars":
    raise checks.ConfigError(
        f"TrainConfig.lr_multipliers={lr_multipliers!r} is invalid with "
        f"optimizer={optimizer!r}: only 'lars' has per-variable rates; "
        "expected None.")
  _multipliers("TrainConfig.lr_multipliers", lr_multipliers)


def make_optimizer(name, schedule, *, momentum=0.9, weight_decay=0.0,
                   exclude_from_weight_decay=(), eeta=0.001,
                   lr_multipliers=None):
  """The optimizer `name` ("sgd", "lars" or "adamw") on `schedule`.

  SGD leaves the decay to the task (L2 in the loss, the paper's recipe), so
  `weight_decay` must be 0 with it; LARS adds it to the gradient; AdamW
  decays decoupled, as its paper. Variables whose path matches one of
  `exclude_from_weight_decay` are not decayed (nor adapted, for LARS).
  `lr_multipliers` ({pattern: factor}, LARS only) scale some variables'
  rates.
  """
  check_lr_multipliers(name, lr_multipliers)
  if name == "sgd":
    if weight_decay:
      raise checks.ConfigError(
          f"TrainConfig.weight_decay={weight_decay!r} is invalid with "
          "optimizer='sgd': SGD's decay is the task's L2 "
          "(build_task.weight_decay); expected 0.")
    return keras.optimizers.SGD(schedule, momentum=momentum)
  if name == "lars":
    return LARS(schedule, momentum=momentum, weight_decay=weight_decay,
                exclude_from_weight_decay=list(exclude_from_weight_decay),
                eeta=eeta, learning_rate_multipliers=lr_multipliers)
  if name == "adamw":
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    if exclude_from_weight_decay:
      optimizer.exclude_from_weight_decay(
          var_names=list(exclude_from_weight_decay))
    return optimizer
  raise checks.ConfigError(f"TrainConfig.optimizer={name!r} is invalid: "
                           f"expected one of {OPTIMIZERS}.")
