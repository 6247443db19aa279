"""Linear and MLP heads trained with SGD on a frozen representation.

The paper's SGD protocols (section 3.3, 4.3, 4.7 and supplementary section 2):

  linear  softmax regression, SGD momentum 0.9, initial rate 0.1 scaled by
          B/256 (B = 2048 for Rotation/Exemplar as in section 4.7; 1024 for
          the patch models, supplementary section 2),
          decayed x0.1 twice: first after 30, 120 or 480 epochs (section 4.7;
          480 was best and is the default), then 20 epochs later, and 20 more
          epochs of training after that.
  mlp     one hidden layer of 1000 ReLU units with dropout 0.5 on it, SGD
          momentum 0.9, batch 512, 180 epochs, rate 0.01 decayed x0.1 after 60
          and 120 epochs.

Both minimise the mean cross-entropy over the batch plus lambda * ||W||^2
(biases not penalised). The MLP's lambda is L-BFGS's 100 / (M * C) (M =
representation size, C = classes): the supplementary says "the same l2
scheme". For the linear head the paper is silent and the authors' code used
no weight decay, so its default lambda is 0 (`l2="lbfgs"` gives 100 / (M * C),
docs/paper_vs_code.md). Readings of the paper, each overridable:
  - The linear rate is scaled by B/256 (supplementary section 1's rule, which
    the authors' code applied to every SGD run). The MLP's "initial learning
    rate is 0.01" is used as is, unscaled (`scale_lr=False`), because the
    supplementary gives it for one fixed batch size, 512.
  - "The same l2 scheme as L-BFGS" for the MLP: ONE lambda = 100 / (M * C),
    from the input size M and the classes C, applied to both weight matrices
    (lambda * (||W1||^2 + ||W2||^2)), not a lambda per layer.
  - Keras' SGD puts the rate inside the momentum (v = 0.9 v - lr g), TF1's
    MomentumOptimizer outside it (v = 0.9 v + g; w -= lr v); they differ only
    for a few steps after each decay.

Inputs come in two modes:
  cached   `train_data` yields (features [B, M], labels [B]) as
           `selfsup.evaluation.features.dataset` does (or dicts with
           "features" and "label"): no augmentation, fast.
  on the fly  `backbone` (a frozen keras.Model returning a dict of endpoints)
           and `train_data` yielding {"image", "label"} batches from
           `selfsup.data.make_pipeline` with the export's evaluation spec
           (smaller side 256, random 224 crop in training). Images [B, H, W, 3]
           or patches [B, P, h, w, 3]. The representation is the feature
           export's own (`selfsup.evaluation.extract.representation`: spatial
           endpoints max-pooled on the adaptive grid, patch models averaged
           over the P patches), so both modes see the same features. The
           backbone runs with training=False, outside the gradient tape.

`train_head` = `resolve_config` (the paper's values for what is not given)
+ `build_head` (model and optimizer) + `fit_head` (the epochs) +
`evaluate_head` (top-1, top-5).
"""
import contextlib
import dataclasses
import math
import numbers
import time
from typing import Callable, Optional, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from selfsup.core import schedules
from selfsup.evaluation import extract, lbfgs
from selfsup.core.checks import ConfigError

HEADS = ("linear", "mlp")
MOMENTUM = 0.9
MLP_HIDDEN_UNITS = 1000
MLP_DROPOUT = 0.5
LINEAR_BATCH_SIZE = 2048        # Rotation, Exemplar (section 4.7)
PATCH_LINEAR_BATCH_SIZE = 1024  # Jigsaw, Relative Patch Location
MLP_BATCH_SIZE = 512
LINEAR_FIRST_DECAYS = (30, 120, 480)  # the three schedules of Figure 8
# Tag of the in-graph label check, to turn its error into a ValueError.
_LABEL_ERROR = "selfsup.evaluation.sgd: label out of range"


def _check_choice(name, value, choices):
  if value not in choices:
    raise ConfigError(f"{name}={value!r} is not valid: expected one of "
                      f"{choices}.")


