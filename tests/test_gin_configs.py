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
    # Supervised trains on trainval, which holds val: it is scored on the
    # official validation set.
    assert gin.query_parameter("TrainConfig.eval_split") == (
        "official_val" if task == "supervised" else "val")
    epochs = gin.query_parameter("TrainConfig.epochs")
    assert epochs == (90 if task == "supervised" else 35)
    assert "Path not found" not in caplog.text
  finally:
    gin.clear_config()


# The authors' per-TPU-core shares of the paper's batches (supplementary 1):
# Rotation 1024 images / 128 cores x 4 rotations, Exemplar 512 / 32 x 8
# copies, Jigsaw and RPL 1024 / 32 x 9 patches; supervised: not known.
PER_CORE = {"rotation": 32, "exemplar": 128, "jigsaw": 288,
            "relative_patch_location": 288, "supervised": None}


def _parse(*files):
  gin.clear_config()
  for name in files:
    gin.parse_config_file(os.path.join(REPO, "gin", name))
  return selfsup.train.experiment.build_task()


@pytest.mark.parametrize("task", sorted(PER_CORE))
def test_task_configs_set_the_authors_per_core_groups(task):
  try:
    built = _parse(f"{task}.gin")
    assert built.backbone_kwargs == {"bn_group_size": PER_CORE[task]}
    if task == "exemplar":
      assert built.mining_group == 16 and built.copies == 8
      assert built.preprocessing == "paper"
      assert built.normalize == "embedding"
    if task in ("jigsaw", "relative_patch_location"):
      assert built.head_settings == "code"
      assert built.head_group_size() == 32 * built.examples_per_image
    # An architecture file keeps the task's groups.
    noskip = _parse(f"{task}.gin", "arch/resnet18_noskip.gin")
    assert noskip.backbone_kwargs == {"skip_connections": False,
                                      "bn_group_size": PER_CORE[task]}
  finally:
    gin.clear_config()


def test_supervised_config_is_the_authors_recipe():
  """config/supervised/imagenet.sh: trainval, colour jitter kept."""
  try:
    built = _parse("supervised.gin")
    assert gin.query_parameter("TrainConfig.train_split") == "trainval"
    assert "color_distort" in built.specs["train"]
  finally:
    gin.clear_config()
