"""selfsup-import-tf1 (bin/import_tf1 in a checkout): the authors' TF1
checkpoints as a selfsup workdir.

    selfsup-import-tf1 --checkpoint=PATH [--backbone=auto|NAME] [--width=K] \\
        [--task=rotation|exemplar|jigsaw|relative_patch_location] \\
        --workdir=DIR [--source=imagenet2012] [--data_dir=DIR]

--backbone=auto (the default) and no --width read the architecture and the
width off the checkpoint's variables (`selfsup.models.load_tf1(path,
"auto")`); a (-) model (resnet50_v2_minus, revnet50_minus) has its parent's
variables and needs its name.

PATH is a TF1 checkpoint prefix, a directory with a `checkpoint` file, or a
TF-Hub module directory (the authors' released modules). The workdir gets an
export (backbone.keras, SavedModel, info.json with the task's evaluation
specs) and a config.gin naming the evaluation data, so that

    selfsup-linear-eval --workdir=DIR

evaluates the authors' model with selfsup's protocol, and
selfsup.Representation.from_workdir(DIR) makes it a Keras layer. Patch tasks (Jigsaw,
Relative Patch Location) use the patch variant of ResNets and RevNets, as the
authors trained them. Bad input ends with one `error:` line.
"""
import os
import sys

from absl import flags

from selfsup.cli import common

FLAGS = flags.FLAGS
# The pretext tasks of the authors' released models (selfsup.tasks.TASKS
# names them; this flag list is static for --help).
TASKS = ("rotation", "exemplar", "jigsaw", "relative_patch_location")
flags.DEFINE_string("checkpoint", None, "TF1 checkpoint prefix, a folder with "
                    "a 'checkpoint' file, or a TF-Hub module folder.")
flags.DEFINE_enum("backbone", "auto",
                  ["auto", "resnet18_v1", "resnet18_v2", "resnet50_v1", "resnet50_v2",
                   "resnet50_v2_minus", "revnet50", "revnet50_minus",
                   "vgg19_bn"],
                  "selfsup backbone name (selfsup.models.BACKBONES), or "
                  "auto: read off the checkpoint's variables.")
flags.DEFINE_float("width", None, "widening factor k of the checkpoint "
                   "(default: read off its root convolution).")
flags.DEFINE_enum("task", "rotation", TASKS, "the pretext task it was "
                  "trained on (picks the evaluation preprocessing).")
flags.DEFINE_string("workdir", None, "where the export and config.gin go.")
flags.DEFINE_integer("image_size", None, "side of the images the model saw: "
                     "default 224, or 64 (the patch side) for patch tasks.")
flags.DEFINE_string("source", "imagenet2012", "evaluation data source "
                    "recorded in config.gin (build_source.name).")
flags.DEFINE_string("data_dir", None, "data location recorded for it.")


def _width(value):
  return int(value) if float(value).is_integer() else value


def main(argv):
  common.reject_arguments(argv)
  missing = [f"--{n}" for n in ("checkpoint", "workdir")
             if getattr(FLAGS, n) is None]
  if missing:
    sys.exit(f"error: {', '.join(missing)} required (see --help).")
  show_traceback = common.verbose()
  common.set_logging()
  common.quiet_console()
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import selfsup.models
  import selfsup.tasks
  from selfsup.core import checks, files, lock
  from selfsup.core.errors import WorkdirError
  from selfsup.workdir import export
  # pylint: enable=g-import-not-at-top
  with common.reporting(show_traceback), lock.WorkdirLock(FLAGS.workdir,
                                                         "import_tf1"):
    workdir = FLAGS.workdir
    if tf.io.gfile.exists(os.path.join(workdir, "export", export.INFO)):
      raise WorkdirError(f"{workdir} already holds an export (export/"
                         f"{export.INFO}): give a new --workdir.")
    task = selfsup.tasks.TASKS.lookup(FLAGS.task)[0]
    size = FLAGS.image_size or (64 if task.patch_based else 224)
    if size < 8:
      raise checks.ConfigError(
          f"--image_size={size} is not valid: expected >= 8.")
    width = None if FLAGS.width is None else _width(FLAGS.width)
    name = FLAGS.backbone
    if name == "auto":  # VGG's input size comes from its fc6 kernel
      backbone, name, width = selfsup.models.tf1.load_inferred(
          FLAGS.checkpoint, width, patch=task.patch_based)
      fixed = backbone.get_config()["input_shape"]
      if fixed[0] is not None and not FLAGS.image_size:
        size = fixed[0]
    else:
      builder, _ = selfsup.models.BACKBONES.lookup(name)
      kwargs = ({"input_shape": (size, size, 3)}
                if getattr(builder, "fixed_input_size", False) else {})
      backbone = selfsup.models.load_tf1(
          FLAGS.checkpoint, name, width=width, patch=task.patch_based,
          **kwargs)
      width = backbone.get_config()["width"]
    tf.io.gfile.makedirs(workdir)
    common.log_to_workdir(workdir, "import_tf1")
    out = export.write_export(
        backbone, workdir, task=FLAGS.task, backbone_name=name,
        image_size=size, patch_based=task.patch_based, step=0,
        eval_specs=task.evaluation_specs(size),
        extra={"imported_from": os.path.abspath(FLAGS.checkpoint),
               "imported_format": "tf1"})
    lines = ["# Written by bin/import_tf1: the data bin/linear_eval "
             "evaluates on.", "import selfsup.workdir.sources", "",
             f"build_source.name = {FLAGS.source!r}"]
    if FLAGS.data_dir:
      lines.append(f"build_source.data_dir = {FLAGS.data_dir!r}")
    config = os.path.join(workdir, "config.gin")
    files.atomic_write(config, "\n".join(lines) + "\n")
  print(f"imported {name} (width {width:g}, {FLAGS.task}) "
        f"from {FLAGS.checkpoint}: {out}")


def run():
  common.run(main, __doc__, [__name__, common.__name__], gin_help=False)


if __name__ == "__main__":
  run()