def _check_int(name, value, minimum=1, optional=False):
  if optional and value is None:
    return None
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise ConfigError(f"{name}={value!r} is not valid: expected an integer >= "
                      f"{minimum}{' or None' if optional else ''}.")
  return int(value)


def default_l2(head, dim, num_classes):
  """The head's lambda when none is given: 0 for the linear head (the authors'
  linear_eval had no weight decay), 100 / (M * C) for the MLP (the paper)."""
  return lbfgs.default_l2(dim, num_classes) if head == "mlp" else 0.0


def _check_l2(l2, dim, num_classes, head):
  if l2 is None:
    return default_l2(head, dim, num_classes)
  if isinstance(l2, str) and l2 == "lbfgs":
    return lbfgs.default_l2(dim, num_classes)
  if (isinstance(l2, bool) or not isinstance(l2, numbers.Real)
      or not math.isfinite(l2) or l2 < 0):
    raise ConfigError(f"l2={l2!r} is not valid: expected a finite number >= 0, "
                      f"'lbfgs' for 100 / (M * C), or None for the head's "
                      f"default (linear 0, mlp 100 / (M * C)).")
  return float(l2)


def paper_config(head="linear", *, patch_based=False, first_decay=480):
  """The paper's settings for `head`, as keyword arguments of `train_head`.

  Returns a dict with epochs, decay_epochs, base_lr, scale_lr and batch_size
  (the batch to build the training pipeline with). `first_decay` picks one of
  section 4.7's linear schedules: decay at first_decay and first_decay + 20,
  stop at first_decay + 40.
  """
  _check_choice("head", head, HEADS)
  if head == "mlp":
    return dict(epochs=180, decay_epochs=(60, 120), base_lr=0.01,
                scale_lr=False, batch_size=MLP_BATCH_SIZE)
  first_decay = _check_int("first_decay", first_decay)
  return dict(epochs=first_decay + 40,
              decay_epochs=(first_decay, first_decay + 20), base_lr=0.1,
              scale_lr=True,
              batch_size=(PATCH_LINEAR_BATCH_SIZE if patch_based
                          else LINEAR_BATCH_SIZE))


def make_head(head, num_classes, input_dim, l2=None, *, seed=None):
  """The evaluation head: features [B, input_dim] -> logits [B, num_classes].

  The penalty l2 * ||W||^2 (default: `default_l2`) is a kernel regulariser of
  every Dense layer, so it is in `model.losses`. The linear head starts at
  zero, like the L-BFGS fit (the problem is convex); the MLP needs random
  weights to break the symmetry of its hidden units.
  """
  _check_choice("head", head, HEADS)
  num_classes = _check_int("num_classes", num_classes, minimum=2)
  input_dim = _check_int("input_dim", input_dim)
  l2 = _check_l2(l2, input_dim, num_classes, head)
  # Keras' L2(f) adds f * sum(w ** 2): exactly the paper's lambda * ||W||^2.
  regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
  inputs = keras.Input([input_dim], name="features")
  x, init = inputs, "zeros"
  if head == "mlp":
    x = keras.layers.Dense(
        MLP_HIDDEN_UNITS, activation="relu", name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed),
        kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(MLP_DROPOUT, seed=seed, name="dropout")(x)
    init = keras.initializers.GlorotUniform(None if seed is None else seed + 1)
  logits = keras.layers.Dense(num_classes, name="logits",
                              kernel_initializer=init,
                              kernel_regularizer=regularizer)(x)
  return keras.Model(inputs, logits, name=f"{head}_head")


def learning_rate_schedule(base_lr, batch_size, steps_per_epoch, decay_epochs,
                           scale_lr=True):
  """Step decay x0.1 without warm-up; base_lr * B/256 if `scale_lr`."""
  return schedules.WarmupStepDecay(
      base_lr=base_lr, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
      warmup_epochs=0, decay_epochs=tuple(decay_epochs), decay_factor=0.1,
      reference_batch=256 if scale_lr else batch_size)


