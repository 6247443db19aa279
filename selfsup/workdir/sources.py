"""What a workdir records of its data, and the data source built from it.

`build_source` is the gin-configurable source of both pretraining
(bin/pretrain) and evaluation (bin/linear_eval); `source_record` is the
checked, JSON-able description of a source that a workdir keeps in
`data.json`, so that evaluation finds the data pretraining used;
`make_source` builds a source from such a record.
"""
import inspect
import json
import os

import gin
import tensorflow as tf
from absl import logging

import selfsup.data
from selfsup.core import checks

DATA_RECORD = "data.json"
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
  return source


@gin.configurable(module="selfsup")
def build_source(name=gin.REQUIRED, data_dir=None, fraction=None,
                 subset_seed=0, source_kwargs=None):
  """The data source; `data_dir` is normally the --data_dir flag."""
  return make_source(source_record(name, data_dir, fraction, subset_seed,
                                   source_kwargs))


def load_data_record(workdir):
  """The source record a workdir was pretrained on, or None."""
  path = os.path.join(workdir, DATA_RECORD)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)["source"]
