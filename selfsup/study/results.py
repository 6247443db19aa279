"""Reads a study's cells back: one flat row per evaluation result.

A row joins the cell's own settings (from cell.json, written by the runner:
task, kind, backbone, width, representation size, option, seed, source)
with one results.json entry read as a self-describing dict: protocol,
layer, source, eval_split, fraction and top1 are expected; any other key
(an SGD schedule, the preconditioner, a seed, an export fingerprint) is kept
as a setting of its own, so entries that differ in it stay apart.
"""
import json
import os
import re

from selfsup.study import runner
from selfsup.study.labels import IDENTITY

REQUIRED = ("protocol", "layer", "source", "eval_split", "fraction", "top1")
# Measurements and bookkeeping of an entry, never settings that tell two
# entries apart.
METRICS = frozenset((
    "top1", "top5", "objective", "iterations", "converged", "seconds",
    "export_seconds", "l2", "dim", "num_train", "num_eval", "features",
    "pretext", "eval_loss", "train_loss", "steps_per_epoch", "history",
    "task", "backbone", "width"))
# An entry may group its protocol's options in one dict under this key.
NESTED = "settings"
# Settings of the runner's step that results.json may not record itself.
STEP_KEYS = ("sgd_schedule",)
CELL_KEYS = ("task", "kind", "backbone", "width", "representation_size",
             "option", "option_kwargs", "seed", "source")


def load_paper(path=None):
  """The paper's numbers shipped with selfsup (paper_results.json)."""
  path = path or os.path.join(os.path.dirname(__file__), "paper_results.json")
  with open(path) as f:
    return json.load(f)