def _input_specs(data, name, key):
  """(input spec, label spec) of a dataset of (x, y) or {key, "label"}."""
  if not isinstance(data, tf.data.Dataset):
    raise ConfigError(f"{name} must be a tf.data.Dataset, got {type(data)}.")
  spec = data.element_spec
  if isinstance(spec, dict) and key in spec and "label" in spec:
    return spec[key], spec["label"]
  if isinstance(spec, (tuple, list)) and len(spec) == 2:
    return spec
  raise ConfigError(f"{name} must yield ({key}, label) tuples or dicts with "
                    f"{key!r} and 'label', got element_spec {spec}.")


def _split(batch, key):
  return (batch[key], batch["label"]) if isinstance(batch, dict) else batch


def _check_data(data, name, on_the_fly):
  x_spec, y_spec = _input_specs(data, name, "image" if on_the_fly else
                                "features")
  ranks = (4, 5) if on_the_fly else (2,)
  what = ("images [B, H, W, C] or patches [B, P, h, w, C]" if on_the_fly
          else "features [B, M] (pass backbone= to train on images)")
  if x_spec.shape.rank not in ranks or not x_spec.dtype.is_floating:
    raise ConfigError(f"{name} must yield float {what}, got {x_spec}.")
  if y_spec.shape.rank != 1 or not y_spec.dtype.is_integer:
    raise ConfigError(f"{name} labels must be integer [B], got {y_spec}.")
  return x_spec


def _steps_per_epoch(data, log):
  """Batches in one pass of `data`: its cardinality, or counted."""
  cardinality = int(data.cardinality())
  if cardinality == tf.data.INFINITE_CARDINALITY:
    raise ConfigError("train_data repeats forever: pass steps_per_epoch (e.g. "
                      "num_examples // batch_size).")
  if cardinality == tf.data.UNKNOWN_CARDINALITY:
    log("sgd: counting the batches of one pass over train_data; pass "
        "steps_per_epoch to skip this.")
    cardinality = int(data.reduce(np.int64(0), lambda n, *_: n + 1))
  if cardinality == 0:
    raise ConfigError("train_data is empty: expected at least one batch.")
  return cardinality


def _checked_labels(labels, num_classes):
  labels = tf.cast(labels, tf.int32)
  ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
  check = tf.debugging.Assert(
      ok, [_LABEL_ERROR, "min", tf.reduce_min(labels), "max",
           tf.reduce_max(labels)])
  with tf.control_dependencies([check]):
    return tf.identity(labels)


@contextlib.contextmanager
def _label_errors(name, num_classes):
  """Turns the in-graph label check's error into a ValueError."""
  try:
    yield
  except tf.errors.InvalidArgumentError as e:
    if _LABEL_ERROR not in str(e):
      raise
    raise ConfigError(f"{name} labels must lie in [0, {num_classes}): "
                     f"{e.message}") from e


def _evaluate(eval_step, data, key, num_classes):
  """Top-1/top-5 accuracy and mean cross-entropy over one pass of `data`."""
  totals = np.zeros(4)
  with _label_errors("eval_data", num_classes):
    for batch in data:
      totals += np.array([float(t) for t in eval_step(*_split(batch, key))])
  top1, top5, n, ce = totals
  if n == 0:
    raise ConfigError("eval_data is empty: expected at least one example.")
  return dict(top1=top1 / n, top5=top5 / n, eval_loss=ce / n,
              num_eval_examples=int(n))


@dataclasses.dataclass
class HeadConfig:
  """The schedule and size of one head's training (see `train_head`)."""
  head: str
  epochs: int
  decay_epochs: Sequence[float]
  base_lr: float
  scale_lr: bool
  steps_per_epoch: Optional[int] = None
  batch_size: Optional[int] = None
  eval_every_epochs: Optional[int] = None
  seed: Optional[int] = None


