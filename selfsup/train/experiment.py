"""gin-configurable edges of a pretraining run (bin/pretrain).

The gin files bind `build_task`, `build_source` and `TrainConfig`; this
module turns them into a `Trainer` and runs it. Paths come from arguments
(the command line's flags), never from gin.

Every number is checked before any work starts (`checks.ConfigError`). The
workdir's records change only when work succeeds: `config.gin` and
`data.json` (the data source's arguments, `data_dir` included, so that
bin/linear_eval finds the data on its own) are written before training only
in a fresh workdir, after a checked resume otherwise only at the end, with
`operative_config.gin` and `pretrain_results.json`.

A crash at any point is completed by the next run: the records are written
before the export, whose `info.json` (written last) marks the whole run
done, and a run counts as finished only when the export of its last step
checks out (`export.verify`) and every record is there and of that step;
otherwise the end is redone (nothing retrained). The pretext accuracy before
training is kept in `pretext_eval_start.json`, so a resumed run reports it.
A finished run is left as it is.
"""
import json
import os

import gin
import tensorflow as tf
from absl import logging

import selfsup.tasks
from selfsup.core import checks, files, gin_files
from selfsup.core.errors import WorkdirError
from selfsup.core.log import progress
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
PRETEXT_START = "pretext_eval_start.json"
# The records a finished run has besides its export and RESULTS.
RECORDS = ("config.gin", "operative_config.gin", sources.DATA_RECORD)


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
  _check_not_behind_export(trainer)
  if trainer.is_chief and trainer.step == 0:
    _write_records(trainer)  # a fresh start: record what it is
  return trainer


def _check_not_behind_export(trainer):
  """Refuses to train from scratch over an export of a later step: its
  checkpoints are gone (deleted, or in another folder), and a restart from
  step 0 would overwrite the export with a worse model."""
  try:
    info = export_lib.load_info(os.path.join(trainer.workdir, "export"))
  except (FileNotFoundError, WorkdirError):
    return
  step = info.get("step")
  if isinstance(step, int) and step > trainer.step:
    raise WorkdirError(
        f"{trainer.workdir}/export holds the model of step {step}, but the "
        f"checkpoints in {trainer.checkpoint.directory} reach only step "
        f"{trainer.step}: refusing to train over it from there. Restore the "
        "checkpoints, or use a new --workdir.")


def finished_results(trainer):
  """The results of a run already finished in its workdir, or None.

  Finished means trained to `total_steps`, with an export of that step whose
  files are the ones written (sizes and hashes in its info.json) and every
  record (`RECORDS`, `RESULTS` of that step) in place. Anything less is
  redone by `run`, which says why.
  """
  if not trainer.finished:
    return None
  workdir = trainer.workdir
  export_dir = os.path.join(workdir, "export")
  try:
    info = export_lib.load_info(export_dir)
    if info.get("step") != trainer.step:
      return None
    export_lib.verify(export_dir, info, hashes=True)
  except FileNotFoundError:
    return None
  except WorkdirError as err:
    logging.warning("%s Exporting again.", err)
    return None
  results = _read_json(os.path.join(workdir, RESULTS))
  missing = [n for n in RECORDS
             if not tf.io.gfile.exists(os.path.join(workdir, n))]
  if results is None or results.get("step") != trainer.step or missing:
    logging.warning("%s: the records of step %d are incomplete (%s): writing "
                    "them again.", workdir, trainer.step,
                    ", ".join(missing or [RESULTS]))
    return None
  return dict(results, already_finished=True)


def _read_json(path):
  """A JSON object from `path`, or None when it is missing or damaged (a
  record that the run rewrites)."""
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      value = json.load(f)
  except (ValueError, UnicodeDecodeError):
    logging.warning("%s is damaged: it will be written again.", path)
    return None
  return value if isinstance(value, dict) else None


def _pretext_start(trainer):
  """The pretext evaluation before training: measured at step 0 (and kept
  in the workdir), read back when the run resumes later."""
  path = os.path.join(trainer.workdir, PRETEXT_START)
  if trainer.step > 0:  # a workdir of an older version kept it only here
    return _read_json(path) or (_read_json(os.path.join(
        trainer.workdir, RESULTS)) or {}).get("pretext_eval_start")
  start = trainer.evaluate(trainer.config.eval_split)
  if trainer.is_chief:
    files.write_json(path, start, indent=2)
  return start


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
  _check_not_behind_export(trainer)
  done = finished_results(trainer)
  if done is not None:
    progress.info("%s is already finished: step %d of %d, exported. Nothing "
                 "to do (raise TrainConfig.train_steps or epochs to train "
                 "on).", workdir, trainer.step, trainer.total_steps)
    return done
  progress.info("%s on %s: %d steps of %d images (%d per epoch), %d replicas.",
               task.name, trainer.source.name, trainer.total_steps,
               cfg.batch_size, trainer.steps_per_epoch,
               trainer.strategy.num_replicas_in_sync)
  results = {"task": task.name, "backbone": task.backbone_name,
             "width": task.width,
             "data": getattr(trainer.source, "record", None),
             "seed": cfg.seed, "eval_split": cfg.eval_split,
             "eval_batches": cfg.eval_batches}
  start = _pretext_start(trainer) if cfg.eval_split else None
  if start is not None:
    results["pretext_eval_start"] = start
  results["final_train_logs"] = trainer.train()
  if trainer.probe is not None:
    results["online_probe"] = trainer.probe_history.record()
  if cfg.bn_recalibration_batches:
    results["bn_recalibration_batches"] = trainer.recalibrate_batch_norm(
        cfg.bn_recalibration_batches)
  if cfg.eval_split:
    results["pretext_eval_end"] = trainer.evaluate(cfg.eval_split)
  results["export"] = (os.path.join(workdir, "export") if trainer.is_chief
                       else None)
  results["step"] = trainer.step
  if trainer.is_chief:  # the other workers of a multi-worker run write nothing
    if not hasattr(trainer, "gin_config"):
      trainer.gin_config = gin.config_str()
    # Records first, the export's info.json last: a crash in between leaves
    # an incomplete export, so the next run redoes the end.
    _write_records(trainer, operative=True)
    files.write_json(os.path.join(workdir, RESULTS), results, indent=2)
    results["export"] = trainer.export()
  return results
