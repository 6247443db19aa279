"""Checkpoints that are whole or absent.

`tf.train.CheckpointManager` writes a checkpoint's files first and the
`checkpoint` index last, and the index only ever names finished checkpoints,
so a run killed mid-save restarts from the previous one. Restoring checks that
every saved variable matched one of ours, so a checkpoint of another model is
refused rather than half-loaded.
"""
import tensorflow as tf
from absl import logging


class Manager:
  """Saves and restores `step`, the optimizer, the modules and the input.

  Args:
    directory: where checkpoints live.
    max_to_keep: checkpoints kept.
    step: the step variable (the optimizer's `iterations`).
    iterator: the input iterator, or None. Saving it lets a resumed run read
      the same examples as an uninterrupted one; it stores the shuffle buffer.
    **objects: trackables to save (optimizer, backbone, head, ...).
  """

  def __init__(self, directory, max_to_keep, *, step, iterator=None,
               **objects):
    self.directory = directory
    items = dict(objects, step=step)
    if iterator is not None:
      items["iterator"] = iterator
    self._checkpoint = tf.train.Checkpoint(**items)
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, directory, max_to_keep=max_to_keep,
        step_counter=step)

  @property
  def latest(self):
    return self._manager.latest_checkpoint

  def restore_latest(self):
    """Restores the latest whole checkpoint; returns its path or None."""
    path = self._manager.latest_checkpoint
    if not path:
      return None
    status = self._checkpoint.restore(path)
    try:
      status.assert_existing_objects_matched()
    except AssertionError as err:
      raise ValueError(
          f"Checkpoint {path} does not match this model and task (was the "
          f"workdir used for another configuration?): {err}") from err
    return path

  def save(self, step):
    path = self._manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s.", path)
    return path
