"""Training: strategies, the trainer, checkpoints and the pretraining run.

The export format lives in `selfsup.workdir.export` and the schedules in
`selfsup.core.schedules`; their names are re-exported here for existing code.
"""
from selfsup.core.schedules import WarmupCosineDecay, WarmupStepDecay
from selfsup.core.schedules import epochs_to_steps
from selfsup.train.optimizers import LARS
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer, TrainingDivergedError
from selfsup.train.trainer import export_backbone
from selfsup.workdir.export import load_backbone, load_info

# Modules that moved below training; the old spellings still work, warning.
_MOVED = {"export": "selfsup.workdir.export",
          "schedules": "selfsup.core.schedules",
          "checks": "selfsup.core.checks",
          "precision": "selfsup.core.precision"}


def __getattr__(name):
  if name in _MOVED:
    import importlib  # pylint: disable=g-import-not-at-top
    import warnings  # pylint: disable=g-import-not-at-top
    warnings.warn(f"selfsup.train.{name} moved to {_MOVED[name]}: import it "
                  "from there.", DeprecationWarning, stacklevel=2)
    return importlib.import_module(_MOVED[name])
  raise AttributeError(f"module 'selfsup.train' has no attribute {name!r}")


__all__ = ["LARS", "TrainConfig", "Trainer", "TrainingDivergedError",
           "WarmupCosineDecay", "WarmupStepDecay", "epochs_to_steps",
           "export_backbone",
           "load_backbone", "load_info", "make_strategy"]
