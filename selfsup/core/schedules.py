"""Learning-rate schedules.

The paper's pre-training recipe (supplementary section 1): SGD with momentum
0.9, base learning rate 0.1 scaled by B/256, a linear warm-up over the first
5 epochs and a decay by 10x after 15 and 25 of 35 epochs, both following
Goyal et al. 2017. `WarmupStepDecay` is that schedule;
`WarmupStepDecay.from_paper(batch_size, steps_per_epoch)` builds it with the
paper's numbers.
"""
import math
import numbers

import keras
import tensorflow as tf


def _snap(value):
  """Snaps float noise in a step count (0.1 * 30 = 3.0000000000000004)."""
  nearest = round(value)
  return float(nearest) if abs(value - nearest) < 1e-6 else value


def epochs_to_steps(epochs, num_examples, batch_size):
  """Optimizer steps that cover `epochs` passes over `num_examples`.

  Training batches drop the remainder, so one epoch is
  `num_examples // batch_size` steps; a fractional count of epochs rounds down.

  Args:
    epochs: non-negative number, may be fractional.
    num_examples: positive int, examples in one epoch.
    batch_size: positive int, global batch size.

  Returns:
    int.

  Raises:
    ValueError: for a negative epoch count, a non-positive size, or a batch
      larger than the epoch.
  """
  _check_positive_int(num_examples=num_examples, batch_size=batch_size)
  _check_number(epochs=epochs)
  if batch_size > num_examples:
    raise ValueError(f"batch_size={batch_size} exceeds num_examples="
                     f"{num_examples}: with drop_remainder no step is taken.")
  return math.floor(_snap(epochs * (num_examples // batch_size)))


def _check_positive_int(**kwargs):
  for name, value in kwargs.items():
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
        or value <= 0):
      raise ValueError(f"{name} must be a positive int, got {name}={value!r}.")


def _check_number(positive=False, **kwargs):
  for name, value in kwargs.items():
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise ValueError(f"{name} must be a number, got {name}={value!r}.")
    if value < 0 or (positive and value == 0):
      bound = "> 0" if positive else ">= 0"
      raise ValueError(f"{name} must be {bound}, got {name}={value!r}.")


@keras.saving.register_keras_serializable(package="selfsup")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0, then step decay, with linear batch-size scaling.

  With `peak = base_lr * batch_size / reference_batch`, `e = step /
  steps_per_epoch` (steps count from 0, as `optimizer.iterations` does) and
  `k` the number of entries of `decay_epochs` that are <= e:

      lr(step) = peak * min(1, e / warmup_epochs) * decay_factor ** k

  The warm-up starts at exactly 0, as in the authors' code, so the very first
  update is a no-op; it reaches `peak` at `warmup_epochs`. A decay takes effect
  at the first step that starts at or after its epoch boundary, i.e. once that
  many full epochs of updates have been applied (the authors' TF1 code,
  through `tf.train.piecewise_constant`, switched one step later). Warm-up and
  decay multiply, so a decay inside the warm-up is allowed.

  Args:
    base_lr: learning rate for a batch of `reference_batch` examples (0.1).
    batch_size: global batch size B; the peak rate is base_lr * B / 256.
    steps_per_epoch: optimizer steps in one epoch (see `epochs_to_steps`).
    warmup_epochs: length of the linear warm-up, in epochs (5); 0 disables it.
    decay_epochs: epochs after which the rate is multiplied by decay_factor,
      strictly increasing ((15, 25)).
    decay_factor: multiplier applied at each decay, in (0, 1] (0.1).
    reference_batch: batch size at which base_lr applies (256).

  Raises:
    ValueError: for any argument out of range, quoting it.
  """

  def __init__(self, base_lr, batch_size, steps_per_epoch, warmup_epochs,
               decay_epochs, decay_factor=0.1, reference_batch=256):
    super().__init__()
    _check_number(positive=True, base_lr=base_lr)
    _check_positive_int(batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                        reference_batch=reference_batch)
    _check_number(warmup_epochs=warmup_epochs)
    if isinstance(decay_epochs, (str, bytes)) or not isinstance(
        decay_epochs, (list, tuple)):
      raise ValueError(f"decay_epochs must be a list of numbers, got "
                       f"decay_epochs={decay_epochs!r}.")
    for epoch in decay_epochs:
      _check_number(decay_epochs=epoch)
    if any(b <= a for a, b in zip(decay_epochs, decay_epochs[1:])):
      raise ValueError(f"decay_epochs must be strictly increasing, got "
                       f"decay_epochs={decay_epochs!r}.")
    _check_number(positive=True, decay_factor=decay_factor)
    if decay_factor > 1:
      raise ValueError(f"decay_factor must be in (0, 1], got "
                       f"decay_factor={decay_factor!r}.")
    self.base_lr = float(base_lr)
    self.batch_size = int(batch_size)
    self.steps_per_epoch = int(steps_per_epoch)
    self.warmup_epochs = float(warmup_epochs)
    self.decay_epochs = tuple(float(e) for e in decay_epochs)
    self.decay_factor = float(decay_factor)
    self.reference_batch = int(reference_batch)

  @classmethod
  def from_paper(cls, batch_size, steps_per_epoch):
    """The paper's schedule: 0.1 * B/256, 5 warm-up epochs, /10 at 15, 25."""
    return cls(base_lr=0.1, batch_size=batch_size,
               steps_per_epoch=steps_per_epoch, warmup_epochs=5,
               decay_epochs=(15, 25), decay_factor=0.1)

  @property
  def peak_lr(self):
    """The rate at the end of the warm-up, before any decay."""
    return self.base_lr * self.batch_size / self.reference_batch

  @property
  def warmup_steps(self):
    """First step at which the warm-up is over (int)."""
    return math.ceil(_snap(self.warmup_epochs * self.steps_per_epoch))

  @property
  def decay_steps(self):
    """First step at which each decay applies (tuple of int)."""
    return tuple(math.ceil(_snap(e * self.steps_per_epoch))
                 for e in self.decay_epochs)

  def __call__(self, step):
    """Learning rate at `step` (a scalar or any-shape integer/float tensor)."""
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    lr = tf.fill(tf.shape(step), tf.constant(self.peak_lr, tf.float32))
    if self.warmup_epochs > 0:
      # Divide by the exact (possibly fractional) warm-up length so the ramp
      # is a straight line through 0 and reaches peak at warmup_epochs.
      length = _snap(self.warmup_epochs * self.steps_per_epoch)
      lr *= tf.minimum(step / length, 1.0)
    # Integer boundaries compared in float32 are exact up to 2**24 steps.
    num_decays = tf.zeros_like(step)
    for boundary in self.decay_steps:
      num_decays += tf.cast(step >= boundary, tf.float32)
    return lr * tf.pow(tf.constant(self.decay_factor, tf.float32), num_decays)

  def get_config(self):
    return {
        "base_lr": self.base_lr,
        "batch_size": self.batch_size,
        "steps_per_epoch": self.steps_per_epoch,
        "warmup_epochs": self.warmup_epochs,
        "decay_epochs": list(self.decay_epochs),
        "decay_factor": self.decay_factor,
        "reference_batch": self.reference_batch,
    }



LR_SCALINGS = ("linear", "sqrt")


def scaled_peak(base_lr, batch_size, scaling="linear", reference_batch=256):
  """The peak rate for a global batch: base_lr * B / reference_batch
  ("linear", Goyal et al. 2017; the paper, BYOL, Barlow Twins) or
  base_lr * sqrt(B) ("sqrt", SimCLR's option for small batches)."""
  if scaling == "linear":
    return base_lr * batch_size / reference_batch
  if scaling == "sqrt":
    return base_lr * math.sqrt(batch_size)
  raise ValueError(f"scaling must be one of {LR_SCALINGS}, got "
                   f"scaling={scaling!r}.")


@keras.saving.register_keras_serializable(package="selfsup")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0, then a cosine decay to `final_factor` x peak.

  With `peak = scaled_peak(base_lr, batch_size, scaling)`, `w` the warm-up
  steps and `T` the total steps:

      lr(step) = peak * step / w                               for step < w
      lr(step) = peak * (f + (1 - f) * (1 + cos(pi * (step - w) / (T - w))) / 2)

  and `peak * f` from step T on (SimCLR, BYOL and Barlow Twins: 10 warm-up
  epochs then cosine; Barlow Twins ends at f = 0.001).

  Args:
    base_lr: rate for the reference batch (or per sqrt(B), see scaling).
    batch_size: global batch size.
    steps_per_epoch: optimizer steps in one epoch.
    warmup_epochs: linear warm-up length in epochs; 0 disables it.
    total_steps: the run's length in steps (where the cosine ends).
    final_factor: the last rate as a fraction of the peak, in [0, 1].
    scaling: "linear" or "sqrt" (see `scaled_peak`).
    reference_batch: the batch of base_lr under linear scaling (256).
  """

  def __init__(self, base_lr, batch_size, steps_per_epoch, warmup_epochs,
               total_steps, final_factor=0.0, scaling="linear",
               reference_batch=256):
    super().__init__()
    _check_number(positive=True, base_lr=base_lr)
    _check_positive_int(batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                        reference_batch=reference_batch)
    _check_number(warmup_epochs=warmup_epochs, total_steps=total_steps,
                  final_factor=final_factor)
    if final_factor > 1:
      raise ValueError(f"final_factor must be in [0, 1], got "
                       f"final_factor={final_factor!r}.")
    scaled_peak(1.0, 1, scaling)  # checks the name
    self.base_lr = float(base_lr)
    self.batch_size = int(batch_size)
    self.steps_per_epoch = int(steps_per_epoch)
    self.warmup_epochs = float(warmup_epochs)
    self.total_steps = int(total_steps)
    self.final_factor = float(final_factor)
    self.scaling = scaling
    self.reference_batch = int(reference_batch)

  @property
  def peak_lr(self):
    return scaled_peak(self.base_lr, self.batch_size, self.scaling,
                       self.reference_batch)

  @property
  def warmup_steps(self):
    """Length of the warm-up in steps (may be fractional)."""
    return _snap(self.warmup_epochs * self.steps_per_epoch)

  def __call__(self, step):
    step = tf.cast(tf.convert_to_tensor(step), tf.float32)
    peak = tf.constant(self.peak_lr, tf.float32)
    warmup = self.warmup_steps
    decay_length = max(self.total_steps - warmup, 1e-9)
    progress = tf.clip_by_value((step - warmup) / decay_length, 0.0, 1.0)
    cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
    lr = peak * (self.final_factor + (1.0 - self.final_factor) * cosine)
    if warmup > 0:
      lr = tf.where(step < warmup, peak * step / warmup, lr)
    return lr

  def get_config(self):
    return {"base_lr": self.base_lr, "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "total_steps": self.total_steps,
            "final_factor": self.final_factor, "scaling": self.scaling,
            "reference_batch": self.reference_batch}
