"""selfsup-study and selfsup-report (bin/study, bin/report in a checkout):
selfsup.study.cli's commands with the `--help` of the other commands."""
from selfsup.cli import common
from selfsup.study import cli as study_cli

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


def run_study():
  study_cli._study_flags()  # pylint: disable=protected-access
  common.run(study_cli.study_main, STUDY_DOC, [study_cli.__name__],
             log_file=False)


def run_report():
  study_cli._report_flags()  # pylint: disable=protected-access
  common.run(study_cli.report_main, REPORT_DOC, [study_cli.__name__],
             gin_help=False, log_file=False)
