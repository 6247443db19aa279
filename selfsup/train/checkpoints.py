"""Checkpoints that are whole or absent.

`tf.train.CheckpointManager` writes a checkpoint's files first and the
`checkpoint` index last, and the index only ever names finished checkpoints,
so a run killed mid-save restarts from the previous one. Restoring checks that
every saved variable matched one of ours, so a checkpoint of another model is
refused rather than half-loaded.

With several workers (MultiWorkerMirroredStrategy) every worker must save,
since a save may need the other workers, but only the chief writes to the
real directory; the others write to a scratch folder of their own inside
the workdir (`tmp/worker-<task>-<id>`, never the system's temporary
folder), as the tf.distribute guide prescribes. Every worker restores from
the real one.
"""
import tensorflow as tf
from absl import logging

# Scratch folders of non-chief workers, under <workdir>/tmp/.
WORKER_SCRATCH = "worker-"


class Manager:
  """Saves and restores `step`, the optimizer, the modules and the input.

  Args:
    directory: where checkpoints live.
    max_to_keep: checkpoints kept.
    step: the step variable (the optimizer's `iterations`).
    iterator: the input iterator, or None. Saving it lets a resumed run read
      the same examples as an uninterrupted one; it stores the shuffle buffer.
    chief: False on the other workers of a multi-worker run: they save to
      `scratch` instead (emptied at start, deleted with the manager).
    scratch: that folder (required when `chief` is False).
    **objects: trackables to save (optimizer, backbone, head, ...).
  """

  def __init__(self, directory, max_to_keep, *, step, iterator=None,
               chief=True, scratch=None, **objects):
    self.directory = directory
    items = dict(objects, step=step)
    if iterator is not None:
      items["iterator"] = iterator
    self._checkpoint = tf.train.Checkpoint(**items)
    self._scratch = None
    if not chief:
      if not scratch:
        raise ValueError("A non-chief checkpoint manager needs `scratch`.")
      if tf.io.gfile.exists(scratch):
        tf.io.gfile.rmtree(scratch)
      tf.io.gfile.makedirs(scratch)
      self._scratch = scratch
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, self._scratch or directory,
        max_to_keep=1 if self._scratch else max_to_keep, step_counter=step)

  def __del__(self):
    scratch = getattr(self, "_scratch", None)
    try:
      if scratch and tf.io.gfile.exists(scratch):
        tf.io.gfile.rmtree(scratch)
    except (tf.errors.OpError, AttributeError, TypeError):
      pass  # at interpreter exit; the next start removes it

  @property
  def latest(self):
    """The latest whole checkpoint of the run (the chief's), or None."""
    return tf.train.latest_checkpoint(self.directory)

  def restore_latest(self):
    """Restores the latest whole checkpoint; returns its path or None."""
    path = self.latest
    if not path:
      return None
    try:
      self._checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as err:
      detail = " ".join(str(err).split())  # shape mismatches, missing objects
      raise ValueError(
          f"Checkpoint {path} does not match this model and task (was the "
          f"workdir used for another configuration?): {detail}") from err
    return path

  def save(self, step):
    path = self._manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s.", path)
    return path
