"""bin/pretrain: self-supervised pretraining configured by gin.

    bin/pretrain --gin_file=gin/jigsaw.gin --workdir=DIR [--data_dir=DIR]
        [--gin_file=gin/arch/revnet50.gin] [--gin_param="build_task.width=8"]
        [--tpu=NAME] [--strategy=auto|tpu|multi_worker|mirrored|default]
"""
import sys

import gin
from absl import app, flags, logging

from selfsup.cli import common

FLAGS = flags.FLAGS
common.define_gin_flags()
flags.DEFINE_string("workdir", None, "Checkpoints, summaries, export.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or the image folder.")
flags.DEFINE_string("tpu", None, "TPU name or address ('local' on a TPU VM).")
flags.DEFINE_string("strategy", "auto", "tf.distribute strategy kind.")

DEMO_HINT = ("To try selfsup without ImageNet, run the offline demo instead:\n"
             "  bin/demo\n"
             "or one task on the digits demo data:\n"
             "  bin/pretrain --gin_file=gin/jigsaw.gin --gin_file=gin/demo.gin "
             "--workdir=/tmp/selfsup_demo")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  if not FLAGS.gin_file:
    sys.exit("error: give at least one --gin_file, e.g. "
             "--gin_file=gin/rotation.gin (see gin/).")
  logging.set_verbosity(logging.INFO)
  # Imported after flag checks (TensorFlow is slow to import) and before gin
  # parsing (it registers the configurables).
  from selfsup.data.decode import DataNotFoundError  # pylint: disable=g-import-not-at-top
  from selfsup.train import experiment  # pylint: disable=g-import-not-at-top
  common.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  try:
    experiment.build_source(
        **({"data_dir": FLAGS.data_dir} if FLAGS.data_dir else {}))
  except DataNotFoundError as err:
    sys.exit(f"error: {err}\n\n{DEMO_HINT}")
  except (ValueError, TypeError) as err:
    sys.exit(f"error: bad data configuration: {err}")
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required (where checkpoints, summaries and "
             "the exported backbone go).")
  try:
    trainer = experiment.prepare(FLAGS.workdir, data_dir=FLAGS.data_dir,
                                 tpu=FLAGS.tpu, strategy_kind=FLAGS.strategy)
  except (ValueError, TypeError) as err:
    sys.exit(f"error: {err}")
  results = experiment.run(trainer)
  end = results.get("pretext_eval_end", {})
  start = results.get("pretext_eval_start", {})
  print(f"pretrained {results['task']} ({results['backbone']}, width "
        f"{results['width']}) for {results['step']} steps; pretext accuracy "
        f"{start.get('accuracy', float('nan')):.3f} -> "
        f"{end.get('accuracy', float('nan')):.3f}; export: "
        f"{results['export']}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
