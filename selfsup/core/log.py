"""The named logger for progress lines.

Commands show a user what a run is doing through one logger,
`selfsup.progress`: the console keeps its INFO lines (and every warning and
error) while everything else goes to the command's log file. What reaches the
console depends on the logger a line is sent to, never on which file or
function sent it, so renaming code cannot silently hide progress.
"""
import logging

PROGRESS = "selfsup.progress"

progress = logging.getLogger(PROGRESS)
# INFO whatever the root logger's level: progress is what a run is for.
progress.setLevel(logging.INFO)
