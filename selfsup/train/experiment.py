"""gin-configurable edges of a pretraining run (bin/pretrain).

The gin files bind `build_task`, `build_source` and `TrainConfig`; this
module turns them into a `Trainer` and runs it, writing the parsed config
before training and the operative config after. Paths come from arguments
(the command line's flags), never from gin.
"""
import json
import os

import gin
import tensorflow as tf
from absl import logging

import selfsup.data
import selfsup.tasks
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer

# Calls must go through the returned wrapper for the bindings to apply.
ConfiguredTrainConfig = gin.external_configurable(
    TrainConfig, name="TrainConfig", module="selfsup")


@gin.configurable(module="selfsup")
def build_task(name=gin.REQUIRED, backbone="resnet50_v2", width=4,
               image_size=224, patch_size=64, weight_decay=1e-4,
               backbone_kwargs=None, spec_kwargs=None, task_kwargs=None):
  """The pretext task. Whole-image tasks use `image_size`, patch tasks
  (Jigsaw, Relative Patch Location) `patch_size`; `task_kwargs` holds the
  task's own arguments (e.g. `{"copies": 8}` for Exemplar)."""
  if name not in selfsup.tasks.list():
    raise ValueError(f"build_task.name={name!r} is not a task: expected one "
                     f"of {selfsup.tasks.list()}.")
  patch = name in ("jigsaw", "relative_patch_location")
  return selfsup.tasks.get(
      name, backbone=backbone, width=width,
      image_size=patch_size if patch else image_size,
      weight_decay=weight_decay, backbone_kwargs=backbone_kwargs,
      spec_kwargs=spec_kwargs, **dict(task_kwargs or {}))


@gin.configurable(module="selfsup")
def build_source(name=gin.REQUIRED, data_dir=None, fraction=None,
                 subset_seed=0, source_kwargs=None):
  """The data source; `data_dir` is normally the --data_dir flag."""
  kwargs = dict(source_kwargs or {})
  if data_dir and name in ("imagenet2012", "places365_small"):
    kwargs["data_dir"] = data_dir
  elif data_dir and name in ("places205", "image_folder"):
    kwargs.setdefault("root", data_dir)
  return selfsup.data.get(name, fraction=fraction, subset_seed=subset_seed,
                          **kwargs)


def _write(path, text):
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    f.write(text)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def prepare(workdir, *, data_dir=None, tpu=None, strategy_kind="auto"):
  """Builds the source, task, strategy and trainer from gin.

  Everything that can fail on bad input (bindings, data, shapes) fails here,
  before the first training step. Writes the parsed config to the workdir.
  """
  source = build_source(data_dir=data_dir) if data_dir else build_source()
  task = build_task()
  strategy = make_strategy(strategy_kind, tpu=tpu)
  tf.io.gfile.makedirs(workdir)
  trainer = Trainer(task, source, workdir, ConfiguredTrainConfig(),
                    strategy=strategy)
  if trainer.is_chief:
    _write(os.path.join(workdir, "config.gin"), gin.config_str())
  return trainer


def run(trainer, pretext_eval_batches=10):
  """Trains, evaluates the pretext task before and after, exports.

  Writes `operative_config.gin` and `pretrain_results.json` to the workdir
  and returns the results dict.
  """
  task, workdir = trainer.task, trainer.workdir
  logging.info("%s on %s: %d steps of %d images (%d per epoch), %d replicas.",
               task.name, trainer.source.name, trainer.total_steps,
               trainer.config.batch_size, trainer.steps_per_epoch,
               trainer.strategy.num_replicas_in_sync)
  results = {"task": task.name, "backbone": task.backbone_name,
             "width": task.width}
  eval_split = trainer.config.eval_split
  if eval_split and trainer.step == 0:
    results["pretext_eval_start"] = trainer.evaluate(
        eval_split, num_batches=pretext_eval_batches)
  results["final_train_logs"] = trainer.train()
  if eval_split:
    results["pretext_eval_end"] = trainer.evaluate(
        eval_split, num_batches=pretext_eval_batches)
  results["export"] = trainer.export()
  results["step"] = trainer.step
  if trainer.is_chief:  # the other workers of a multi-worker run write nothing
    _write(os.path.join(workdir, "operative_config.gin"),
           gin.operative_config_str())
    _write(os.path.join(workdir, "pretrain_results.json"),
           json.dumps(results, indent=2))
  return results
