"""NT-Xent and Barlow Twins on 2 replicas (MirroredStrategy over 2 logical
CPUs, in a fresh process: tests/replica_losses.py) give the loss and the
gradients of 1 replica with the whole batch; LARS on 2 replicas makes the
one-device update."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import replica_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("replicas") / "out.json")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, replica_losses.__file__, out],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


@pytest.mark.parametrize("loss", ["nt_xent", "barlow_twins"])
def test_two_replicas_compute_the_global_batch(results, loss):
  run = results[loss]
  assert run["replicas"] == 2
  one, two = run["loss"]
  assert np.isfinite(one) and one > 0
  np.testing.assert_allclose(two, one, rtol=1e-5)
  g1, g2 = (np.asarray(g) for g in run["grad"])
  assert np.abs(g1).max() > 1e-3  # a real gradient, not zeros
  np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-6)


def test_lars_on_two_replicas_applies_the_summed_gradient(results):
  single = np.asarray(results["lars"]["single"])
  replicas = [np.asarray(r) for r in results["lars"]["replicas"]]
  assert len(replicas) == 2
  for value in replicas:
    np.testing.assert_allclose(value, single, rtol=1e-5, atol=1e-6)
