"""Training: strategies, the trainer, checkpoints and the pretraining run.

The export format lives in `selfsup.workdir.export` and the schedules in
`selfsup.core.schedules`; the names most used are re-exported here.
"""
from selfsup.core.schedules import WarmupCosineDecay, WarmupStepDecay
from selfsup.core.schedules import epochs_to_steps
from selfsup.train.optimizers import LARS
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer, TrainingDivergedError
from selfsup.train.trainer import export_backbone
from selfsup.workdir.export import load_backbone, load_info

__all__ = ["LARS", "TrainConfig", "Trainer", "TrainingDivergedError",
           "WarmupCosineDecay", "WarmupStepDecay", "epochs_to_steps",
           "export_backbone",
           "load_backbone", "load_info", "make_strategy"]
