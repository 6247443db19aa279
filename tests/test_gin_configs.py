"""The task configs parse with plain gin from any directory: their shared
defaults come from the included gin/common/pretraining.gin."""
import logging
import os

import gin
import pytest

import selfsup.tasks
import selfsup.train.experiment  # pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The methods after the paper use their own recipes (tests/test_method_gin.py).
PAPER_TASKS = [t for t in selfsup.tasks.TASKS.names()
               if t not in ("simclr", "byol", "barlow_twins")]


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_task_config_includes_the_shared_defaults(task, tmp_path,
                                                  monkeypatch, caplog):
  monkeypatch.chdir(tmp_path)  # the include must not depend on the cwd
  gin.clear_config()
  try:
    with caplog.at_level(logging.INFO):
      gin.parse_config_file(os.path.join(REPO, "gin", f"{task}.gin"))
    assert gin.query_parameter("build_task.name") == task
    assert gin.query_parameter("build_source.name") == "imagenet2012"
    assert gin.query_parameter("build_task.weight_decay") == 1e-4
    assert gin.query_parameter("TrainConfig.base_lr") == 0.1
    assert gin.query_parameter("TrainConfig.eval_split") == "val"
    epochs = gin.query_parameter("TrainConfig.epochs")
    assert epochs == (90 if task == "supervised" else 35)
    assert "Path not found" not in caplog.text
  finally:
    gin.clear_config()
