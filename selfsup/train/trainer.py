"""The pretraining loop: any task, any strategy, resumable, exportable.

The task's `step` runs per replica under `strategy.run`; the loss is averaged
over the global batch (each replica's mean divided by the replica count, the
gradients being summed across replicas by the optimizer). Several steps run
inside one `tf.function` call (`steps_per_loop`), as TPUs need.
"""
import contextlib
import dataclasses
import json
import math
import os
import random
import time

import tensorflow as tf
from absl import logging

from selfsup import data as data_lib
from selfsup.core import checks, errors, files, lock, precision
from selfsup.core.log import progress
from selfsup.core import schedules
from selfsup.core.schedules import WarmupCosineDecay, WarmupStepDecay
from selfsup.train import optimizers
from selfsup.train import checkpoints, recalibrate
from selfsup.train import probe as probe_lib
from selfsup.workdir import export


class TrainingDivergedError(errors.SelfsupError, RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""
  label = "training diverged"


@dataclasses.dataclass
class TrainConfig:
  """How long and how to train (the paper's defaults, supplementary 1).

  `train_steps`, if set, overrides `epochs`. `batch_size` is global and counts
  source images (a Rotation batch of 1024 holds 4096 rotated copies).
  `checkpoint_input` saves the input pipeline's position with each checkpoint
  on one worker (the default strategy, MirroredStrategy); tf.distribute's
  multi-worker and TPU iterators cannot be saved, so a run resumed there
  restarts its input (a warning says so). `jit_compile` needs one replica.

  `seed` seeds the weight initialisation and the input pipeline: two fresh
  runs with one seed on one machine end with identical weights. None draws
  the input seed once per workdir and leaves the initialisation random.

  `sync_batch_norm` synchronises batch-norm statistics across replicas. The
  authors' TPUEstimator code normalised per core (False, the default); the
  paper does not say.

  `eval_batches` bounds the pretext evaluation on `eval_split` (before and
  after training, Figure 4); None evaluates the whole split.

  `online_probe` trains a linear classifier on the stop-gradient features
  of `probe_endpoints` alongside the task (`selfsup.train.probe`; it never
  changes the backbone) and reports its top-1 on `eval_split` every
  `probe_every` steps (default: at each checkpoint), on at most
  `probe_eval_batches` batches (default: `eval_batches`). None (default):
  on when the training batches carry class labels (the source has labels)
  and there is training to do; True requires the labels; False turns it
  off.

  `optimizer` ("sgd", "lars", "adamw"), `schedule`, `lr_scaling`,
  `weight_decay`, `exclude_from_weight_decay` and `final_lr_factor` are the
  methods' settings (docs/methods.md); `lr_multipliers` ({pattern: factor},
  LARS only) scales the rate of variables whose path matches (Barlow Twins'
  rate for biases and batch-norm parameters).

  `bn_recalibration_batches`, if not 0, sets every batch norm's moving
  statistics to their mean over that many training batches once training
  ends, the weights untouched (`Trainer.recalibrate_batch_norm`): with
  `train_steps=0`, the random-init baseline with the data's statistics.

  Every value is checked when the config is made (`ConfigError`).
  """
  batch_size: int = 1024
  epochs: float = 35
  train_steps: int = None
  base_lr: float = 0.1
  warmup_epochs: float = 5
  decay_epochs: tuple = (15, 25)
  momentum: float = 0.9
  steps_per_loop: int = 100
  checkpoint_steps: int = 1000
  max_checkpoints: int = 3
  mixed_precision: bool = False
  jit_compile: bool = False
  seed: int = None
  checkpoint_input: bool = True
  shuffle_buffer: int = 10_000
  cache: bool = False
  train_split: str = "train"
  eval_split: str = None
  eval_batches: int = None
  sync_batch_norm: bool = False
  optimizer: str = "sgd"
  schedule: str = "step"
  lr_scaling: str = "linear"
  weight_decay: float = 0.0
  exclude_from_weight_decay: tuple = ("bias", "gamma", "beta")
  final_lr_factor: float = 0.0
  lr_multipliers: dict = None
  bn_recalibration_batches: int = 0
  online_probe: bool = None
  probe_endpoints: tuple = probe_lib.DEFAULT_ENDPOINTS
  probe_every: int = None
  probe_eval_batches: int = None
  probe_learning_rate: float = probe_lib.DEFAULT_LEARNING_RATE

  def __post_init__(self):
    name = lambda field: f"TrainConfig.{field}"  # noqa: E731
    checks.integer(name("batch_size"), self.batch_size, minimum=1)
    checks.number(name("epochs"), self.epochs, minimum=0)
    checks.integer(name("train_steps"), self.train_steps, minimum=0,
                   optional=True)
    checks.positive(name("base_lr"), self.base_lr)
    checks.number(name("warmup_epochs"), self.warmup_epochs, minimum=0)
    self.decay_epochs = checks.sequence(
        name("decay_epochs"), self.decay_epochs,
        lambda n, v: checks.number(n, v, minimum=0))
    if list(self.decay_epochs) != sorted(self.decay_epochs):
      raise checks.ConfigError(
          f"{name('decay_epochs')}={self.decay_epochs!r} is invalid: "
          "expected epochs in increasing order.")
    checks.number(name("momentum"), self.momentum, minimum=0, maximum=1,
                  below=True)
    checks.integer(name("steps_per_loop"), self.steps_per_loop, minimum=1)
    checks.integer(name("checkpoint_steps"), self.checkpoint_steps,
                   minimum=1)
    checks.integer(name("max_checkpoints"), self.max_checkpoints, minimum=1)
    checks.integer(name("seed"), self.seed, minimum=0, maximum=2**31 - 1,
                   optional=True)
    checks.integer(name("shuffle_buffer"), self.shuffle_buffer, minimum=0)
    checks.integer(name("eval_batches"), self.eval_batches, minimum=1,
                   optional=True)
    checks.integer(name("bn_recalibration_batches"),
                   self.bn_recalibration_batches, minimum=0)
    if self.online_probe is not None:
      checks.boolean(name("online_probe"), self.online_probe)
    self.probe_endpoints = tuple(checks.sequence(
        name("probe_endpoints"), self.probe_endpoints, checks.string,
        allow_empty=False))
    checks.integer(name("probe_every"), self.probe_every, minimum=1,
                   optional=True)
    checks.integer(name("probe_eval_batches"), self.probe_eval_batches,
                   minimum=1, optional=True)
    checks.positive(name("probe_learning_rate"), self.probe_learning_rate)
    for flag in ("mixed_precision", "jit_compile", "checkpoint_input",
                 "cache", "sync_batch_norm"):
      checks.boolean(name(flag), getattr(self, flag))
    checks.string(name("train_split"), self.train_split)
    checks.string(name("eval_split"), self.eval_split, optional=True)
    self._check_optimizer(name)

  def _check_optimizer(self, name):
    checks.string(name("optimizer"), self.optimizer,
                  choices=optimizers.OPTIMIZERS)
    checks.string(name("schedule"), self.schedule, choices=SCHEDULES)
    checks.string(name("lr_scaling"), self.lr_scaling,
                  choices=schedules.LR_SCALINGS)
    checks.number(name("weight_decay"), self.weight_decay, minimum=0)
    if self.optimizer == "sgd" and self.weight_decay:
      raise checks.ConfigError(
          f"{name('weight_decay')}={self.weight_decay!r} is invalid with "
          "optimizer='sgd': SGD's decay is the task's L2 "
          "(build_task.weight_decay); expected 0.")
    self.exclude_from_weight_decay = tuple(checks.sequence(
        name("exclude_from_weight_decay"), self.exclude_from_weight_decay,
        checks.string))
    checks.number(name("final_lr_factor"), self.final_lr_factor, minimum=0,
                  maximum=1)
    # {pattern: factor}: checked here, so a bad setting fails before the
    # data and the model are built.
    optimizers.check_lr_multipliers(self.optimizer, self.lr_multipliers)


SCHEDULES = ("step", "cosine")


def make_schedule(cfg, steps_per_epoch, total_steps):
  """The learning-rate schedule a TrainConfig names: the paper's warm-up and
  step decay ("step"), or warm-up and cosine decay to `final_lr_factor`
  ("cosine"); the peak is base_lr scaled with the batch (`lr_scaling`)."""
  if cfg.schedule == "cosine":
    return WarmupCosineDecay(
        cfg.base_lr, cfg.batch_size, steps_per_epoch, cfg.warmup_epochs,
        total_steps, final_factor=cfg.final_lr_factor,
        scaling=cfg.lr_scaling)
  if cfg.lr_scaling != "linear":
    raise checks.ConfigError(
        f"TrainConfig.lr_scaling={cfg.lr_scaling!r} is invalid with "
        "schedule='step': the paper's schedule scales linearly.")
  return WarmupStepDecay(cfg.base_lr, cfg.batch_size, steps_per_epoch,
                         cfg.warmup_epochs, cfg.decay_epochs)


class Trainer:
  """Pretrains `task` on `source` into `workdir`.

  Args:
    task: a `selfsup.tasks.Task` (not yet built).
    source: a `selfsup.data.Source`.
    workdir: where checkpoints, summaries and the export go (local or gs://).
    config: a `TrainConfig`.
    strategy: a tf.distribute strategy (default: the current one).
  """

  def __init__(self, task, source, workdir, config=None, strategy=None):
    self.task = task
    self.source = source
    self.workdir = workdir
    self.config = config or TrainConfig()
    self.strategy = strategy or tf.distribute.get_strategy()
    cfg = self.config
    if not isinstance(cfg, TrainConfig):
      raise TypeError(f"config must be a TrainConfig, got {cfg!r}.")
    replicas = self.strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
      raise checks.ConfigError(
          f"TrainConfig.batch_size={cfg.batch_size} is invalid: expected a "
          f"multiple of the {replicas} replicas.")
    if cfg.jit_compile and replicas > 1 and not _is_tpu(self.strategy):
      raise checks.ConfigError(
          f"TrainConfig.jit_compile=True needs one replica, got {replicas}: "
          "the step is compiled on its own only on one device (a compiled "
          "function nested in a replicated step cannot hold cross-replica "
          "communication). On TPU every step is compiled anyway.")
    for field in ("train_split", "eval_split"):
      split = getattr(cfg, field)
      if split is not None and split not in source.splits:
        raise checks.ConfigError(
            f"TrainConfig.{field}={split!r} is invalid: expected a split of "
            f"{source.name!r}, one of {tuple(source.splits)}.")
    num_train = source.num_examples(cfg.train_split)
    self.steps_per_epoch = num_train // cfg.batch_size
    if self.steps_per_epoch < 1:
      raise checks.ConfigError(
          f"TrainConfig.batch_size={cfg.batch_size} is invalid: expected at "
          f"most the {num_train} images of {source.name}:{cfg.train_split}.")
    # train_steps=0 exports the initialisation: the random-weights baseline.
    self.total_steps = int(cfg.train_steps if cfg.train_steps is not None
                           else round(cfg.epochs * self.steps_per_epoch))
    self.is_chief = _is_chief(self.strategy)
    if self.is_chief:
      _clean_temporary(workdir)
    if cfg.mixed_precision:
      precision.warn_if_bf16_slow(_devices(self.strategy))

    with self.strategy.scope(), precision.dtype_policy(
        "mixed_bfloat16" if cfg.mixed_precision else "float32"), \
        _seeded(cfg.seed):
      task.build(sync_batch_norm=cfg.sync_batch_norm and replicas > 1)
      # The names of the logs, known before tracing: a loop accumulator that
      # starts undefined makes autograph trace the whole step twice.
      metrics = getattr(task, "metric_names", None)
      if metrics is None:  # a subclass with its own `build`
        _, metrics = task.step(task.dummy_batch(2), training=False)
      self._log_names = sorted(set(metrics) | {"loss", "total_loss"})
      self.schedule = make_schedule(cfg, self.steps_per_epoch,
                                    self.total_steps)
      self.optimizer = optimizers.make_optimizer(
          cfg.optimizer, self.schedule, momentum=cfg.momentum,
          weight_decay=cfg.weight_decay,
          exclude_from_weight_decay=cfg.exclude_from_weight_decay,
          lr_multipliers=cfg.lr_multipliers)
      # Built in the scope before the first step, so that its slots are
      # mirrored like the variables they follow.
      self.optimizer.build(task.trainable_variables)
    self.input_seed = _input_seed(workdir, cfg.seed, write=self.is_chief)
    self._iterator, self._next_batch, trackable = self._make_input()
    self.probe = self._make_probe()
    if self.probe is not None:
      self._log_names = sorted(set(self._log_names)
                               | set(self.probe.log_names()))
    if cfg.checkpoint_input and not trackable:
      logging.warning(
          "checkpoint_input=True, but the input of %s cannot be checkpointed "
          "(tf.distribute's iterators are not trackable): a resumed run "
          "restarts its input pipeline.", type(self.strategy).__name__)
    self.checkpoint = checkpoints.Manager(
        os.path.join(workdir, "checkpoints"), cfg.max_checkpoints,
        step=self.optimizer.iterations, optimizer=self.optimizer,
        iterator=self._iterator if cfg.checkpoint_input and trackable
        else None, chief=self.is_chief,
        scratch=None if self.is_chief else _worker_scratch(self.strategy,
                                                           workdir),
        **task.modules, **(self.probe.modules if self.probe else {}))
    self._restored, self._restored_path = False, None
    self._train_loop = tf.function(self._loop)
    # A nested tf.function cannot hold a synchronisation point (the sync-BN
    # all-reduce); only the one-replica XLA step is compiled on its own.
    self._grads = (tf.function(self._compute_grads, jit_compile=True)
                   if cfg.jit_compile and replicas == 1
                   else self._compute_grads)

  def _make_probe(self):
    """The online probe (see TrainConfig), built in the strategy scope, or
    None when it is off."""
    cfg, task = self.config, self.task
    key = task.class_label_key
    spec = self._train_input(tf.distribute.InputContext()).element_spec
    has_labels = (key in spec and getattr(self.source, "num_classes", None)
                  is not None)
    if cfg.online_probe is None:
      wanted = has_labels and self.total_steps > 0
    elif cfg.online_probe and not has_labels:
      raise checks.ConfigError(
          f"TrainConfig.online_probe=True is invalid here: the training "
          f"batches of {task.name!r} on {self.source.name!r} carry no class "
          f"label {key!r}.")
    else:
      wanted = cfg.online_probe
    if not wanted:
      return None
    image_shape = tuple(spec["image"].shape[-3:])
    with self.strategy.scope():
      dims = probe_lib.feature_dims(task.backbone, image_shape,
                                    cfg.probe_endpoints)
      probe = probe_lib.OnlineProbe(
          self.source.num_classes, dims, patch_based=task.patch_based,
          label_key=key, learning_rate=cfg.probe_learning_rate)
    self.probe_history = probe_lib.ProbeHistory(
        self.workdir, probe.endpoints, cfg.eval_split, write=self.is_chief)
    return probe

  def _probe_due(self, end):
    every = self.config.probe_every or self.config.checkpoint_steps
    return self.step % every == 0 or self.step >= end

  def _evaluate_probe(self, writer):
    """The probe's top-1 on eval_split now: logged, summarised, recorded."""
    cfg = self.config
    if self.probe is None or not cfg.eval_split:
      return None
    dataset = data_lib.make_pipeline(
        self.source, cfg.eval_split,
        self.task.evaluation_specs(self.task.image_size)["eval"],
        batch_size=cfg.batch_size, training=False, seed=0,
        drop_remainder=False)
    bound = cfg.probe_eval_batches or cfg.eval_batches
    if bound:
      dataset = dataset.take(bound)
    top1 = self.probe.evaluate(self.task.backbone, dataset)
    with writer.as_default(step=self.step):
      for name, value in top1.items():
        tf.summary.scalar(f"probe_eval/{name}/top1", value)
    progress.info("online probe at step %d, top-1 on %s: %s", self.step,
                  cfg.eval_split, "  ".join(f"{k} {v:.4f}"
                                            for k, v in top1.items()))
    self.probe_history.add(self.step, top1)
    return top1

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  @property
  def finished(self):
    """Whether training has reached `total_steps` (after `restore`)."""
    return self.step >= self.total_steps

  def restore(self):
    """Restores the latest checkpoint once: its path, or None.

    Raises ValueError if it is a checkpoint of another model or task.
    `train` calls it; calling it first checks a workdir's compatibility
    before anything is written there.
    """
    if not self._restored:
      self._restored_path = self.checkpoint.restore_latest()
      self._restored = True
      if self._restored_path:
        progress.info("Resumed from %s at step %d.", self._restored_path,
                      self.step)
      if self.probe is not None:
        self.probe_history.resume(self.step)
    return self._restored_path

  def _train_input(self, input_context):
    cfg = self.config
    return data_lib.make_pipeline(
        self.source, cfg.train_split, self.task.specs["train"],
        batch_size=cfg.batch_size, training=True, seed=self.input_seed,
        input_context=input_context, batch_spec=self.task.specs["batch"] or
        None, shuffle_buffer=cfg.shuffle_buffer, cache=cfg.cache)

  def _make_input(self):
    """The training iterator, the function that takes one step's input from
    it, and whether the iterator can be checkpointed.

    On one worker (the default strategy, MirroredStrategy) the trainer reads a
    plain tf.data iterator of per-replica batches and hands consecutive
    batches to the replicas, as tf.distribute's iterator does: the replicas
    together see exactly the batch one device would, and a plain iterator can
    be checkpointed, where tf.distribute's iterators cannot. Several workers
    and TPUs read through `distribute_datasets_from_function`.
    """
    strategy = self.strategy
    replicas = strategy.num_replicas_in_sync
    if _is_tpu(strategy) or _local_replicas(strategy) != replicas:
      dataset = strategy.distribute_datasets_from_function(self._train_input)
      return iter(dataset), next, False
    iterator = iter(self._train_input(tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0,
        num_replicas_in_sync=replicas)))
    if replicas == 1:
      return iterator, next, True

    def next_batch(it):
      batches = [next(it) for _ in range(replicas)]
      return strategy.experimental_distribute_values_from_function(
          lambda context: batches[context.replica_id_in_sync_group])

    return iterator, next_batch, True

  def _compute_grads(self, batch):
    task = self.task
    replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      loss, metrics = task.step(batch, training=True)
      reg = task.regularization_losses
      total = loss + (tf.add_n(reg) if reg else 0.0)
      scaled = total / replicas
    grads = tape.gradient(scaled, task.trainable_variables)
    return grads, dict(metrics, loss=loss, total_loss=total)

  def _replica_step(self, batch):
    grads, logs = self._grads(batch)
    self.optimizer.apply_gradients(zip(grads, self.task.trainable_variables))
    # After the update, in the same step: BYOL's target follows the new
    # online weights, and its variables are checkpointed with the step.
    self.task.after_update(self.optimizer.iterations - 1, self.total_steps)
    if self.probe is not None:  # on the updated backbone, without gradient
      logs.update(self.probe.train_step(
          self.task.backbone, batch, self.strategy.num_replicas_in_sync))
    return logs

  def _loop(self, iterator, steps):
    sums = {k: tf.constant(0.0) for k in self._log_names}
    for _ in tf.range(steps):
      logs = self.strategy.run(self._replica_step,
                               args=(self._next_batch(iterator),))
      sums = {k: sums[k] + tf.cast(self.strategy.reduce(
          "MEAN", logs[k], axis=None), tf.float32) for k in sums}
    return {k: v / tf.cast(steps, tf.float32) for k, v in sums.items()}

  def train(self, max_steps=None):
    """Trains to `total_steps` (or `max_steps`), resuming if possible.

    Returns the last loop's mean logs (loss, accuracy, ...), as floats.
    """
    cfg = self.config
    self.restore()
    end = self.total_steps if max_steps is None else min(
        self.total_steps, max_steps)
    # One worker writes the summaries (they are the same on every worker).
    writer = (tf.summary.create_file_writer(os.path.join(self.workdir,
                                                         "train"))
              if self.is_chief else tf.summary.create_noop_writer())
    logs, start_step, start_time = {}, self.step, time.time()
    if self.probe is not None and self.step == 0 < end:
      self._evaluate_probe(writer)  # the curve starts at initialisation
    every = ((cfg.probe_every or cfg.checkpoint_steps) if self.probe
             else cfg.checkpoint_steps)
    while self.step < end:
      steps = min(cfg.steps_per_loop, end - self.step,
                  cfg.checkpoint_steps - self.step % cfg.checkpoint_steps,
                  every - self.step % every)
      tic = time.time()
      logs = {k: float(v) for k, v in self._train_loop(
          self._iterator, tf.constant(steps)).items()}
      seconds = time.time() - tic
      if not all(math.isfinite(v) for v in logs.values()):
        raise TrainingDivergedError(
            f"Non-finite training logs {logs} between steps "
            f"{self.step - steps} and {self.step}; the last good checkpoint "
            f"in {self.checkpoint.directory} is kept "
            f"({self.checkpoint.latest}).")
      logs["learning_rate"] = float(self.schedule(self.step))
      logs["images_per_sec"] = steps * cfg.batch_size / seconds
      self._report(writer, logs, start_step, start_time, end)
      # Before the checkpoint: a kill in between redoes this step's entry.
      if self.probe is not None and self._probe_due(end):
        self._evaluate_probe(writer)
      if self.step % cfg.checkpoint_steps == 0 or self.step >= end:
        self.checkpoint.save(self.step)
    writer.flush()
    return logs

  def _report(self, writer, logs, start_step, start_time, end):
    with writer.as_default(step=self.step):
      for key, value in logs.items():
        tf.summary.scalar(key, value)
    done = self.step - start_step
    rate = done / max(time.time() - start_time, 1e-9)
    eta = (end - self.step) / max(rate, 1e-9)
    # BYOL and Barlow Twins have no accuracy: their line leaves it out.
    accuracy = (f"  accuracy {logs['accuracy']:.3f}" if "accuracy" in logs
                else "")
    progress.info("step %d/%d  loss %.4f%s  lr %.4g  %.1f img/s  ETA %s",
                  self.step, end, logs["loss"], accuracy,
                  logs["learning_rate"], logs["images_per_sec"],
                  format_eta(eta))

  def evaluate(self, split=None, num_batches=None, batch_size=None):
    """Pretext loss and accuracy on `split` with the evaluation spec.

    `num_batches` (default `config.eval_batches`) bounds the batches read;
    None reads the whole split, its last batch possibly smaller.
    """
    cfg = self.config
    split = split or cfg.eval_split or cfg.train_split
    num_batches = num_batches or cfg.eval_batches
    checks.integer("num_batches", num_batches, minimum=1, optional=True)
    batch_size = checks.integer("batch_size", batch_size or cfg.batch_size,
                                minimum=1)
    ds = data_lib.make_pipeline(
        self.source, split, self.task.specs["eval"], batch_size=batch_size,
        training=False, seed=0, batch_spec=self.task.specs["batch"] or None,
        drop_remainder=False)
    if num_batches:
      ds = ds.take(num_batches)
    totals, count = {}, 0
    step = tf.function(lambda b: self.task.step(b, training=False))
    for batch in ds:
      loss, metrics = step(batch)
      n = int(batch["image"].shape[0])
      for k, v in dict(metrics, loss=loss).items():
        totals[k] = totals.get(k, 0.0) + float(v) * n
      count += n
    if not count:
      raise ValueError(f"Split {split!r} of {self.source.name!r} gave no "
                       "evaluation batch: it is empty.")
    logging.info("Pretext evaluation on %s:%s: %d images.", self.source.name,
                 split, count)
    return dict({k: v / count for k, v in totals.items()}, images=count)

  def recalibrate_batch_norm(self, batches):
    """Sets every batch norm's moving statistics (backbone and head) to their
    mean over `batches` training batches; weights untouched. Returns the
    number of batches used (`selfsup.train.recalibrate`)."""
    layers = recalibrate.batch_norm_layers(self.task.modules.values())
    step = lambda b: self.task.step(b, training=True)  # noqa: E731
    forward = lambda batch: self.strategy.run(step, args=(batch,))  # noqa: E731
    feed = (self._next_batch(self._iterator) for _ in range(batches))
    used = recalibrate.recalibrate(forward, feed, layers)
    progress.info("Batch-norm statistics of %d layers measured on %d "
                  "batches.", len(layers), used)
    return used

  def export(self):
    """Writes the backbone as .keras and SavedModel under workdir/export;
    returns that directory. Only the chief writes: other workers of a
    multi-worker run return None."""
    if not self.is_chief:
      return None
    return export_backbone(self.task, self.workdir, step=self.step)


