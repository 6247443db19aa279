"""Mixed precision: Keras layers take the dtype policy in force when made."""
import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name):
  """Makes layers created inside use policy `name` ("float32",
  "mixed_bfloat16", ...), restoring the previous global policy after."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)
