"""Pretext tasks: Rotation, Exemplar, Jigsaw, Relative Patch Location, and
the supervised baseline; and the methods that came after the paper, SimCLR,
BYOL and Barlow Twins (`two_view_tasks`). Each is a preprocessing spec, a
model and a loss:

    task = selfsup.tasks.get("rotation", backbone="revnet50", width=4).build()
    loss, metrics = task.step(batch, training=True)   # one replica's batch

`TASKS` is their registry, by each class's `name`; `names()` lists them
(`list()` is a deprecated spelling of it).
"""
from selfsup.core.registry import Registry
from selfsup.tasks.base import Task
from selfsup.tasks.image_tasks import Exemplar, Rotation, Supervised
from selfsup.tasks.losses import triplet_semihard_loss
from selfsup.tasks.patch_tasks import Jigsaw, RelativePatchLocation
from selfsup.tasks.two_view_tasks import BYOL, BarlowTwins, SimCLR

TASKS = Registry("task")
for _cls in (Rotation, Exemplar, Jigsaw, RelativePatchLocation, Supervised,
             SimCLR, BYOL, BarlowTwins):
  TASKS.register(_cls.name, _cls)
del _cls

names = TASKS.names


def get(name, **kwargs):
  """Makes the task registered as `name` (not built: call `.build()`)."""
  return TASKS.get(name, **kwargs)


__all__ = ["BYOL", "BarlowTwins", "Exemplar", "Jigsaw", "RelativePatchLocation",
           "Rotation", "SimCLR", "Supervised", "TASKS", "Task", "get", "names",
           "triplet_semihard_loss"]
