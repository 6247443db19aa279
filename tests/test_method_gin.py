"""gin/simclr.gin, gin/byol.gin, gin/barlow_twins.gin: each paper's ImageNet
recipe parses from any directory and builds its TrainConfig and task."""
import os

import gin
import pytest

import selfsup.train.experiment  # pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (batch, epochs, base_lr, weight decay, final factor) from each paper.
RECIPES = {"simclr": (4096, 100, 0.3, 1e-6, 0.0),
           "byol": (4096, 1000, 0.2, 1.5e-6, 0.0),
           "barlow_twins": (2048, 1000, 0.2, 1.5e-6, 0.001)}


@pytest.mark.parametrize("task", sorted(RECIPES))
def test_method_config_is_the_papers_recipe(task, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(REPO, "gin", f"{task}.gin"))
    assert gin.query_parameter("build_task.name") == task
    assert gin.query_parameter("build_source.name") == "imagenet2012"
    assert gin.query_parameter("build_task.weight_decay") == 0.0
    # gin-configured, and checked on creation
    cfg = selfsup.train.experiment.ConfiguredTrainConfig()
    batch, epochs, lr, decay, final = RECIPES[task]
    assert (cfg.batch_size, cfg.epochs, cfg.base_lr, cfg.weight_decay,
            cfg.final_lr_factor) == (batch, epochs, lr, decay, final)
    assert (cfg.optimizer, cfg.schedule, cfg.warmup_epochs) == (
        "lars", "cosine", 10)
    assert set(cfg.exclude_from_weight_decay) >= {"bias", "gamma", "beta"}
    # Barlow Twins: biases and batch norm at 0.0048 against 0.2.
    assert cfg.lr_multipliers == ({"bias|gamma|beta": 0.024}
                                  if task == "barlow_twins" else None)
    task_obj = selfsup.train.experiment.build_task()
    assert task_obj.name == task and task_obj.width == 4
  finally:
    gin.clear_config()


# The laptop recipes of gin/demo/<task>.gin, tuned on Fashion-MNIST's val
# (docs/methods.md): (lr_scaling, base_lr).
LAPTOP = {"simclr": ("sqrt", 0.3), "byol": ("sqrt", 1.0),
          "barlow_twins": ("sqrt", 0.3)}


@pytest.mark.parametrize("task", sorted(LAPTOP))
def test_bin_demo_adds_the_methods_laptop_recipe(task, tmp_path, monkeypatch):
  from selfsup.cli import demo  # pylint: disable=import-outside-toplevel
  assert demo.task_gin(task) == (f"demo/{task}.gin",)
  assert demo.task_gin("rotation") == ()
  monkeypatch.chdir(tmp_path)
  gin.clear_config()
  try:
    for name in (f"{task}.gin",) + demo.DATA["fashion_mnist"]["gin"] + \
        demo.task_gin(task):
      gin.parse_config_file(os.path.join(REPO, "gin", name))
    cfg = selfsup.train.experiment.ConfiguredTrainConfig()
    assert (cfg.lr_scaling, cfg.base_lr, cfg.batch_size) == (
        LAPTOP[task] + (128,))
    assert cfg.lr_multipliers is None  # one rate for all, as tuned
    task_obj = selfsup.train.experiment.build_task()
    assert task_obj.name == task and task_obj.image_size == 32
  finally:
    gin.clear_config()
