"""Pretext tasks: Rotation, Exemplar, Jigsaw, Relative Patch Location, and
the supervised baseline. Each is a preprocessing spec, a model and a loss:

    task = selfsup.tasks.get("rotation", backbone="revnet50", width=4).build()
    loss, metrics = task.step(batch, training=True)   # one replica's batch
"""
from selfsup.tasks.base import Task
from selfsup.tasks.image_tasks import Exemplar, Rotation, Supervised
from selfsup.tasks.losses import triplet_semihard_loss
from selfsup.tasks.patch_tasks import Jigsaw, RelativePatchLocation

_TASKS = {cls.name: cls for cls in (Rotation, Exemplar, Jigsaw,
                                    RelativePatchLocation, Supervised)}


def list():  # pylint: disable=redefined-builtin
  return sorted(_TASKS)


def get(name, **kwargs):
  """Makes the task registered as `name` (not built: call `.build()`)."""
  if name not in _TASKS:
    raise ValueError(f"Unknown task {name!r}: expected one of {list()}.")
  return _TASKS[name](**kwargs)


__all__ = ["Exemplar", "Jigsaw", "RelativePatchLocation", "Rotation",
           "Supervised", "Task", "get", "list", "triplet_semihard_loss"]
