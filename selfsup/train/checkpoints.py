"""Checkpoints that are whole or absent.

`tf.train.CheckpointManager` writes a checkpoint's files first and the
`checkpoint` index last, and the index only ever names finished checkpoints,
so a run killed mid-save restarts from the previous one. Restoring checks that
every saved variable matched one of ours, so a checkpoint of another model is
refused rather than half-loaded.

Restoring does not trust the `checkpoint` index alone: it tries every
checkpoint whose files are in the folder, newest first. A lost or stale
index, or a damaged (truncated) newest checkpoint, falls back to the
newest one that reads, with a warning; checkpoint files of which none
reads are refused with one error line rather than silently training from
step 0 over them.

With several workers (MultiWorkerMirroredStrategy) every worker must save,
since a save may need the other workers, but only the chief writes to the
real directory; the others write to a scratch folder of their own inside
the workdir (`tmp/worker-<task>-<id>`, never the system's temporary
folder), as the tf.distribute guide prescribes. Every worker restores from
the real one.
"""
import os
import re

import tensorflow as tf
from absl import logging

from selfsup.core.errors import WorkdirError
from selfsup.core.checks import ConfigError

# Scratch folders of non-chief workers, under <workdir>/tmp/.
WORKER_SCRATCH = "worker-"
PREFIX = "ckpt"  # tf.train.CheckpointManager's file names: ckpt-<step>.*
_NUMBERED = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$")
# What a damaged checkpoint raises when read (a truncated data file gives
# IndexError); InvalidArgumentError means another model and is not here.
_DAMAGED = (IndexError, tf.errors.DataLossError, tf.errors.OutOfRangeError,
            tf.errors.NotFoundError, tf.errors.UnknownError)


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
        raise ConfigError("A non-chief checkpoint manager needs `scratch`.")
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
    """The checkpoint the index names (the chief's latest), or None; a
    damaged index names none."""
    try:
      return tf.train.latest_checkpoint(self.directory)
    except (tf.errors.OpError, ValueError, TypeError):
      return None

  def _on_disk(self):
    """{step: kinds of file present} of the checkpoints in the folder."""
    found = {}
    if not tf.io.gfile.isdir(self.directory):
      return found
    for name in tf.io.gfile.listdir(self.directory):
      match = _NUMBERED.match(name.rstrip("/"))
      if match:
        found.setdefault(int(match.group(1)), set()).add(
            match.group(2).split("-")[0])
    return found

  def restore_latest(self):
    """Restores the newest checkpoint that reads; returns its path or None
    (no checkpoint at all).

    Raises:
      WorkdirError: the checkpoint is of another model or task
        (a ValueError too), or checkpoint files are there but none reads.
    """
    on_disk = self._on_disk()
    whole = sorted((s for s, kinds in on_disk.items()
                    if kinds == {"index", "data"}), reverse=True)
    damaged = []
    for step in whole:
      path = os.path.join(self.directory, f"{PREFIX}-{step}")
      try:
        self._restore(path)
      except _DAMAGED as err:
        damaged.append(f"{path} ({' '.join(str(err).split())[:200]})")
        logging.warning("Checkpoint %s does not read (%s): trying the one "
                        "before.", path, type(err).__name__)
        continue
      if damaged or path != self.latest:
        logging.warning("Resuming from %s, not from the checkpoint the "
                        "index names (%s): %s", path, self.latest,
                        "; ".join(damaged) or "the index is missing or old")
      return path
    if damaged or on_disk:
      why = "; ".join(damaged) or (f"steps {sorted(on_disk)} lack an "
                                   "index or a data file")
      raise WorkdirError(
          f"{self.directory} holds checkpoint files, but none reads: {why}. "
          "Refusing to train from step 0 over them: move the folder away to "
          "start afresh.")
    return None

  def _restore(self, path):
    try:
      self._checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as err:
      detail = " ".join(str(err).split())  # shape mismatches, missing objects
      raise WorkdirError(
          f"Checkpoint {path} does not match this model and task (was the "
          f"workdir used for another configuration?): {detail}") from err

  def save(self, step):
    path = self._manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s.", path)
    return path
