"""bin/linear_eval: evaluate a pretrained representation.

    bin/linear_eval --workdir=DIR [--gin_file=gin/eval/lbfgs.gin]
        [--gin_param="linear_eval.layers=('block3', 'pre_logits')"]
        [--data_dir=DIR]

The workdir's own config.gin is read first, so the data source is the one it
was pretrained on unless a gin file or binding changes `build_source`.
"""
import os
import sys

from absl import app, flags, logging

from selfsup.cli import common

FLAGS = flags.FLAGS
common.define_gin_flags()
flags.DEFINE_string("workdir", None, "A pretraining workdir (with export/).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or the image folder.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required: the workdir bin/pretrain wrote.")
  logging.set_verbosity(logging.INFO)
  # Registers the configurables before any gin file is parsed.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.data.decode import DataNotFoundError  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation.features import FeatureCacheError  # pylint: disable=g-import-not-at-top
  pretrain_config = os.path.join(FLAGS.workdir, "config.gin")
  if not tf.io.gfile.exists(os.path.join(FLAGS.workdir, "export", "info.json")):
    sys.exit(f"error: no exported backbone in {FLAGS.workdir}/export "
             "(info.json missing): run bin/pretrain with this --workdir to "
             "the end first.")
  files = ([pretrain_config] if tf.io.gfile.exists(pretrain_config) else [])
  common.parse_gin(files + list(FLAGS.gin_file), FLAGS.gin_param)
  try:
    protocol.linear_eval(FLAGS.workdir, data_dir=FLAGS.data_dir)
  except DataNotFoundError as err:
    sys.exit(f"error: {err}")
  except (FeatureCacheError, FileNotFoundError, ValueError) as err:
    sys.exit(f"error: {err}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
