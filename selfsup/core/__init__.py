"""The bottom layer: what every other package uses and nothing else owns.

`Registry` (named builders: backbones, data sources, preprocessing ops,
tasks), `atomic_write` / `write_json` (a file is either whole or absent),
`checks` and `ConfigError`, `SEED_KEY`, the learning-rate schedules and the
dtype-policy context. Imports nothing from the rest of selfsup.
"""
from selfsup.core.keys import SEED_KEY
from selfsup.core.checks import ConfigError
from selfsup.core.files import atomic_write, write_json
from selfsup.core.registry import Registry

__all__ = ["ConfigError", "Registry", "SEED_KEY", "atomic_write",
           "write_json"]
