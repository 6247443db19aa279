"""selfsup: self-supervised visual representation learning (TF2 / Keras 3).

Submodules are imported on first use so that `import selfsup` stays cheap:
`selfsup.models`, `selfsup.preprocess`, `selfsup.data`, `selfsup.tasks`,
`selfsup.train`, `selfsup.evaluation`.
"""
import importlib
import os

# Keras 3 must run on TensorFlow here: tf.data, tf.distribute and the SavedModel
# export all assume it. Respect an explicit choice only if it is TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.environ["KERAS_BACKEND"] != "tensorflow":
  raise ImportError(
      f"selfsup needs KERAS_BACKEND=tensorflow, got "
      f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}.")

from selfsup.version import __version__  # noqa: E402

_SUBMODULES = ("models", "preprocess", "data", "tasks", "train", "evaluation")


def __getattr__(name):
  if name in _SUBMODULES:
    module = importlib.import_module(f"selfsup.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
