"""selfsup.core.Registry, and the four registries built on it."""

import pytest

from selfsup.core import Registry


class _Net:
  """A stand-in builder: a class whose constructor names its arguments."""

  def __init__(self, depth=1, width=1, **kwargs):
    self.depth, self.width, self.extra = depth, width, kwargs


def _registry(**kwargs):
  registry = Registry("widget", **kwargs)
  registry.register("deep", _Net, depth=50)
  registry.register("shallow", _Net, depth=18)
  return registry


def test_get_binds_fixed_arguments_and_forwards_the_rest():
  net = _registry().get("deep", width=4)
  assert (net.depth, net.width) == (50, 4)


def test_names_sorted_contains_iter_len():
  registry = _registry()
  registry.register("alpha", _Net)
  assert registry.names() == ["alpha", "deep", "shallow"]
  assert list(registry) == registry.names() and len(registry) == 3
  assert "deep" in registry and "nope" not in registry and 3 not in registry


def test_duplicate_name_is_refused_naming_the_first_builder():
  registry = _registry()
  with pytest.raises(ValueError, match=r"Widget 'deep' is already registered "
                     r"\(by .*_Net\)"):
    registry.register("deep", _Net, depth=101)
  assert registry.get("deep").depth == 50  # the first registration stands


@pytest.mark.parametrize("name", ["", None, 3])
def test_bad_names_are_refused(name):
  with pytest.raises(ValueError, match="non-empty string"):
    Registry("widget").register(name, _Net)


def test_builder_must_be_callable():
  with pytest.raises(ValueError, match="must be callable"):
    Registry("widget").register("x", 3)


def test_unknown_name_lists_the_choices_and_a_close_match():
  registry = _registry()
  for call in (registry.get, registry.lookup, registry.accepted):
    with pytest.raises(ValueError, match=r"Unknown widget 'deeep': expected "
                       r"one of \['deep', 'shallow'\]\. Did you mean 'deep'"):
      call("deeep")
  with pytest.raises(ValueError, match=r"Unknown widget 'zzz'.*\['deep', "
                     r"'shallow'\]\.$"):
    registry.get("zzz")


@pytest.mark.parametrize("check", [False, True])
def test_fixed_argument_is_refused(check):
  with pytest.raises(ValueError, match=r"Widget 'deep' fixes depth=50; do "
                     r"not pass depth=18\. Accepted: \['width'\]"):
    _registry(check_arguments=check).get("deep", depth=18)


def test_decorator_form_registers_and_returns_the_function():
  registry = Registry("op")

  @registry.register("double", factor=2)
  def scale(x, factor):
    return x * factor

  assert scale(3, 5) == 15  # unchanged by the decorator
  assert registry.get("double", x=4) == 8
  builder, fixed = registry.lookup("double")
  assert builder is scale and fixed == {"factor": 2}
  fixed["factor"] = 100  # lookup returns a copy
  assert registry.lookup("double")[1] == {"factor": 2}


def test_check_arguments_refuses_unnamed_arguments_listing_accepted():
  assert _registry().accepted("deep") == ["width"]
  # Without the check the builder's **kwargs swallow anything.
  assert _registry().get("deep", colour="red").extra == {"colour": "red"}
  with pytest.raises(ValueError, match=r"Widget 'deep' takes no argument "
                     r"'colour'\. Accepted: \['width'\]"):
    _registry(check_arguments=True).get("deep", colour="red")
  assert _registry(check_arguments=True).get("shallow", width=2).width == 2


@pytest.mark.parametrize("module, registry", [
    ("selfsup.models", "BACKBONES"),
    ("selfsup.data", "SOURCES"),
    ("selfsup.tasks", "TASKS"),
    ("selfsup.preprocess", "OPS"),
])
def test_every_kind_is_a_registry_with_names(module, registry):
  import importlib  # pylint: disable=import-outside-toplevel
  mod = importlib.import_module(module)
  reg = getattr(mod, registry)
  assert isinstance(reg, Registry) and len(reg) > 0
  assert reg.names() == sorted(reg.names())
  if registry == "OPS":
    assert mod.list_ops() == reg.names()
  else:
    assert mod.names() == reg.names()
  assert not hasattr(mod, "list")  # no shadowing of the builtin


def test_public_register_and_get_still_work():
  import selfsup.data  # pylint: disable=import-outside-toplevel
  import selfsup.models  # pylint: disable=import-outside-toplevel
  import selfsup.preprocess  # pylint: disable=import-outside-toplevel
  import selfsup.tasks  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"Unknown backbone 'resnet51'.*"
                     r"resnet50_v2"):
    selfsup.models.get("resnet51")
  with pytest.raises(ValueError, match=r"Unknown data source 'nope'.*digits"):
    selfsup.data.get("nope")
  with pytest.raises(ValueError, match=r"Unknown task 'rotate'.*rotation"):
    selfsup.tasks.get("rotate")
  with pytest.raises(ValueError, match="already registered"):
    selfsup.models.register("resnet50_v2", selfsup.models.ResNet)
  with pytest.raises(ValueError, match="already registered"):
    selfsup.data.register("digits")(lambda: None)
  with pytest.raises(ValueError, match="already registered"):
    selfsup.preprocess.register("decode")(lambda: None)
  with pytest.raises(ValueError, match="Python identifier"):
    selfsup.preprocess.register("not-an-identifier")
  assert selfsup.tasks.get("rotation", backbone="resnet18_v2",
                           width=0.25).name == "rotation"


def test_suggestions_prefer_names_that_start_the_same_way():
  """`models.get("resnet50")` once suggested "revnet50" (as close letter by
  letter); a name's start says which family the user means."""
  registry = Registry("backbone")
  for name in ("resnet50_v1", "resnet50_v2", "revnet50", "vgg19_bn"):
    registry.register(name, dict)
  assert registry.suggestions("resnet50") == ["resnet50_v1", "resnet50_v2"]
  with pytest.raises(ValueError, match=r"Did you mean 'resnet50_v1' or "
                     r"'resnet50_v2'\?$"):
    registry.get("resnet50")
  assert registry.suggestions("resnet50x")[0].startswith("resnet50")
  assert registry.suggestions("revnet")[0] == "revnet50"
  assert registry.suggestions("zzz") == []
