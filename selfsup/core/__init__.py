"""The bottom layer: what every other package uses and nothing else owns.

`Registry` (named builders: backbones, data sources, preprocessing ops,
tasks), `atomic_write` / `write_json` (a file is either whole or absent),
`ConfigError` and `SEED_KEY`. Imports nothing from selfsup.
"""
from selfsup.core.checks import ConfigError
from selfsup.core.files import atomic_write, write_json
from selfsup.core.registry import Registry

# The features key that carries a per-example random seed from the input
# pipeline (selfsup.data) to the preprocessing ops (selfsup.preprocess).
SEED_KEY = "_seed"

__all__ = ["ConfigError", "Registry", "SEED_KEY", "atomic_write",
           "write_json"]
