"""How a study's rows are named, grouped and ordered in tables and figures.

The one place that says in which order tasks and layers are shown and how a
cell's settings read as a sentence; report.py (tables) and figures.py (plots)
both use it, and neither imports the other at module level.
"""
import re

from selfsup.study.spec import BASELINES


# The paper's four pretext tasks, then the methods that came after it, then
# the baselines. tests/test_study.py checks every registered task is here.
PRETEXT_TASKS = ("rotation", "exemplar", "relative_patch_location", "jigsaw")
METHODS = ("simclr", "byol", "barlow_twins")
TASK_ORDER = PRETEXT_TASKS + METHODS + BASELINES

# Keys that identify one cell's artefacts rather than an evaluation setting:
# they must not split a table into one table per cell.
IDENTITY = re.compile(r"^(key|time|date|export|features.*|source_args)$|"
                       r"fingerprint|sha256|hash|checksum|workdir|path|_dir$")
LAYER_ORDER = ("after_root", "block1", "block2", "block3", "block4",
               "pre_logits", "logits")


def context_keys(row):
  """The settings of `row` that define which table it belongs in."""
  keys = [k for k in row["_settings"]
          if k != "layer" and not IDENTITY.search(k)]
  return ("pretrain_source",) + tuple(keys)


def context(row, exclude=()):
  return tuple((k, row.get(k)) for k in context_keys(row) if k not in exclude)


def describe(ctx):
  """A context as a sentence: the data, split and protocol."""
  c = dict(ctx)
  fraction = c.pop("fraction", None)
  text = (f"pretrained on {c.pop('pretrain_source', None) or '?'}; evaluated "
          f"on {c.pop('source', '?')} split {c.pop('eval_split', '?')} "
          f"(trained on {c.pop('train_split', 'train')}, "
          f"{'all' if not fraction else f'{100 * fraction:g}%'} of it); "
          f"protocol {c.pop('protocol', '?')}")
  extra = ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=str)
                    if v is not None)
  return text + (f" ({extra})" if extra else "")


def arch_label(row):
  parts = [row["backbone"]]
  if row.get("option"):
    parts.append(row["option"])
  if row.get("representation_size"):
    parts.append(f"r{row['representation_size']}")
  if row.get("seed") is not None:
    parts.append(f"seed {row['seed']}")
  return " ".join(parts)


def order(values, first=()):
  """Distinct `values`, those in `first` first (in its order), then sorted."""
  values = list(dict.fromkeys(values))
  return sorted(values, key=lambda v: (first.index(v) if v in first else
                                       len(first), str(v)))
