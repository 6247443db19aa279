"""What a workdir records of its data, and the data source built from it.

`build_source` is the gin-configurable source of both pretraining
(bin/pretrain) and evaluation (bin/linear_eval); `source_record` is the
checked, JSON-able description of a source that a workdir keeps in
`data.json`, so that evaluation finds the data pretraining used;
`make_source` builds a source from such a record; `recorded_bindings`
reads a workdir's `build_source` bindings from its config.gin as data.

A workdir may come from anyone, so evaluation reads it as data, never as
code: config.gin is parsed (gin's parser only tokenises) but never given to
gin, whose imports and configurable references (`@os.system()` under
dynamic registration) would run; only `build_source`'s literal arguments
are taken from it.
"""
import inspect
import json
import os

import gin
import tensorflow as tf
from absl import logging
from gin import config_parser

import selfsup.data
from selfsup.core import checks
from selfsup.core.errors import WorkdirError

DATA_RECORD = "data.json"
CONFIG = "config.gin"
# The build_source arguments a workdir's config.gin may give evaluation.
RECORDED_ARGS = ("name", "data_dir", "subset_seed", "source_kwargs")
# The names config.gin may give build_source (gin's short and module names,
# and the full path of dynamic registration).
SELECTORS = ("build_source", "selfsup.build_source",
             "selfsup.workdir.sources.build_source")
# Record entries that describe the data rather than say how to build it.
DESCRIPTIVE = ("contents",)
# Sources whose data location is a folder (`root`), not a TFDS data_dir.
FOLDER_SOURCES = ("places205", "image_folder")


def source_record(name, data_dir=None, fraction=None, subset_seed=0,
                  source_kwargs=None, binding="build_source"):
  """The checked arguments of a source as a JSON-able dict: what a workdir
  records of its data (`data.json`) and `make_source` builds from."""
  checks.string(f"{binding}.name", name, choices=selfsup.data.names())
  checks.string(f"{binding}.data_dir", data_dir, optional=True)
  if fraction is not None:
    checks.number(f"{binding}.fraction", fraction, minimum=0, maximum=1)
    if fraction <= 0:
      raise checks.ConfigError(f"{binding}.fraction={fraction!r} is invalid: "
                               "expected a number in (0, 1] or None.")
  checks.integer(f"{binding}.subset_seed", subset_seed, minimum=0)
  checks.mapping(f"{binding}.source_kwargs", source_kwargs)
  if data_dir and "://" not in data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return {"name": name, "data_dir": data_dir, "fraction": fraction,
          "subset_seed": int(subset_seed),
          "source_kwargs": dict(source_kwargs or {})}


def _takes(name, argument):
  """Whether the builder registered as `name` has a parameter `argument`."""
  try:
    builder, _ = selfsup.data.SOURCES.lookup(name)
    return argument in inspect.signature(builder).parameters
  except (TypeError, ValueError):
    return False


def make_source(record):
  """The source a `source_record` describes; `source.record` is the record.

  `data_dir` is the image folder (`root`) of folder sources and the TFDS
  data_dir of the others; sources that read no files ignore it.
  """
  kwargs = dict(record["source_kwargs"])
  data_dir, name = record["data_dir"], record["name"]
  if data_dir and name in FOLDER_SOURCES:
    kwargs.setdefault("root", data_dir)
  elif data_dir and _takes(name, "data_dir"):
    kwargs.setdefault("data_dir", data_dir)
  elif data_dir:
    logging.warning("Source %r reads no data_dir: %s is ignored.", name,
                    data_dir)
  source = selfsup.data.get(name, fraction=record["fraction"],
                            subset_seed=record["subset_seed"], **kwargs)
  source.record = dict(record)
  contents = getattr(source, "contents_sha256", None)
  if contents is not None:  # what the files hold (image folders)
    source.record["contents"] = contents()
  return source


@gin.configurable(module="selfsup")
def build_source(name=gin.REQUIRED, data_dir=None, fraction=None,
                 subset_seed=0, source_kwargs=None):
  """The data source; `data_dir` is normally the --data_dir flag."""
  return make_source(source_record(name, data_dir, fraction, subset_seed,
                                   source_kwargs))


def load_data_record(workdir):
  """The source record a workdir was pretrained on (its arguments only),
  or None."""
  path = os.path.join(workdir, DATA_RECORD)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      record = json.load(f)["source"]
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
    raise WorkdirError(f"{path} is not a data record (expected JSON "
                       f"{{\"source\": {{...}}}}): {err}") from err
  if record is not None and not isinstance(record, dict):
    raise WorkdirError(f"{path}: 'source' is {record!r}, expected a mapping.")
  return record and {k: v for k, v in record.items() if k not in DESCRIPTIVE}


class _LiteralsOnly(config_parser.ParserDelegate):
  """Turns every configurable reference and macro into a marker: nothing is
  looked up, imported or called."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _NotLiteral(f"@{scoped_configurable_name}"
                       f"{'()' if evaluate else ''}")

  def macro(self, macro_name):
    return _NotLiteral(f"%{macro_name}")


class _NotLiteral(str):
  """A value of config.gin that is not a literal (a reference, a macro)."""


def _literal(value):
  if isinstance(value, _NotLiteral):
    return False
  if isinstance(value, (list, tuple)):
    return all(_literal(v) for v in value)
  if isinstance(value, dict):
    return all(_literal(k) and _literal(v) for k, v in value.items())
  return value is None or isinstance(value, (str, int, float, bool))


def recorded_bindings(workdir):
  """The `build_source` arguments a workdir's config.gin binds ({} if it has
  none), read as data: statements other than unscoped bindings of
  `build_source` (any of `SELECTORS`) are skipped, and a value that is
  not a literal (a macro, a configurable reference) is skipped with a
  warning. Nothing of the file is executed."""
  path = os.path.join(workdir, CONFIG)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  found = {}
  try:
    for statement in config_parser.ConfigParser(text, _LiteralsOnly()):
      if (not isinstance(statement, config_parser.BindingStatement)
          or statement.scope or statement.selector not in SELECTORS
          or statement.arg_name not in RECORDED_ARGS):
        continue
      if not _literal(statement.value):
        logging.warning("%s, line %s: %s.%s is not a literal value; "
                        "ignored (a workdir's config.gin is read as data).",
                        path, statement.location.line_num, statement.selector,
                        statement.arg_name)
        continue
      found[statement.arg_name] = statement.value
  except SyntaxError as err:
    raise WorkdirError(f"{path} does not parse as gin (line {err.lineno}): "
                       f"{err.msg}") from err
  return found
