"""Issue 25: a workdir damaged or cut short is completed or refused, never
taken as finished or silently restarted.

A crash inside the final records is completed by the next run; a truncated
export is found; a lost checkpoint index or a truncated checkpoint falls
back to a checkpoint that reads; checkpoint files of which none reads, or
an export ahead of the checkpoints, are refused with one error line.
"""
import json
import os
import shutil
import socket
import stat

import pytest

from selfsup.core import errors, files, lock
from selfsup.train import Trainer, experiment, trainer as trainer_lib
from selfsup.workdir import export as export_lib
from selfsup.workdir import sources
from tests import training_runs as runs


def _trainer(workdir, steps=4):
  source = sources.make_source(sources.source_record(
      "digits", source_kwargs={"image_size": runs.IMAGE_SIZE}))
  config = runs.config(train_steps=steps, seed=1, steps_per_loop=2,
                       checkpoint_steps=2, eval_split="val", eval_batches=1)
  return Trainer(runs.make_task("rotation"), source, str(workdir), config)


class _Killed(BaseException):
  """Stands for the SIGKILL of a process inside a write."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A workdir trained to step 4 (checkpoints 2 and 4) and exported by two
  runs: the first killed inside the final records, the second completing
  them. Returns (workdir, the second run's results)."""
  workdir = tmp_path_factory.mktemp("damage") / "finished"
  real = files.write_json

  def killed_at_results(path, *args, **kwargs):
    if os.path.basename(path) == experiment.RESULTS:
      raise _Killed(path)
    real(path, *args, **kwargs)

  experiment.files.write_json = killed_at_results
  try:
    with pytest.raises(_Killed):
      experiment.run(_trainer(workdir))
  finally:
    experiment.files.write_json = real
  return workdir, experiment.run(_trainer(workdir))


def _copy(finished, tmp_path):
  target = tmp_path / "copy"
  shutil.copytree(finished[0], target)
  return target


def _truncate(path, keep=100):
  with open(path, "rb") as f:
    head = f.read(keep)
  with open(path, "wb") as f:
    f.write(head)


def test_crash_inside_the_final_records_is_completed(finished):
  workdir, results = finished
  assert not results.get("already_finished")  # was: "already finished"
  with open(workdir / experiment.RESULTS) as f:
    recorded = json.load(f)
  assert recorded["step"] == 4
  # The accuracy before training survives the resume (was: nan -> ...).
  assert 0 <= recorded["pretext_eval_start"]["accuracy"] <= 1
  for name in experiment.RECORDS:
    assert (workdir / name).exists(), name
  assert export_lib.load_info(str(workdir / "export"))["step"] == 4


def test_missing_record_means_not_finished(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  trainer = _trainer(workdir)
  trainer.restore()
  assert experiment.finished_results(trainer)["already_finished"]
  os.remove(workdir / "operative_config.gin")
  assert experiment.finished_results(trainer) is None


@pytest.mark.parametrize("victim", ["backbone.keras", "saved_model"])
def test_truncated_export_is_not_finished(finished, tmp_path, victim):
  workdir = _copy(finished, tmp_path)
  export_dir = workdir / "export"
  path = export_dir / victim
  if victim == "saved_model":
    path = max((p for p in path.rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  _truncate(path)
  with pytest.raises(errors.WorkdirError, match=str(path)):
    export_lib.verify(str(export_dir), hashes=True)
  if victim == "backbone.keras":
    with pytest.raises(errors.WorkdirError, match="damaged"):
      export_lib.load_backbone(str(export_dir))
  trainer = _trainer(workdir)
  trainer.restore()
  assert experiment.finished_results(trainer) is None  # was: finished


def test_record_paths_must_stay_inside(tmp_path):
  for bad in ("../outside", "/etc/passwd", "a/../../b"):
    with pytest.raises(errors.WorkdirError, match="path"):
      export_lib.checked_relative(bad, str(tmp_path))
  assert export_lib.checked_relative("saved_model/x.pb", "r") == (
      "saved_model/x.pb")


def test_lost_checkpoint_index_resumes_from_the_files(finished, tmp_path,
                                                      caplog):
  workdir = _copy(finished, tmp_path)
  os.remove(workdir / "checkpoints" / "checkpoint")
  trainer = _trainer(workdir)
  trainer.restore()
  assert trainer.step == 4  # was 0: training restarted over the export
  assert "index is missing" in caplog.text


def test_truncated_checkpoint_falls_back_to_the_previous(finished, tmp_path,
                                                         caplog):
  workdir = _copy(finished, tmp_path)
  [data] = (workdir / "checkpoints").glob("ckpt-4.data-*")
  _truncate(data)
  trainer = _trainer(workdir)
  trainer.restore()
  assert trainer.step == 2  # was: a traceback
  assert "ckpt-4" in caplog.text and "does not read" in caplog.text


def test_unreadable_checkpoints_are_refused(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  for index in (workdir / "checkpoints").glob("ckpt-*.index"):
    os.remove(index)
  with pytest.raises(errors.WorkdirError, match="none reads"):
    _trainer(workdir).restore()
  # No checkpoint at all, but an export of step 4: not trained over.
  shutil.rmtree(workdir / "checkpoints")
  with pytest.raises(errors.WorkdirError, match="step 4"):
    experiment.run(_trainer(workdir))


def test_eta_counts_hours_past_a_day():
  assert trainer_lib.format_eta(59) == "0:00:59"
  assert trainer_lib.format_eta(25 * 3600 + 61) == "25:01:01"  # was 01:01:01
  assert trainer_lib.format_eta(3 * 86400 + 4 * 3600 + 5) == "3d 04:00:05"
  assert trainer_lib.format_eta(float("inf")) == "?"


def test_atomic_write_keeps_permissions_and_cleans_up(tmp_path, monkeypatch):
  path = str(tmp_path / "record.json")
  files.write_json(path, {"a": 1})
  os.chmod(path, 0o640)
  files.write_json(path, {"a": 2})
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # was the umask's
  # A dead writer's leftover goes; a failed write leaves none of its own.
  dead_pid = 2**22 + 12345  # above Linux's largest pid_max
  stale = f"{path}.{socket.gethostname()}-{dead_pid}-abcd1234.tmp"
  open(stale, "w").close()
  monkeypatch.setattr(os, "fsync", _fail)
  with pytest.raises(OSError, match="disk full"):
    files.write_json(path, {"a": 3})
  assert sorted(os.listdir(tmp_path)) == ["record.json"]
  with open(path) as f:
    assert json.load(f) == {"a": 2}


def _fail(*_):
  raise OSError(28, "disk full")


def test_cleanup_keeps_the_scratch_of_live_processes(tmp_path):
  tmp = tmp_path / export_lib.TMP
  live = tmp / f"export-{lock.owner_tag()}"
  dead = tmp / f"export-{socket.gethostname()}-{2**22 + 1}-0badc0de"
  old_dead = tmp / f"export-{2**22 + 1}-0badc0de"  # before hosts were named
  for path in (live, dead, old_dead):
    path.mkdir(parents=True)
  clean = trainer_lib._clean_temporary  # pylint: disable=protected-access
  clean(str(tmp_path))
  assert live.exists()  # was deleted: a running export crashed
  assert not dead.exists() and not old_dead.exists()
