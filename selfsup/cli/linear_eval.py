"""selfsup-linear-eval (bin/linear_eval in a checkout): evaluate a
pretrained representation.

    selfsup-linear-eval --workdir=DIR [--gin_file=eval/lbfgs]
        [--gin_param="linear_eval.layers=('block3', 'pre_logits')"]
        [--data_dir=DIR]

Evaluation configs: eval/lbfgs (the paper's L-BFGS logistic regression),
eval/layerwise (block1..block4 and pre_logits, from one pass of the
backbone), eval/sgd_linear, eval/mlp, eval/low_data_5|10, eval/official_val,
eval/streaming (L-BFGS on features larger than memory: a float16 raw cache
streamed from disk within linear_eval.memory_budget_mb). Results go to DIR/results.json and
the console; the full log to DIR/linear_eval.log.

The workdir's own `build_source` bindings come first, so the data source is
the one it was pretrained on unless a gin file or binding changes
`build_source`; its data location is the one the workdir recorded
(data.json) unless --data_dir gives another. The workdir is read as data:
only the literal `build_source` arguments of its config.gin are taken,
nothing of it is executed (docs/evaluation.md says what is safe to load
from a workdir of unknown origin). The workdir is locked for evaluation
while this runs: evaluations may run together, a pretraining may not. Bad
settings and known failures end with one `error:` line and exit status 1
(`--verbosity=1` shows the traceback).
"""
import os
import sys

from absl import flags

from selfsup.cli import common

FLAGS = flags.FLAGS
common.define_gin_flags()
flags.DEFINE_string("workdir", None, "A pretraining workdir (with export/; "
                    "required).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or the image folder "
                    "(default: the one the workdir was pretrained on).")


def main(argv):
  common.reject_arguments(argv)
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required: the workdir bin/pretrain wrote.")
  show_traceback = common.verbose()
  common.set_logging()
  common.quiet_console()
  # Registers the configurables before any gin file is parsed.
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.core import lock  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from selfsup.workdir import sources  # pylint: disable=g-import-not-at-top
  with common.reporting(show_traceback):
    if not tf.io.gfile.exists(os.path.join(FLAGS.workdir, "export",
                                           "info.json")):
      sys.exit(f"error: no exported backbone in {FLAGS.workdir}/export "
               "(info.json missing): run bin/pretrain with this --workdir to "
               "the end first.")
    with lock.WorkdirLock(FLAGS.workdir, "linear_eval", shared=True):
      for arg, value in sources.recorded_bindings(FLAGS.workdir).items():
        gin.bind_parameter(f"build_source.{arg}", value)
      common.parse_gin(list(FLAGS.gin_file), FLAGS.gin_param)
      common.log_to_workdir(FLAGS.workdir, "linear_eval")
      protocol.linear_eval(FLAGS.workdir, data_dir=FLAGS.data_dir)


def run():
  common.run(main, __doc__, [__name__, common.__name__])


if __name__ == "__main__":
  run()
