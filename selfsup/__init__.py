"""selfsup: self-supervised visual representation learning (TF2 / Keras 3).

    import keras, selfsup
    layer = selfsup.Representation.from_workdir("workdir")   # docs/transfer.md
    model = keras.saving.load_model("model.keras")   # selfsup classes found

Submodules are imported on first use so that `import selfsup` stays cheap
(no TensorFlow until something needs it, which is what lets the commands
send TensorFlow's start-up output to their log files): `selfsup.models`,
`selfsup.preprocess`, `selfsup.data`, `selfsup.tasks`, `selfsup.train`,
`selfsup.evaluation`, `selfsup.Representation` and
`selfsup.ImagePreprocessor`.

Each Keras class registers itself with `keras.saving` where it is defined.
Keras finds a saved model's selfsup classes once their modules are imported:
`import selfsup` imports them when Keras is already imported (`import keras,
selfsup`, the usual order); otherwise using any of them (`selfsup.models`,
`selfsup.Representation`) does, and `selfsup.register_keras_classes()`
does it explicitly. No import hook is involved.
"""
import importlib
import os
import sys

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
_ATTRIBUTES = {"Representation": "selfsup.representation",
               "ImagePreprocessor": "selfsup.preprocessor"}
# The modules that define (and so register) selfsup's Keras classes.
_KERAS_MODULES = ("selfsup.models", "selfsup.representation",
                  "selfsup.preprocessor", "selfsup.core.schedules",
                  "selfsup.train.optimizers")


def register_keras_classes():
  """Registers every selfsup Keras class (imports the modules defining them),
  so that `keras.saving.load_model` finds them whatever was imported first."""
  for name in _KERAS_MODULES:
    importlib.import_module(name)


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


if "keras" in sys.modules:  # Keras came first: its users may load at once.
  register_keras_classes()
