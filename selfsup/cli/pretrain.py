"""selfsup-pretrain (bin/pretrain in a checkout): self-supervised
pretraining configured by gin.

    selfsup-pretrain --gin_file=jigsaw --workdir=DIR [--data_dir=DIR]
        [--gin_file=arch/revnet50] [--gin_param="build_task.width=8"]
        [--tpu=NAME] [--strategy=auto|tpu|multi_worker|mirrored|default]

A task config (rotation, exemplar, jigsaw, relative_patch_location,
supervised) first, then settings (demo: the offline digits, a few minutes on
a laptop), architectures (arch/...) and widths (width/...). The workdir gets
checkpoints, TensorBoard summaries, the export (export/: the backbone for
selfsup-linear-eval and selfsup.Representation) and pretrain.log. Bad
settings and known failures end with one `error:` line and exit status 1
(`--verbosity=1` shows the traceback). Re-running a finished workdir changes
nothing. The workdir is locked while this runs (by the chief alone in a
multi-worker run): a second pretraining or an evaluation there is refused
with a line naming this one.
"""
import contextlib
import json
import os
import sys

from absl import flags

from selfsup.cli import common
from selfsup.core import commands

FLAGS = flags.FLAGS
common.define_gin_flags()
flags.DEFINE_string("workdir", None, "Where checkpoints, summaries, the "
                    "export and pretrain.log go (required).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or the image folder "
                    "(default: the source's own).")
flags.DEFINE_string("tpu", None, "TPU name or address ('local' on a TPU VM).")
flags.DEFINE_enum("strategy", "auto",
                  ["auto", "tpu", "multi_worker", "mirrored", "default"],
                  "tf.distribute strategy kind (auto: TPU if --tpu, else "
                  "mirrored over the GPUs, else one device).")

def demo_hint():
  """The hint after a missing data set, with the commands as this
  installation spells them (bin/... in a checkout, selfsup-... from a
  wheel)."""
  return ("To try selfsup without ImageNet, run the offline demo instead:\n"
          f"  {commands.name('selfsup-demo')}\n"
          "or one task on the digits demo data:\n"
          f"  {commands.name('selfsup-pretrain')} --gin_file=jigsaw "
          "--gin_file=demo --workdir=/tmp/selfsup_demo")


def main(argv):
  common.reject_arguments(argv)
  if not FLAGS.gin_file:
    sys.exit("error: give at least one --gin_file, e.g. "
             "--gin_file=rotation (--help lists the packaged configs).")
  show_traceback = common.verbose()
  common.set_logging()
  common.quiet_console()
  # Imported after flag checks (TensorFlow is slow to import) and before gin
  # parsing (it registers the configurables).
  from selfsup.core import lock  # pylint: disable=g-import-not-at-top
  from selfsup.data.decode import DataNotFoundError  # pylint: disable=g-import-not-at-top
  from selfsup.train import experiment  # pylint: disable=g-import-not-at-top

  def hint(err):
    return demo_hint() if isinstance(err, DataNotFoundError) else None

  with common.reporting(show_traceback, hint):
    common.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    # Every number, before any data is read or anything is written.
    experiment.check_config()
    source = experiment.build_source(
        **({"data_dir": FLAGS.data_dir} if FLAGS.data_dir else {}))
    if not FLAGS.workdir:
      sys.exit("error: --workdir is required (where checkpoints, summaries "
               "and the exported backbone go).")
    # Held from before the start-up cleanup to after the last record.
    # The other workers of a multi-worker run share the chief's workdir and
    # write nothing there but their own scratch: only the chief locks it.
    with (lock.WorkdirLock(FLAGS.workdir, "pretrain") if _chief()
          else contextlib.nullcontext()):
      trainer = experiment.prepare(FLAGS.workdir, source=source,
                                   tpu=FLAGS.tpu, strategy_kind=FLAGS.strategy)
      if experiment.finished_results(trainer) is None:  # else nothing changes
        log = common.log_to_workdir(FLAGS.workdir, "pretrain")
        if log:
          print(f"log: {log}", flush=True)
      results = experiment.run(trainer)
  if results.get("already_finished"):
    print(f"already finished: {FLAGS.workdir} holds {results.get('task')} "
          f"({results.get('backbone')}) trained for {trainer.step} steps and "
          "exported; nothing changed (raise TrainConfig.train_steps or "
          "epochs to train on).")
    return
  end = results.get("pretext_eval_end", {})
  start = results.get("pretext_eval_start", {})
  # The pretext accuracy where the task has one (BYOL, Barlow Twins: loss).
  metric = "accuracy" if "accuracy" in end else "loss"
  change = (f"pretext {metric} {start.get(metric, float('nan')):.3f} -> "
            f"{end.get(metric, float('nan')):.3f}" if metric in end else
            "no pretext evaluation")
  print(f"pretrained {results['task']} ({results['backbone']}, width "
        f"{results['width']}) for {results['step']} steps; {change}; "
        f"export: {results['export']}")


def _chief():
  """Whether this process is the chief of its cluster (TF_CONFIG), or alone
  (as `selfsup.train.trainer` decides which worker writes)."""
  try:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
  except (ValueError, AttributeError):
    return True
  kind, index = task.get("type"), task.get("index", 0)
  if not cluster or kind in (None, "chief"):
    return True
  return kind == "worker" and index == 0 and "chief" not in cluster


def run():
  common.run(main, __doc__, [__name__, common.__name__])


if __name__ == "__main__":
  run()