def export_backbone(task, workdir, step):
  """Writes the export of `task.backbone` (without its pretext head) to
  `workdir/export`, with the task's evaluation specs; returns the folder."""
  return export.write_export(
      task.backbone, workdir, task=task.name, backbone_name=task.backbone_name,
      image_size=task.image_size, patch_based=task.patch_based, step=step,
      eval_specs=task.evaluation_specs(task.image_size),
      pretext_eval_specs=task.specs["eval"])


def format_eta(seconds):
  """`H:MM:SS` with hours past 24 (`time.strftime` wrapped a 25-hour ETA to
  01:00:00), and `Nd HH:MM:SS` from two days on."""
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(max(0, int(round(seconds))), 60)
  hours, minutes = divmod(minutes, 60)
  if hours < 48:
    return f"{hours}:{minutes:02d}:{secs:02d}"
  return f"{hours // 24}d {hours % 24:02d}:{minutes:02d}:{secs:02d}"


def _is_tpu(strategy):
  return isinstance(strategy, (tf.distribute.TPUStrategy,
                               tf.distribute.experimental.TPUStrategy))


def _is_chief(strategy):
  """Whether this process writes the run's files (always, on one worker)."""
  resolver = strategy.cluster_resolver
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type in (None, "chief"):
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


def _worker_scratch(strategy, workdir):
  """Where a non-chief worker writes the checkpoints nobody reads."""
  resolver = strategy.cluster_resolver
  return os.path.join(workdir, export.TMP, f"{checkpoints.WORKER_SCRATCH}"
                      f"{resolver.task_type}-{resolver.task_id}")