def resolve_config(head="linear", *, epochs=None, decay_epochs=None,
                   base_lr=None, scale_lr=None, steps_per_epoch=None,
                   batch_size=None, eval_every_epochs=None,
                   seed=None) -> HeadConfig:
  """A checked `HeadConfig`: the paper's value (`paper_config`) for every
  setting left None."""
  _check_choice("head", head, HEADS)
  paper = paper_config(head)
  return HeadConfig(
      head=head,
      epochs=_check_int("epochs", paper["epochs"] if epochs is None
                        else epochs),
      decay_epochs=tuple(paper["decay_epochs"] if decay_epochs is None
                         else decay_epochs),
      base_lr=paper["base_lr"] if base_lr is None else base_lr,
      scale_lr=paper["scale_lr"] if scale_lr is None else bool(scale_lr),
      steps_per_epoch=_check_int("steps_per_epoch", steps_per_epoch,
                                 optional=True),
      batch_size=_check_int("batch_size", batch_size, optional=True),
      eval_every_epochs=_check_int("eval_every_epochs", eval_every_epochs,
                                   optional=True),
      seed=seed)


@dataclasses.dataclass
class _Inputs:
  """How batches become (features, labels): cached features or images
  through a frozen backbone."""
  key: str
  input_dim: int
  features_of: Callable


def _inputs(train_data, eval_data, input_dim, backbone, endpoint,
            max_features, pooling_rule):
  on_the_fly = backbone is not None
  if on_the_fly and not isinstance(backbone, keras.Model):
    raise ConfigError(f"backbone must be a keras.Model, got {type(backbone)}.")
  x_spec = _check_data(train_data, "train_data", on_the_fly)
  _check_data(eval_data, "eval_data", on_the_fly)
  if int(eval_data.cardinality()) == tf.data.INFINITE_CARDINALITY:
    raise ConfigError("eval_data repeats forever: expected one finite pass.")
  if on_the_fly:
    if not x_spec.shape[1:].is_fully_defined():
      raise ConfigError(f"train_data's images need a static shape to size "
                        f"the representation, got {x_spec.shape}.")
    # One image through the backbone sizes the (pooled) representation.
    dummy = tf.zeros([1, *x_spec.shape[1:]], tf.float32)
    found = int(extract.representation(backbone, dummy, endpoint,
                                       max_features, pooling_rule).shape[-1])
    source = f"the backbone's endpoint {endpoint!r}"

    def features_of(x):
      return tf.stop_gradient(extract.representation(
          backbone, tf.cast(x, tf.float32), endpoint, max_features,
          pooling_rule))
  else:
    found, source = x_spec.shape[-1], "train_data's features"

    def features_of(x):
      return tf.cast(x, tf.float32)
  if input_dim is None and found is None:
    raise ConfigError(f"cannot infer input_dim from {source}: pass it.")
  input_dim = _check_int("input_dim", found if input_dim is None else input_dim)
  if found is not None and found != input_dim:
    raise ConfigError(f"input_dim={input_dim} but {source} has {found} "
                      f"features.")
  return _Inputs("image" if on_the_fly else "features", input_dim,
                 features_of)


def build_head(config: HeadConfig, num_classes, input_dim, l2,
               steps_per_epoch, batch_size):
  """The head (`make_head`) and its SGD optimizer with the step decay,
  slots built (outside any tf.function)."""
  model = make_head(config.head, num_classes, input_dim, l2, seed=config.seed)
  optimizer = keras.optimizers.SGD(
      learning_rate=learning_rate_schedule(
          config.base_lr, batch_size, steps_per_epoch, config.decay_epochs,
          config.scale_lr),
      momentum=MOMENTUM)
  optimizer.build(model.trainable_variables)
  return model, optimizer


def _eval_step(model, inputs, num_classes):
  @tf.function(reduce_retracing=True)
  def eval_step(x, y):
    logits = model(inputs.features_of(x), training=False)
    y = _checked_labels(y, num_classes)
    # Rank of the true class among the others scoring at least as high (NaN
    # counted as higher): ties count against the model, as in lbfgs.evaluate,
    # so collapsed logits cannot score 100%; a NaN label score never counts.
    true = tf.gather(logits, y, batch_dims=1)
    rank = tf.reduce_sum(tf.cast(tf.logical_not(logits < true[:, None]),
                                 tf.int32), axis=1) - 1
    valid = tf.logical_not(tf.math.is_nan(true))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                        logits=logits)
    count = lambda t: tf.reduce_sum(tf.cast(t, tf.float32))
    return (count((rank < 1) & valid), count((rank < 5) & valid),
            count(tf.ones_like(y)), count(ce))
  return eval_step


