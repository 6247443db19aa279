"""Test configuration: quiet TensorFlow, a fixed seed, the `slow` marker."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: long tests, excluded from CI's default run "
      "(run with `pytest -m slow`).")


@pytest.fixture(autouse=True)
def _seed():
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  yield