def _devices(strategy):
  """The devices of this worker's replicas."""
  try:
    return tuple(strategy.extended.worker_devices)
  except RuntimeError:  # the default strategy has no worker_devices
    gpus = tf.config.list_logical_devices("GPU")
    return (gpus[0].name,) if gpus else ("/CPU:0",)


def _local_replicas(strategy):
  """Replicas on this worker."""
  return len(_devices(strategy))


@contextlib.contextmanager
def _seeded(seed):
  """Seeds the weight initialisation (and dropout's seeds) with `seed`.

  Keras draws the seed of every initializer and seed generator made without
  one from Python's `random`, so seeding it while the task builds fixes the
  initial weights; its state is restored afterwards, leaving the caller's
  random streams as they were. None leaves the draw random.
  """
  if seed is None:
    yield
    return
  state = random.getstate()
  random.seed(seed)
  try:
    yield
  finally:
    random.setstate(state)


def _clean_temporary(workdir):
  """Removes what killed runs left: checkpoint saves (`ckpt-N_temp/`) and
  the chief's scratch folders (`tmp/`, e.g. an unfinished export) whose
  owner (named in the folder's name) no longer runs: a live process's
  scratch stays (the workdir lock keeps a second writer out; this keeps
  a library caller without the lock from deleting a running export)."""
  leftovers = tf.io.gfile.glob(os.path.join(workdir, "checkpoints", "*_temp"))
  for path in tf.io.gfile.glob(os.path.join(workdir, export.TMP, "*")):
    name = os.path.basename(path.rstrip("/"))
    if name.startswith(checkpoints.WORKER_SCRATCH):
      continue
    if lock.owned_by_live_process(name.split("-", 1)[-1]):
      logging.info("Keeping %s: the process that owns it still runs.", path)
      continue
    leftovers.append(path)
  for path in leftovers:
    logging.info("Removing %s, left by an interrupted run.", path)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)


def _input_seed(workdir, seed, write=True):
  """The input pipeline's seed: `seed`, or one drawn once per workdir.

  A seeded pipeline uses only stateless random ops, which is what lets the
  input position be checkpointed; keeping a drawn seed in the workdir makes
  a resumed run continue the same stream. Only the chief writes the file
  (other workers read disjoint shards, so their own draw is harmless).
  """
  path = os.path.join(workdir, "input_seed.json")
  if seed is None and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      return int(json.load(f)["seed"])
  if seed is None:
    seed = int.from_bytes(os.urandom(4), "little") >> 1
  if write:
    tf.io.gfile.makedirs(workdir)
    files.write_json(path, {"seed": int(seed)})
  return int(seed)