def evaluate_head(model, eval_data, inputs: _Inputs, num_classes):
  """Top-1/top-5 accuracy and mean cross-entropy of `model` over one pass
  of `eval_data`."""
  return _evaluate(_eval_step(model, inputs, num_classes), eval_data,
                   inputs.key, num_classes)


def fit_head(model, optimizer, batches, config: HeadConfig, inputs: _Inputs,
             num_classes, steps_per_epoch, *, eval_data=None,
             log=logging.info):
  """Runs `config.epochs` epochs of `steps_per_epoch` SGD steps over the
  (features or images, labels) `batches` iterator; returns the history
  (per epoch: epoch, lr at its start, train_loss, seconds; top1/top5 where
  evaluated every `config.eval_every_epochs`)."""

  @tf.function(reduce_retracing=True)
  def train_step(x, y):
    feats = inputs.features_of(x)
    y = _checked_labels(y, num_classes)
    with tf.GradientTape() as tape:
      logits = model(feats, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=y, logits=logits))
      if model.losses:
        loss += tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  eval_step = _eval_step(model, inputs, num_classes)
  history, start, epochs = [], time.perf_counter(), config.epochs
  every = config.eval_every_epochs
  with _label_errors("train_data", num_classes):
    for epoch in range(1, epochs + 1):
      lr = float(optimizer.learning_rate)
      losses = [train_step(*next(batches)) for _ in range(steps_per_epoch)]
      train_loss = float(tf.add_n(losses)) / len(losses)
      if not math.isfinite(train_loss):
        raise FloatingPointError(f"the objective is {train_loss} in epoch "
                                 f"{epoch} at lr {lr:.3g}: lower base_lr.")
      entry = dict(epoch=epoch, lr=lr, train_loss=train_loss,
                   seconds=time.perf_counter() - start)
      # The last epoch is evaluated once, by the caller.
      if (every and epoch % every == 0 and epoch < epochs
          and eval_data is not None):
        scores = _evaluate(eval_step, eval_data, inputs.key, num_classes)
        entry.update(top1=scores["top1"], top5=scores["top5"])
      history.append(entry)
      log(f"sgd epoch {epoch}/{epochs}: loss {train_loss:.4f}, lr {lr:.3g}"
          + (f", top1 {entry['top1']:.4f}" if "top1" in entry else "")
          + f" ({entry['seconds']:.1f}s)")
  return history


def _batches(train_data, key):
  """An endless iterator of (x, y) and the first batch's size."""
  it = iter(train_data.repeat())
  try:
    first = _split(next(it), key)
  except StopIteration:
    raise ConfigError("train_data is empty: expected at least one batch.") \
        from None

  def chain():
    yield first
    for batch in it:
      yield _split(batch, key)

  return chain(), int(tf.shape(first[1])[0])


