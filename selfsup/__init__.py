"""selfsup: self-supervised visual representation learning (TF2 / Keras 3).

    import keras, selfsup
    layer = selfsup.Representation.from_workdir("workdir")   # docs/transfer.md
    model = keras.saving.load_model("model.keras")   # selfsup classes found

Submodules are imported on first use so that `import selfsup` stays cheap
(no TensorFlow until something needs it): `selfsup.models`,
`selfsup.preprocess`, `selfsup.data`, `selfsup.tasks`, `selfsup.train`,
`selfsup.evaluation`, and `selfsup.Representation`.

Keras finds a saved model's custom classes only once they are registered, so
`import selfsup` registers every selfsup class with `keras.saving` as soon as
Keras is imported: at once when it already is, else right after the import of
`keras` finishes (a one-shot import hook). `register_keras_classes()` does it
explicitly.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

# Keras 3 must run on TensorFlow here: tf.data, tf.distribute and the SavedModel
# export all assume it. Respect an explicit choice only if it is TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.environ["KERAS_BACKEND"] != "tensorflow":
  raise ImportError(
      f"selfsup needs KERAS_BACKEND=tensorflow, got "
      f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}.")

from selfsup.version import __version__  # noqa: E402

_SUBMODULES = ("core", "models", "preprocess", "data", "tasks", "workdir",
               "train", "evaluation")
_ATTRIBUTES = {"Representation": "selfsup.representation"}
# The modules that define (and so register) selfsup's Keras classes.
_KERAS_MODULES = ("selfsup.models", "selfsup.representation",
                  "selfsup.core.schedules")


def register_keras_classes():
  """Registers every selfsup Keras class (imports the modules defining them),
  so that `keras.saving.load_model` finds them."""
  for name in _KERAS_MODULES:
    importlib.import_module(name)


def _half_imported():
  """Whether a selfsup module (this package aside) or TensorFlow is being
  imported right now."""
  return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
             for name, module in list(sys.modules.items())
             if name.startswith("selfsup.") or name == "tensorflow")


def _register_after_keras():
  try:
    if _half_imported():
      # Importing the rest now could meet that module half made; it registers
      # its own classes when it finishes, and Representation's module needs
      # nothing half made.
      if "selfsup.representation" not in sys.modules:
        importlib.import_module("selfsup.representation")
    else:
      register_keras_classes()
  except Exception as err:  # pylint: disable=broad-except
    warnings.warn(f"selfsup could not register its Keras classes ({err}); "
                  "call selfsup.register_keras_classes() before loading a "
                  "model that holds them.")


class _Loader(importlib.abc.Loader):
  """Keras' own loader, then selfsup's registration."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    _remove_hook()
    self._loader.exec_module(module)
    _register_after_keras()

  def __getattr__(self, name):
    return getattr(self._loader, name)


class _KerasHook(importlib.abc.MetaPathFinder):
  """Finds `keras` through the other finders and wraps its loader; removed
  when Keras is loaded (`importlib.util.find_spec("keras")` only looks)."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "keras":
      return None
    for finder in list(sys.meta_path):
      if isinstance(finder, _KerasHook) or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(fullname, path, target)
      if spec is not None:
        if spec.loader is not None:
          spec.loader = _Loader(spec.loader)
        return spec
    return None


def _remove_hook():
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _KerasHook)]


if "keras" in sys.modules:
  _register_after_keras()
else:
  _remove_hook()
  sys.meta_path.insert(0, _KerasHook())


def __getattr__(name):
  if name in _SUBMODULES:
    module = importlib.import_module(f"selfsup.{name}")
    globals()[name] = module
    return module
  if name in _ATTRIBUTES:
    value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES) + list(_ATTRIBUTES))
