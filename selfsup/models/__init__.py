"""Backbones of the paper as Keras 3 models returning dicts of endpoints.

    model = selfsup.models.get("resnet50_v2", width=8, num_classes=1000)
    endpoints = model(images)   # after_root, block1..4, pre_logits, logits

`selfsup.models.names()` names them all (`BACKBONES` is their registry).
"""
from selfsup.models.base import ENDPOINTS, Backbone
from selfsup.models.registry import BACKBONES, get, names, register
from selfsup.models.resnet import ResNet
from selfsup.models.revnet import ChannelPad, RevNet, RevUnit
from selfsup.models.tf1 import TF1CheckpointError, load_tf1
from selfsup.models.vgg import VGG


def from_preset(name, *, source=None, download=None, patch=None,
                **backbone_kwargs):
  """The backbone of pretrained preset `name` (`selfsup presets` lists
  them), downloaded on first use into `SELFSUP_HOME` (see
  `selfsup.presets`), its architecture and width read off the checkpoint
  (`load_tf1(..., "auto")`). `source`: a local module folder or tarball
  instead of the cache; `patch`: the patch variant (default: as the
  preset's task was trained)."""
  from selfsup import presets  # pylint: disable=import-outside-toplevel
  folder, entry = presets.resolve(name, source=source, download=download)
  if patch is None:
    patch = entry["task"] in ("jigsaw", "relative_patch_location")
  return load_tf1(folder, "auto", width=entry["width"], patch=patch,
                  **backbone_kwargs)


register("resnet50_v1", ResNet, depth=50, version="v1")
register("resnet50_v2", ResNet, depth=50, version="v2", last_relu=True)
register("resnet50_v2_minus", ResNet, depth=50, version="v2", last_relu=False)
register("revnet50", RevNet, last_relu=True)
register("revnet50_minus", RevNet, last_relu=False)
register("vgg19_bn", VGG)
register("resnet18_v1", ResNet, depth=18, version="v1")
register("resnet18_v2", ResNet, depth=18, version="v2")

__all__ = ["BACKBONES", "ENDPOINTS", "Backbone", "ChannelPad", "ResNet",
           "RevNet", "RevUnit", "TF1CheckpointError", "VGG", "from_preset",
           "get", "load_tf1", "names", "register"]
