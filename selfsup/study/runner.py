"""Runs a study's cells one after another, as `bin/pretrain` and
`bin/linear_eval` subprocesses, recording each step in ROOT/<cell>/cell.json.

A step is done when its record says so and its command is unchanged: a killed
study resumes at the first step not done (bin/pretrain itself resumes from
the last checkpoint), a finished one re-runs in seconds, and a changed spec
re-runs what it changed (a re-pretrained cell is re-evaluated). A failed step
records its error and the study goes on with the next cell.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from selfsup.core import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CELL_RECORD = "cell.json"
STUDY_RECORD = "study.json"
# What a step leaves in the workdir: a step recorded done whose product was
# deleted runs again.
_PRODUCT = {"pretrain": os.path.join("export", "info.json"),
            "eval": "results.json"}


def pretrain_command(cell, workdir, data_dir=None, flags=()):
  """The exact argv of the cell's pretraining."""
  return (_entry_point("pretrain")
          + [f"--gin_file={f}" for f in cell.pretrain["gin_files"]]
          + [f"--gin_param={p}" for p in cell.pretrain["params"]]
          + [f"--workdir={workdir}"]
          + ([f"--data_dir={data_dir}"] if data_dir else []) + list(flags))


def eval_command(step, workdir, data_dir=None, flags=()):
  """The exact argv of one evaluation of the cell."""
  return (_entry_point("linear_eval") + [f"--workdir={workdir}"]
          + [f"--gin_file={f}" for f in step["gin_files"]]
          + [f"--gin_param={p}" for p in step["params"]]
          + ([f"--data_dir={data_dir}"] if data_dir else []) + list(flags))


def _entry_point(name):
  """bin/<name> of this checkout, or its module when selfsup is installed."""
  script = os.path.join(REPO, "bin", name)
  if os.path.exists(script):
    return [sys.executable, script]
  return [sys.executable, "-m", f"selfsup.cli.{name}"]


def plan(spec, cells, root, data_dir=None):
  """[(cell, [step dicts with label, kind, command, settings])]."""
  out = []
  for cell in cells:
    workdir = os.path.join(root, cell.name)
    steps = [{"label": "pretrain", "kind": "pretrain", "settings": {},
              "command": pretrain_command(cell, workdir, data_dir,
                                          spec.pretrain_flags)}]
    for ev in cell.evals:
      steps.append({"label": ev["label"], "kind": "eval",
                    "settings": ev["settings"],
                    "command": eval_command(ev, workdir, data_dir,
                                            spec.eval_flags)})
    out.append((cell, steps))
  return out


def dry_run(spec, cells, root, data_dir=None, out=sys.stdout):
  """Prints each cell and its commands, one per line, shell-quoted."""
  for cell, steps in plan(spec, cells, root, data_dir):
    print(f"# cell {cell.name}", file=out)
    for step in steps:
      print(shlex.join(step["command"]), file=out)


def read_record(cell_dir):
  path = os.path.join(cell_dir, CELL_RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path, value):
  files.write_json(path, value, indent=2, default=str)


def run_study(spec, cells, root, *, data_dir=None, skip_failed=False,
              log=print):
  """Runs every cell not done; returns {cell name: status}."""
  os.makedirs(root, exist_ok=True)
  _write_json(os.path.join(root, STUDY_RECORD),
              {"name": spec.name, "cells": [c.name for c in cells]})
  statuses = {}
  planned = plan(spec, cells, root, data_dir)
  for i, (cell, steps) in enumerate(planned):
    log(f"[{i + 1}/{len(planned)}] {cell.name}")
    statuses[cell.name] = run_cell(cell, steps, os.path.join(root, cell.name),
                                   skip_failed=skip_failed, log=log)
  return statuses


def run_cell(cell, steps, cell_dir, *, skip_failed=False, log=print):
  """Runs the steps of one cell not yet done; returns its status."""
  os.makedirs(os.path.join(cell_dir, "logs"), exist_ok=True)
  old = read_record(cell_dir) or {}
  if skip_failed and old.get("status") == "failed":
    log(f"  failed before, skipped: {old.get('error')}")
    return "failed"
  old_steps = {s["label"]: s for s in old.get("steps", [])}
  record = {"name": cell.name, "settings": cell.settings, "status": "running",
            "error": None, "steps": []}
  for step in steps:
    prev = old_steps.get(step["label"], {})
    entry = dict(step, status="pending", seconds=prev.get("seconds"),
                 error=None, results=prev.get("results", []),
                 runs=prev.get("runs", 0))
    if (prev.get("status") == "done" and prev.get("command") == step["command"]
        and os.path.exists(os.path.join(cell_dir, _PRODUCT[step["kind"]]))):
      entry["status"] = "done"
    record["steps"].append(entry)
  path = os.path.join(cell_dir, CELL_RECORD)
  rerun_all = record["steps"][0]["status"] != "done"
  for entry in record["steps"]:
    if entry["status"] == "done" and not rerun_all:
      log(f"  {entry['label']}: done, skipped")
      continue
    _write_json(path, record)
    before = _results(cell_dir)
    log_path = os.path.join(cell_dir, "logs", entry["label"] + ".log")
    log(f"  {entry['label']}: running ({log_path})")
    code, seconds, error = _execute(entry["command"], log_path)
    entry.update(seconds=seconds, runs=entry["runs"] + 1)
    if code:
      entry.update(status="failed", error=error)
      record.update(status="failed", error=f"{entry['label']}: {error}")
      log(f"  {entry['label']}: FAILED after {seconds:.0f}s: {error}")
      break
    entry["status"] = "done"
    if entry["kind"] == "eval":
      # results.json may merge or replace entries; keep what this step wrote,
      # tagged with the step's settings (an SGD schedule, the evaluation).
      entry["results"] = [r for r in _results(cell_dir) if r not in before]
    log(f"  {entry['label']}: done in {seconds:.0f}s")
  else:
    record["status"] = "done"
  _write_json(path, record)
  return record["status"]


def _results(cell_dir):
  path = os.path.join(cell_dir, "results.json")
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      entries = json.load(f)
  except ValueError:
    return []
  return entries if isinstance(entries, list) else []


def _execute(command, log_path):
  """Runs `command` with its output in `log_path`; (code, seconds, error).

  The child is stopped with the study (Ctrl-C, SIGTERM), so a killed study
  leaves nothing running.
  """
  tic = time.time()
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with open(log_path, "w") as out:
    out.write("$ " + shlex.join(command) + "\n")
    out.flush()
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                            env=env)
    previous = _on_sigterm(_raise_interrupt)
    try:
      code = proc.wait()
    except KeyboardInterrupt:
      proc.terminate()
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
      raise
    finally:
      if previous is not None:
        _on_sigterm(previous)
  seconds = time.time() - tic
  return code, seconds, (_error_line(log_path, code) if code else None)


def _on_sigterm(handler):
  """Installs a SIGTERM handler where Python allows (the main thread)."""
  try:
    return signal.signal(signal.SIGTERM, handler)
  except ValueError:
    return None


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def _error_line(log_path, code):
  """The command's `error:` line, else the last line of its output."""
  with open(log_path, errors="replace") as f:
    lines = [l.rstrip() for l in f if l.strip()]
  errors = [l for l in lines if l.startswith("error:")]
  if errors:
    return errors[-1]
  tail = [l for l in lines[1:] if not l.startswith(("I0", "I1", "W0", "W1"))]
  return (tail[-1] if tail else f"exit code {code}") + f" (exit code {code})"
