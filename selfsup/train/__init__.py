"""Training: strategies, the trainer, schedules, checkpoints and export."""
from selfsup.train.export import export_backbone, load_backbone, load_info
from selfsup.train.schedules import WarmupStepDecay, epochs_to_steps
from selfsup.train.strategy import make_strategy
from selfsup.train.trainer import TrainConfig, Trainer, TrainingDivergedError

__all__ = ["TrainConfig", "Trainer", "TrainingDivergedError",
           "WarmupStepDecay", "epochs_to_steps", "export_backbone",
           "load_backbone", "load_info", "make_strategy"]
