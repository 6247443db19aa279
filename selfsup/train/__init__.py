"""Training: strategies, the trainer, checkpoints and the pretraining run.

The export format lives in `selfsup.workdir.export` and the schedules in
`selfsup.core.schedules`; their names are re-exported here for existing code.
"""
from selfsup.core.schedules import WarmupStepDecay, epochs_to_steps
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer, TrainingDivergedError
from selfsup.train.trainer import export_backbone
from selfsup.workdir.export import load_backbone, load_info

__all__ = ["TrainConfig", "Trainer", "TrainingDivergedError",
           "WarmupStepDecay", "epochs_to_steps", "export_backbone",
           "load_backbone", "load_info", "make_strategy"]
