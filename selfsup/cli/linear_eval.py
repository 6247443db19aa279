"""bin/linear_eval: evaluate a pretrained representation.

    bin/linear_eval --workdir=DIR [--gin_file=gin/eval/lbfgs.gin]
        [--gin_param="linear_eval.layers=('block3', 'pre_logits')"]
        [--data_dir=DIR]

The workdir's own config.gin is read first, so the data source is the one it
was pretrained on unless a gin file or binding changes `build_source`; its
data location is the one the workdir recorded (data.json) unless --data_dir
gives another. Bad settings and known failures end with one `error:` line
and exit status 1 (`--verbosity=1` shows the traceback).
"""
import os
import sys

from absl import app, flags

from selfsup.cli import common

FLAGS = flags.FLAGS
common.define_gin_flags()
flags.DEFINE_string("workdir", None, "A pretraining workdir (with export/).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or the image folder "
                    "(default: the one the workdir was pretrained on).")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required: the workdir bin/pretrain wrote.")
  show_traceback = common.verbose()
  common.set_logging()
  # Registers the configurables before any gin file is parsed.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import protocol  # pylint: disable=g-import-not-at-top
  with common.reporting(show_traceback):
    pretrain_config = os.path.join(FLAGS.workdir, "config.gin")
    if not tf.io.gfile.exists(os.path.join(FLAGS.workdir, "export",
                                           "info.json")):
      sys.exit(f"error: no exported backbone in {FLAGS.workdir}/export "
               "(info.json missing): run bin/pretrain with this --workdir to "
               "the end first.")
    files = [pretrain_config] if tf.io.gfile.exists(pretrain_config) else []
    common.parse_gin(files + list(FLAGS.gin_file), FLAGS.gin_param)
    protocol.linear_eval(FLAGS.workdir, data_dir=FLAGS.data_dir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