def train_head(head="linear", *, train_data: tf.data.Dataset,
               eval_data: tf.data.Dataset, num_classes: int,
               input_dim: Optional[int] = None, epochs: Optional[int] = None,
               steps_per_epoch: Optional[int] = None,
               batch_size: Optional[int] = None,
               base_lr: Optional[float] = None,
               decay_epochs: Optional[Sequence[float]] = None,
               scale_lr: Optional[bool] = None, l2: Optional[float] = None,
               backbone: Optional[keras.Model] = None,
               endpoint: str = "pre_logits",
               max_features: int = extract.MAX_FEATURES,
               pooling_rule: str = "nearest",
               seed: Optional[int] = None,
               eval_every_epochs: Optional[int] = None,
               log: Callable[[str], None] = logging.info) -> dict:
  """Trains a linear or MLP head with SGD and evaluates it.

  Arguments left None take the paper's value for `head` (`paper_config`).

  Args:
    head: "linear" or "mlp".
    train_data: batches of (features, label) or, with `backbone`, of
      {"image", "label"} (see the module docstring). A finite dataset is one
      epoch per pass; one that repeats needs `steps_per_epoch`.
    eval_data: one finite pass of batches in the same form.
    num_classes: C; labels must lie in [0, C).
    input_dim: M, the representation size; inferred from the data or the
      backbone's endpoint, and checked against them if given.
    epochs: training epochs (linear 520, mlp 180).
    steps_per_epoch: optimizer steps per epoch; default: batches in one pass
      of train_data (its cardinality, or counted over one pass).
    batch_size: B for the rate scaling; default: the first batch's size.
    base_lr: rate before scaling (linear 0.1, mlp 0.01).
    decay_epochs: epochs after which the rate drops x0.1 (linear (480, 500),
      mlp (60, 120)).
    scale_lr: multiply base_lr by B/256 (linear True, mlp False).
    l2: lambda of lambda * ||W||^2; "lbfgs" for 100 / (M * C); default
      `default_l2(head, ...)`: linear 0 (the authors' code), mlp 100 / (M * C).
    backbone: frozen keras.Model for on-the-fly training; None for features.
    endpoint: the backbone output used as representation.
    max_features: a spatial endpoint is max-pooled to about this many
      features, as in the feature export.
    pooling_rule: how (`selfsup.core.pooling`), as in the feature export.
    seed: seeds the head's initialisation and dropout.
    eval_every_epochs: also evaluate every this many epochs (into history).
    log: called with one line per epoch.

  Returns:
    dict with top1, top5 (fractions), eval_loss, num_eval_examples,
    train_loss (mean objective over the last epoch), epochs, steps_per_epoch,
    batch_size, l2, seconds, history (per epoch: epoch, lr at its start,
    train_loss, seconds; top1/top5 where evaluated) and model (the head).

  Raises:
    ValueError: unknown head, bad settings, data of the wrong form or empty,
      labels outside [0, num_classes), a dimension mismatch.
    FloatingPointError: the objective became NaN or infinite.
  """
  num_classes = _check_int("num_classes", num_classes, minimum=2)
  config = resolve_config(
      head, epochs=epochs, decay_epochs=decay_epochs, base_lr=base_lr,
      scale_lr=scale_lr, steps_per_epoch=steps_per_epoch,
      batch_size=batch_size, eval_every_epochs=eval_every_epochs, seed=seed)
  inputs = _inputs(train_data, eval_data, input_dim, backbone, endpoint,
                   max_features, pooling_rule)
  steps = config.steps_per_epoch or _steps_per_epoch(train_data, log)
  batches, actual_batch = _batches(train_data, inputs.key)
  batch_size = config.batch_size or actual_batch
  if batch_size != actual_batch:
    log(f"sgd: scaling the rate for batch_size={batch_size}, but the first "
        f"training batch holds {actual_batch} examples.")
  l2 = _check_l2(l2, inputs.input_dim, num_classes, head)
  model, optimizer = build_head(config, num_classes, inputs.input_dim, l2,
                                steps, batch_size)
  log(f"sgd: {head} head on {inputs.input_dim} features, {num_classes} "
      f"classes, {config.epochs} epochs of {steps} steps, batch "
      f"{batch_size}, l2 {l2:.3g}, lr {optimizer.learning_rate.numpy():.3g} "
      f"decayed x0.1 after epochs {tuple(config.decay_epochs)}.")
  start = time.perf_counter()
  history = fit_head(model, optimizer, batches, config, inputs, num_classes,
                     steps, eval_data=eval_data, log=log)
  scores = evaluate_head(model, eval_data, inputs, num_classes)
  history[-1].update(top1=scores["top1"], top5=scores["top5"])
  seconds = time.perf_counter() - start
  log(f"sgd: {head} head top1 {scores['top1']:.4f}, top5 "
      f"{scores['top5']:.4f} after {config.epochs} epochs ({seconds:.1f}s).")
  return dict(scores, train_loss=history[-1]["train_loss"],
              epochs=config.epochs, steps_per_epoch=steps,
              batch_size=batch_size, l2=l2, seconds=seconds, history=history,
              model=model)
