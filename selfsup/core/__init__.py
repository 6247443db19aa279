"""The bottom layer: what every other package uses and nothing else owns.

`Registry` (named builders: backbones, data sources, preprocessing ops,
tasks), `atomic_write` / `write_json` (a file is either whole or absent),
`checks` and `ConfigError`, `SEED_KEY`, the learning-rate schedules, the
dtype-policy context and where the packaged gin configs are. Imports
nothing from the rest of selfsup, and TensorFlow only when a module that
needs it is used (`selfsup.core.gin_files` stays light for `--help`).
"""
import importlib

from selfsup.core.checks import ConfigError
from selfsup.core.errors import SelfsupError
from selfsup.core.keys import SEED_KEY
from selfsup.core.registry import Registry

_LAZY = {"atomic_write": "selfsup.core.files",
         "write_json": "selfsup.core.files"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'selfsup.core' has no attribute {name!r}")


__all__ = ["ConfigError", "Registry", "SelfsupError", "SEED_KEY", "atomic_write",
           "write_json"]