def load_cells(root):
  """[cell dict]: cell.json plus `pretext` (pretext accuracy at the end)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root={root!r} is not a folder: expected the "
                            f"root a bin/study run wrote.")
  cells = []
  for name in sorted(os.listdir(root)):
    cell_dir = os.path.join(root, name)
    record = runner.read_record(cell_dir)
    if record is None:
      continue
    record["dir"] = cell_dir
    record["settings"] = dict(record.get("settings") or {})
    settings = record["settings"]
    pretrain = _read_json(os.path.join(cell_dir, "pretrain_results.json"))
    end = (pretrain or {}).get("pretext_eval_end") or {}
    record["pretext"] = end.get("accuracy")
    record["online_probe"] = (pretrain or {}).get("online_probe")
    if not settings.get("source"):
      settings["source"] = _config_source(cell_dir)
    cells.append(record)
  if not cells:
    raise FileNotFoundError(f"no cell under {root!r} (no <cell>/cell.json): "
                            f"expected the root a bin/study run wrote.")
  return cells


# What a report reads of a cell (load_cells, rows): copied by `keep_cells`.
CELL_FILES = (runner.CELL_RECORD, "pretrain_results.json", "results.json")


def keep_cells(root, dest):
  """Copies what the report reads of each cell under `root` (cell.json,
  pretrain_results.json, results.json) to dest/<cell>/, so that
  `bin/report --root=dest` makes the same report without the checkpoints,
  exports and feature caches. Returns the number of cells copied."""
  from selfsup.core import files  # pylint: disable=import-outside-toplevel
  cells = load_cells(root)
  for cell in cells:
    os.makedirs(os.path.join(dest, cell["name"]), exist_ok=True)
    for name in CELL_FILES:
      value = _read_json(os.path.join(cell["dir"], name))
      if value is not None:
        files.write_json(os.path.join(dest, cell["name"], name), value)
  return len(cells)


def rows(cells):
  """One row per (cell, result entry); entries tagged by the runner with the
  step that made them first, then the rest of results.json."""
  out = []
  for cell in cells:
    seen = []
    for step in cell.get("steps", []):
      for entry in step.get("results") or []:
        seen.append(entry)
        out.append(_row(cell, entry, step.get("settings") or {}))
    for entry in _read_json(os.path.join(cell["dir"], "results.json")) or []:
      if isinstance(entry, dict) and entry not in seen:
        out.append(_row(cell, entry, {}))
  return [r for r in out if r is not None]


def _row(cell, entry, step_settings):
  missing = [k for k in REQUIRED if k not in entry]
  if missing:
    return None  # not an evaluation result this reader understands
  row = {k: cell["settings"].get(k) for k in CELL_KEYS}
  row["cell"] = cell["name"]
  row["pretrain_source"] = row.pop("source")
  row["pretext"] = cell.get("pretext")
  settings = {}
  for key, value in entry.items():
    if key == NESTED and isinstance(value, dict):
      # The protocol's own options ({"max_iter": 800, "precondition": ...}).
      settings.update((k, _hashable(v)) for k, v in value.items())
    elif key not in METRICS:
      settings[key] = _hashable(value)
  for key in STEP_KEYS:
    if step_settings.get(key) is not None:
      settings.setdefault(key, _hashable(step_settings[key]))
  row.update(settings)
  row["_settings"] = tuple(sorted(settings))
  row["top1"] = float(entry["top1"])
  row["top5"] = entry.get("top5")
  row["history"] = entry.get("history")
  row["skip_connections"] = (row.get("option_kwargs") or {}).get(
      "skip_connections", True)
  return row


def _hashable(value):
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, dict):
    return json.dumps(value, sort_keys=True, default=str)
  return value


def _read_json(path):
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError:
    return None


def _config_source(cell_dir):
  """build_source.name from the workdir's config.gin, for cells whose spec
  left the source to the gin files."""
  path = os.path.join(cell_dir, "config.gin")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    match = re.search(r"^build_source\.name = ['\"]([^'\"]+)['\"]", f.read(),
                      re.M)
  return match.group(1) if match else None


# Per-row values that differ between seeds of one setting: averaged (or
# dropped) when seeds are pooled, never keys of the setting.
_PER_SEED = ("seed", "cell", "top1", "top5", "history", "pretext")
_SEED_SUFFIX = re.compile(r"-s\d+$")


def pool_seeds(rows):
  """One row per setting with its seeds pooled.

  Rows that differ only in their seed (and so their cell's name) become one
  row: `top1` the mean over the seeds, `top1_std` the sample standard
  deviation (0 for one seed), `n_seeds`, `seeds` and `top1_values`;
  `pretext` the mean where every seed has one. `cell` loses its `-s<seed>`
  suffix. A study without seeds gives back one row per row (n_seeds 1).
  """
  groups = {}
  for r in rows:
    key = tuple(sorted((k, v) for k, v in r.items()
                       if k not in _PER_SEED and not k.startswith("_")
                       and not IDENTITY.search(k)
                       and not isinstance(v, (list, dict))))
    groups.setdefault(key, []).append(r)
  out = []
  for members in groups.values():
    values = [m["top1"] for m in members]
    n = len(values)
    mean = sum(values) / n
    var = (sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    pooled = dict(members[0])
    pretexts = [m.get("pretext") for m in members]
    pooled.update(
        top1=mean, top1_std=var ** 0.5, n_seeds=n,
        top1_values=tuple(values),
        seeds=tuple(m.get("seed") for m in members), seed=None,
        cell=_SEED_SUFFIX.sub("", members[0]["cell"]),
        pretext=(sum(pretexts) / n if None not in pretexts else None),
        history=members[0].get("history") if n == 1 else None)
    out.append(pooled)
  return out


def beyond_noise(a, b, z=2.0):
  """Whether pooled rows `a` and `b` differ by more than `z` standard errors
  of the difference of their means (Welch's; None with fewer than two seeds
  on either side, where the noise is unknown)."""
  if a.get("n_seeds", 1) < 2 or b.get("n_seeds", 1) < 2:
    return None
  se = (a["top1_std"] ** 2 / a["n_seeds"]
        + b["top1_std"] ** 2 / b["n_seeds"]) ** 0.5
  return abs(a["top1"] - b["top1"]) > z * se


def probe_curves(cells, endpoint="pre_logits"):
  """The online probe's curves: one per (task, backbone, width, option),
  its seeds pooled: {"task", "backbone", "width", "option", "steps",
  "top1" (mean per step), "std", "n_seeds", "eval_split"}. Only steps every
  seed evaluated are kept."""
  groups = {}
  for cell in cells:
    probe = cell.get("online_probe") or {}
    points = {e["step"]: e["top1"][endpoint]
              for e in probe.get("history") or []
              if endpoint in (e.get("top1") or {})}
    if not points:
      continue
    s = cell["settings"]
    key = (s.get("task"), s.get("backbone"), s.get("width"),
           s.get("option"), probe.get("eval_split"))
    groups.setdefault(key, []).append(points)
  curves = []
  for (task, backbone, width, option, split), runs in sorted(
      groups.items(), key=lambda kv: str(kv[0])):
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    means, stds = [], []
    for step in steps:
      values = [r[step] for r in runs]
      mean = sum(values) / len(values)
      var = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)
             if len(values) > 1 else 0.0)
      means.append(mean)
      stds.append(var ** 0.5)
    curves.append({"task": task, "backbone": backbone, "width": width,
                   "option": option, "eval_split": split, "steps": steps,
                   "top1": means, "std": stds, "n_seeds": len(runs)})
  return curves
