"""selfsup-study and selfsup-report (bin/study, bin/report in a checkout).

    selfsup-study --gin_file=study/demo --root=DIR [--dry_run]
        [--gin_param="study.widths=(0.25,)"] [--only=REGEX] [--data_dir=DIR]
    selfsup-report --root=DIR [--out=DIR/report]
"""
import os
import re
import sys

from absl import flags

from selfsup.cli import common

FLAGS = flags.FLAGS

STUDY_DOC = """selfsup-study (bin/study in a checkout): runs a study, a grid of
pretrain + evaluate cells, each in its own workdir under --root.

    selfsup-study --gin_file=study/demo --root=DIR [--dry_run]
        [--gin_param="study.widths=(0.25,)"] [--only=REGEX] [--data_dir=DIR]

Studies: study/demo (minutes, offline), study/paper_table1,
study/paper_layers, study/paper_width_repr. A finished cell is skipped when
run again; selfsup-report draws the tables and figures."""

REPORT_DOC = """selfsup-report (bin/report in a checkout): tables (beside the
paper's numbers) and figures of a study's cells.

    selfsup-report --root=DIR [--out=DIR/report] [--nofigures]"""


def _study_flags():
  flags.DEFINE_multi_string("gin_file", [], "study gin files, in order.")
  flags.DEFINE_multi_string("gin_param", [], "gin bindings, applied last.")
  flags.DEFINE_string("root", None, "Where the cells' workdirs go.")
  flags.DEFINE_boolean("dry_run", False, "Print the cells and their exact "
                       "commands; run nothing.")
  flags.DEFINE_string("only", None, "Run only the cells whose name matches "
                      "this regular expression (e.g. one cell per job).")
  flags.DEFINE_string("data_dir", None, "Passed to every command.")
  flags.DEFINE_boolean("skip_failed", False, "Do not retry cells that failed "
                       "in an earlier run.")


def study_main(argv):
  common.reject_arguments(argv)
  if not FLAGS.gin_file:
    sys.exit("error: give a study with --gin_file, e.g. "
             "--gin_file=gin/study/demo.gin (see gin/study/).")
  if not FLAGS.root:
    sys.exit("error: --root is required: the folder the cells' workdirs go "
             "in.")
  # pylint: disable=g-import-not-at-top
  from selfsup.study import runner
  from selfsup.study import spec as spec_lib
  common.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  try:
    spec = spec_lib.study()
    cells = spec_lib.expand(spec)
  except (ValueError, TypeError) as err:
    sys.exit(f"error: bad study: {str(err).splitlines()[0]}")
  if FLAGS.only:
    try:
      pattern = re.compile(FLAGS.only)
    except re.error as err:
      sys.exit(f"error: --only={FLAGS.only!r} is not a regular expression: "
               f"{err}")
    cells = [c for c in cells if pattern.search(c.name)]
    if not cells:
      sys.exit(f"error: --only={FLAGS.only!r} matches no cell of study "
               f"{spec.name!r}.")
  root = os.path.abspath(FLAGS.root)
  if FLAGS.dry_run:
    print(f"# study {spec.name}: {len(cells)} cells under {root}")
    runner.dry_run(spec, cells, root, FLAGS.data_dir)
    return
  statuses = runner.run_study(spec, cells, root, data_dir=FLAGS.data_dir,
                              skip_failed=FLAGS.skip_failed)
  failed = sorted(n for n, s in statuses.items() if s != "done")
  print(f"study {spec.name}: {len(statuses) - len(failed)} of "
        f"{len(statuses)} cells done"
        + (f"; failed: {', '.join(failed)} (see their cell.json and logs/)"
           if failed else "") + f". Report: bin/report --root={root}")
  if failed:
    sys.exit(1)


def _report_flags():
  flags.DEFINE_string("root", None, "A study's root (what bin/study wrote).")
  flags.DEFINE_string("out", None, "Where report.md and the figures go "
                      "(default ROOT/report).")
  flags.DEFINE_boolean("figures", True, "Draw the PNG figures (needs "
                       "matplotlib: pip install selfsup[study]).")
  flags.DEFINE_string("keep_cells", None, "Also copy what the report reads "
                      "of each cell (cell.json, pretrain_results.json, "
                      "results.json) to this folder: bin/report "
                      "--root=KEEP_CELLS makes the same report.")


def report_main(argv):
  common.reject_arguments(argv)
  if not FLAGS.root:
    sys.exit("error: --root is required: the folder bin/study wrote.")
  from selfsup.study import report  # pylint: disable=g-import-not-at-top
  out = FLAGS.out or os.path.join(FLAGS.root, "report")
  try:
    written = report.write_report(FLAGS.root, out, figures=FLAGS.figures)
    if FLAGS.keep_cells:
      from selfsup.study import results  # pylint: disable=g-import-not-at-top
      kept = results.keep_cells(FLAGS.root, FLAGS.keep_cells)
  except (ValueError, FileNotFoundError, ImportError) as err:
    sys.exit(f"error: {err}")
  print(f"report written: {', '.join(written)}")
  if FLAGS.keep_cells:
    print(f"{kept} cells' results kept in {FLAGS.keep_cells}")


def run_study():
  _study_flags()
  common.run(study_main, STUDY_DOC, [__name__], log_file=False)


def run_report():
  _report_flags()
  common.run(report_main, REPORT_DOC, [__name__], gin_help=False,
             log_file=False)
