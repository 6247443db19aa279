"""`python -m selfsup` (or `selfsup`): the version, the commands, the configs;
`selfsup presets`: the pretrained presets.

Imports no TensorFlow: it answers at once.
"""
import sys
import textwrap

from selfsup.version import __version__

# (installed command, checkout script, what it does)
COMMANDS = (
    ("selfsup-pretrain", "bin/pretrain",
     "self-supervised pretraining of a backbone, configured by gin files"),
    ("selfsup-linear-eval", "bin/linear_eval",
     "linear evaluation of a pretrained workdir's representation"),
    ("selfsup-import-tf1", "bin/import_tf1",
     "the authors' TF1 checkpoints / TF-Hub modules as a workdir export"),
    ("selfsup-study", "bin/study",
     "a grid of pretrain + evaluate cells (the paper's tables and figures)"),
    ("selfsup-report", "bin/report",
     "tables and figures of a study's cells"),
    ("selfsup-demo", "bin/demo",
     "the offline demo (pretraining against random init, every layer)"),
)


def usage():
  """The text `python -m selfsup` prints."""
  from selfsup.core import gin_files  # pylint: disable=g-import-not-at-top
  lines = [f"selfsup {__version__}: self-supervised visual representation "
           "learning (TensorFlow 2 / Keras 3).", "", "Commands (each has "
           "--help):"]
  width = max(len(c or s) for c, s, _ in COMMANDS)
  for command, script, what in COMMANDS:
    name = command or script
    also = f" ({script} in a checkout)" if command else ""
    lines += textwrap.wrap(what + also, width=78,
                           initial_indent=f"  {name:<{width}}  ",
                           subsequent_indent=" " * (width + 4))
  lines += ["", "As a Keras layer: selfsup.Representation.from_workdir(DIR) "
            "(docs/transfer.md).", "Pretrained: `selfsup presets` lists "
            "them; selfsup.Representation.from_preset(NAME).", "",
            gin_files.describe()]
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] in ("--version", "-V"):
    print(f"selfsup {__version__}")
    return 0
  if argv and argv[0] == "presets":
    from selfsup import presets  # pylint: disable=g-import-not-at-top
    print(presets.table())
    print("\nselfsup.Representation.from_preset(NAME) downloads one on first "
          "use (docs/transfer.md).")
    return 0
  if argv and argv[0] not in ("-h", "--help"):
    print(usage())
    print(f"\nerror: unknown argument {argv[0]!r}: run one of the commands "
          "above.", file=sys.stderr)
    return 2
  print(usage())
  return 0


if __name__ == "__main__":
  sys.exit(main())
