"""gin-configurable edges of a pretraining run (bin/pretrain).

The gin files bind `build_task`, `build_source` and `TrainConfig`; this
module turns them into a `Trainer` and runs it. Paths come from arguments
(the command line's flags), never from gin.

Every number is checked before any work starts (`checks.ConfigError`). The
workdir's records change only when work succeeds: `config.gin` and
`data.json` (the data source's arguments, `data_dir` included, so that
bin/linear_eval finds the data on its own) are written before training only
in a fresh workdir, after a checked resume otherwise only at the end, with
`operative_config.gin` and `pretrain_results.json`. A finished run is left
as it is.
"""
import json
import os

import gin
import tensorflow as tf
from absl import logging

import selfsup.tasks
from selfsup.core import checks, files, gin_files
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer
from selfsup.workdir import export as export_lib
from selfsup.workdir import sources
from selfsup.workdir.sources import build_source  # noqa: F401 (gin binding)

# The task configs import this module, then include "common/pretraining.gin".
gin_files.make_includable()
# Calls must go through the returned wrapper for the bindings to apply.
ConfiguredTrainConfig = gin.external_configurable(
    TrainConfig, name="TrainConfig", module="selfsup")

RESULTS = "pretrain_results.json"


@gin.configurable(module="selfsup")
def build_task(name=gin.REQUIRED, backbone="resnet50_v2", width=4,
               image_size=224, patch_size=64, weight_decay=1e-4,
               backbone_kwargs=None, spec_kwargs=None, task_kwargs=None):
  """The pretext task. Whole-image tasks use `image_size`, patch tasks
  (Jigsaw, Relative Patch Location) `patch_size`; `task_kwargs` holds the
  task's own arguments (e.g. `{"copies": 8}` for Exemplar)."""
  checks.string("build_task.name", name, choices=selfsup.tasks.TASKS.names())
  checks.string("build_task.backbone", backbone)
  checks.positive("build_task.width", width)
  checks.integer("build_task.image_size", image_size, minimum=1)
  checks.integer("build_task.patch_size", patch_size, minimum=1)
  checks.number("build_task.weight_decay", weight_decay, minimum=0)
  for field, value in (("backbone_kwargs", backbone_kwargs),
                       ("spec_kwargs", spec_kwargs),
                       ("task_kwargs", task_kwargs)):
    checks.mapping(f"build_task.{field}", value)
  patch_based = selfsup.tasks.TASKS.lookup(name)[0].patch_based
  return selfsup.tasks.get(
      name, backbone=backbone, width=width,
      image_size=patch_size if patch_based else image_size,
      weight_decay=weight_decay, backbone_kwargs=backbone_kwargs,
      spec_kwargs=spec_kwargs, **dict(task_kwargs or {}))


def _write_records(trainer, operative=False):
  workdir = trainer.workdir
  files.atomic_write(os.path.join(workdir, "config.gin"), trainer.gin_config)
  files.write_json(os.path.join(workdir, sources.DATA_RECORD),
                   {"source": getattr(trainer.source, "record", None)},
                   indent=2)
  if operative:
    files.atomic_write(os.path.join(workdir, "operative_config.gin"),
                       gin.operative_config_str())


def check_config():
  """Checks the TrainConfig and build_task bindings; cheap, no data read."""
  ConfiguredTrainConfig()
  build_task()


def prepare(workdir, *, source=None, data_dir=None, tpu=None,
            strategy_kind="auto"):
  """Builds the task, strategy and trainer (and the source, unless given)
  from gin.

  Everything that can fail on bad input (bindings, data, shapes, a
  checkpoint of another model in the workdir) fails here, before the first
  training step and before the workdir's records change.
  """
  config = ConfiguredTrainConfig()
  task = build_task()
  if source is None:
    source = build_source(data_dir=data_dir) if data_dir else build_source()
  strategy = make_strategy(strategy_kind, tpu=tpu)
  tf.io.gfile.makedirs(workdir)
  trainer = Trainer(task, source, workdir, config, strategy=strategy)
  trainer.gin_config = gin.config_str()
  trainer.restore()  # a checkpoint of another model fails here
  if trainer.is_chief and trainer.step == 0:
    _write_records(trainer)  # a fresh start: record what it is
  return trainer


def finished_results(trainer):
  """The results of a run already finished in its workdir, or None.

  Finished means trained to `total_steps` with a complete export of that
  step.
  """
  if not trainer.finished:
    return None
  try:
    info = export_lib.load_info(os.path.join(trainer.workdir, "export"))
  except FileNotFoundError:
    return None
  if info.get("step") != trainer.step:
    return None
  path = os.path.join(trainer.workdir, RESULTS)
  results = {}
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      results = json.load(f)
  return dict(results, already_finished=True)


def run(trainer):
  """Trains, evaluates the pretext task before and after, exports.

  The pretext evaluation reads `TrainConfig.eval_batches` batches of
  `eval_split` (all of it by default). Writes `config.gin`, `data.json`,
  `operative_config.gin` and `pretrain_results.json` to the workdir and
  returns the results dict. A finished run (see `finished_results`) changes
  nothing and returns its results with `already_finished=True`.
  """
  task, workdir, cfg = trainer.task, trainer.workdir, trainer.config
  trainer.restore()
  done = finished_results(trainer)
  if done is not None:
    logging.info("%s is already finished: step %d of %d, exported. Nothing "
                 "to do (raise TrainConfig.train_steps or epochs to train "
                 "on).", workdir, trainer.step, trainer.total_steps)
    return done
  logging.info("%s on %s: %d steps of %d images (%d per epoch), %d replicas.",
               task.name, trainer.source.name, trainer.total_steps,
               cfg.batch_size, trainer.steps_per_epoch,
               trainer.strategy.num_replicas_in_sync)
  results = {"task": task.name, "backbone": task.backbone_name,
             "width": task.width,
             "data": getattr(trainer.source, "record", None),
             "seed": cfg.seed, "eval_split": cfg.eval_split,
             "eval_batches": cfg.eval_batches}
  if cfg.eval_split and trainer.step == 0:
    results["pretext_eval_start"] = trainer.evaluate(cfg.eval_split)
  results["final_train_logs"] = trainer.train()
  if cfg.eval_split:
    results["pretext_eval_end"] = trainer.evaluate(cfg.eval_split)
  results["export"] = trainer.export()
  results["step"] = trainer.step
  if trainer.is_chief:  # the other workers of a multi-worker run write nothing
    if not hasattr(trainer, "gin_config"):
      trainer.gin_config = gin.config_str()
    _write_records(trainer, operative=True)
    files.write_json(os.path.join(workdir, RESULTS), results, indent=2)
  return results
