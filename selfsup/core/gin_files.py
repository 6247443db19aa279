"""The gin configs that come with selfsup, and how a --gin_file is found.

Installed from a wheel, the configs are package data (`selfsup/gin/`); in a
checkout they are the repository's `gin/` (the source of truth, mapped into
the package by setup.py). Either way `--gin_file=jigsaw.gin`,
`--gin_file=jigsaw`, `--gin_file=arch/revnet50` and `--gin_file=gin/jigsaw.gin`
name a packaged config from any directory; an existing path is used as is.
Imports neither TensorFlow nor gin.
"""
import os
import textwrap

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUFFIX = ".gin"


def gin_dir():
  """The folder of the packaged configs, or None if there is none."""
  for folder in (os.path.join(_PACKAGE, "gin"),
                 os.path.join(os.path.dirname(_PACKAGE), "gin")):
    if os.path.isdir(folder):
      return folder
  return None


def list_files():
  """Every packaged config, as names relative to `gin_dir()`, sorted."""
  base = gin_dir()
  if base is None:
    return []
  names = []
  for root, _, files in os.walk(base):
    for name in files:
      if name.endswith(SUFFIX):
        names.append(os.path.relpath(os.path.join(root, name), base))
  return sorted(names, key=lambda n: (n.count(os.sep), n))


def resolve(path):
  """`path` itself if it exists (or is absolute or remote), else the packaged
  config it names, else None."""
  if os.path.exists(path) or os.path.isabs(path) or "://" in path:
    return path
  base = gin_dir()
  if base is None:
    return None
  name = path
  for prefix in ("gin/", "gin" + os.sep):
    if name.startswith(prefix):
      name = name[len(prefix):]
  for candidate in (name, name + SUFFIX):
    full = os.path.join(base, candidate)
    if os.path.isfile(full):
      return full
  return None


def describe():
  """Help text: the packaged configs, grouped by folder."""
  names = list_files()
  if not names:
    return "No packaged gin configs found (give --gin_file paths)."
  groups = {}
  for name in names:
    folder, _, leaf = name.rpartition(os.sep)
    groups.setdefault(folder, []).append(leaf[:-len(SUFFIX)])
  lines = textwrap.wrap(
      "Packaged gin configs (--gin_file=NAME, with or without .gin, from any "
      "directory; a path works too), in", width=78) + [f"{gin_dir()}:"]
  for folder, leaves in groups.items():
    label = f"{folder}/" if folder else "main"
    lines += textwrap.wrap(", ".join(leaves), width=78,
                           initial_indent=f"  {label + ':':<8} ",
                           subsequent_indent=" " * 11)
  return "\n".join(lines)


_INCLUDABLE = []


class _SearchMisses:
  """A logging filter dropping gin's "Path not found" records, one per place
  its include search looked in vain (a file found nowhere still fails)."""

  def filter(self, record):
    return not (record.module == "resource_reader"
                and record.msg == "Path not found: %s")


def make_includable():
  """Lets any gin file `include "common/pretraining.gin"` (a packaged config
  by its name) from any working directory: adds `gin_dir()` to gin's search
  path, once. The task configs import `selfsup.train.experiment`, which
  calls this, before their include line."""
  if _INCLUDABLE:
    return
  import logging  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  base = gin_dir()
  if base is not None:
    gin.add_config_file_search_path(base)
  logging.getLogger().addFilter(_SearchMisses())
  _INCLUDABLE.append(base)
