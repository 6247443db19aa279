"""Tests for selfsup.evaluation.lbfgs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from selfsup.evaluation import coordinates, features, lbfgs

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _objective(x, y, *args, **kwargs):
  """An objective over arrays in memory (one chunk)."""
  return lbfgs.Objective(features.ArrayFeatures(x, y.astype(np.int32)), *args,
                         **kwargs)


def _reference(x, y, w, b, l2):
  """Objective and gradient in float64 numpy, straight from the formula."""
  x = x.astype(np.float64)
  logits = x @ w + b
  logits -= logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  n = len(y)
  value = -log_p[np.arange(n), y].mean() + l2 * np.sum(w * w)
  dlogits = np.exp(log_p)
  dlogits[np.arange(n), y] -= 1.0
  return value, x.T @ dlogits / n + 2 * l2 * w, dlogits.sum(axis=0) / n


def _blobs(n, dim, classes, seed, separation=1.5, draw=0):
  """Gaussian classes with random means: a well-conditioned problem.

  `seed` picks the class means, `draw` the examples drawn around them.
  """
  means = np.random.default_rng(seed).normal(size=(classes, dim))
  means *= separation / np.sqrt(dim)
  rng = np.random.default_rng([seed, draw])
  y = rng.integers(0, classes, size=n)
  x = means[y] + rng.normal(size=(n, dim)) / np.sqrt(dim)
  return (x * 3).astype(np.float32), y


def _softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_reference_gradient_matches_finite_differences():
  x, y = _blobs(13, 4, 3, seed=0)
  rng = np.random.default_rng(1)
  w, b = rng.normal(size=(4, 3)), rng.normal(size=3)
  _, grad_w, grad_b = _reference(x, y, w, b, 0.3)
  eps = 1e-6
  for i in np.ndindex(w.shape):
    d = np.zeros_like(w)
    d[i] = eps
    numeric = (_reference(x, y, w + d, b, 0.3)[0]
               - _reference(x, y, w - d, b, 0.3)[0]) / (2 * eps)
    assert numeric == pytest.approx(grad_w[i], abs=1e-7)
  for j in range(3):
    d = np.zeros(3)
    d[j] = eps
    numeric = (_reference(x, y, w, b + d, 0.3)[0]
               - _reference(x, y, w, b - d, 0.3)[0]) / (2 * eps)
    assert numeric == pytest.approx(grad_b[j], abs=1e-7)


def test_objective_matches_reference_and_finite_differences():
  # 13 examples in batches of 5: two full batches and a partial one.
  x, y = _blobs(13, 4, 3, seed=0)
  objective = _objective(x, y, 3, 0.3, batch_size=5)
  rng = np.random.default_rng(2)
  theta = rng.normal(size=objective.size)
  value, grad = objective(theta)
  w, b = objective.unpack(theta)
  ref_value, ref_w, ref_b = _reference(x, y, w, b, 0.3)
  assert value == pytest.approx(ref_value, rel=1e-6)
  np.testing.assert_allclose(grad, np.concatenate([ref_w.ravel(), ref_b]),
                             rtol=1e-5, atol=1e-6)
  assert grad.dtype == np.float64
  eps = 1e-2  # float32 data term: a large step keeps the rounding noise small
  for k in range(objective.size):
    d = np.zeros_like(theta)
    d[k] = eps
    numeric = (objective(theta + d)[0] - objective(theta - d)[0]) / (2 * eps)
    assert numeric == pytest.approx(grad[k], abs=1e-3)


def test_default_l2_and_sklearn_c():
  assert lbfgs.default_l2(2048, 1000) == pytest.approx(100.0 / 2048000)
  assert lbfgs.sklearn_equivalent_c(0.25, 100) == pytest.approx(0.02)


@pytest.mark.parametrize("l2", [None, 1e-3])
def test_agrees_with_sklearn(l2):
  # Overlapping classes (~85% top-1) so that accuracy can tell them apart.
  x, y = _blobs(600, 20, 5, seed=3, separation=0.5)
  test_x, test_y = _blobs(400, 20, 5, seed=3, separation=0.5, draw=1)
  ours = lbfgs.fit(x, y, 5, l2=l2, batch_size=256,
                   scipy_options=dict(ftol=1e-14, gtol=1e-9))
  c = lbfgs.sklearn_equivalent_c(ours.l2, len(y))
  theirs = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, y)
  # sklearn 1.9 is multinomial for 3+ classes: probabilities are the softmax
  # of its decision function (one-vs-rest would normalise sigmoids instead).
  np.testing.assert_allclose(theirs.predict_proba(x),
                             _softmax(theirs.decision_function(x)), atol=1e-9)

  ref_ours = _reference(x, y, ours.weights, ours.bias, ours.l2)[0]
  ref_theirs = _reference(x, y, theirs.coef_.T, theirs.intercept_, ours.l2)[0]
  assert ref_ours == pytest.approx(ref_theirs, rel=1e-5)
  assert ours.objective == pytest.approx(ref_ours, rel=1e-5)
  np.testing.assert_allclose(ours.weights, theirs.coef_.T, atol=2e-3)
  # The bias is unique only up to a shift common to all classes.
  np.testing.assert_allclose(ours.bias - ours.bias.mean(),
                             theirs.intercept_ - theirs.intercept_.mean(),
                             atol=2e-3)
  for xs, ys in [(x, y), (test_x, test_y)]:
    top1 = lbfgs.evaluate(ours, xs, ys)["top1"]
    assert top1 == pytest.approx(theirs.score(xs, ys), abs=0.005)
  assert ours.iterations > 1 and ours.seconds > 0
  assert len(ours.history) == ours.iterations
  assert ours.evaluations >= ours.iterations


def test_max_iter_stops_early():
  x, y = _blobs(600, 20, 5, seed=3)
  result = lbfgs.fit(x, y, 5, l2=1e-3, max_iter=2)
  assert result.iterations == 2
  assert not result.converged
  assert result.weights.shape == (20, 5) and result.weights.dtype == np.float32
  assert result.bias.shape == (5,) and result.bias.dtype == np.float32


def test_fit_restores_blas_threads():
  import threadpoolctl  # pylint: disable=import-outside-toplevel
  before = [i["num_threads"] for i in threadpoolctl.threadpool_info()]
  x, y = _blobs(200, 8, 3, seed=4)
  lbfgs.fit(x, y, 3, max_iter=5)
  assert [i["num_threads"] for i in threadpoolctl.threadpool_info()] == before


def test_objective_is_traced_once():
  x, y = _blobs(50, 6, 3, seed=6)
  objective = _objective(x, y, 3, 0.01, batch_size=16)
  rng = np.random.default_rng(7)
  for _ in range(3):
    value, grad = objective(rng.normal(size=objective.size))
    assert np.isfinite(value) and grad.shape == (objective.size,)
  # pylint: disable-next=protected-access
  assert objective._value_and_grad.experimental_get_tracing_count() == 1


def test_float64_input_gives_the_float32_result():
  x, y = _blobs(200, 8, 3, seed=4)
  a = lbfgs.fit(x, y, 3)
  b = lbfgs.fit(x.astype(np.float64), y.astype(np.int64), 3)
  np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)
  assert a.objective == pytest.approx(b.objective, rel=1e-9)


def test_evaluate_top1_top5_and_logits():
  # Feature i scores class i; ties count against the model (issue 25).
  result = lbfgs.LogisticRegressionResult(
      weights=np.eye(6, dtype=np.float32), bias=np.zeros(6, np.float32),
      objective=0.0, iterations=0, seconds=0.0, converged=True, l2=0.0)
  x = np.array([[0, 0, 0, 0, 0, 1],      # label 5: top1
                [6, 5, 4, 3, 2, 1],      # label 4: rank 4 -> top5 only
                [6, 5, 4, 3, 2, 1],      # label 5: rank 5 -> neither
                [1, 1, 1, 1, 1, 1]],     # label 2: all tied -> neither
               np.float32)
  y = np.array([5, 4, 5, 2])
  np.testing.assert_array_equal(lbfgs.predict_logits(result, x), x)
  metrics = lbfgs.evaluate(result, x, y)
  assert metrics == dict(top1=0.25, top5=0.5, num_examples=4)


_X, _Y = _blobs(30, 4, 3, seed=5)
_NAN = _X.copy()
_NAN[3, 1] = np.nan


@pytest.mark.parametrize("x,y,classes,kwargs,match", [
    (_X[0], _Y, 3, {}, "train_x must be 2-D"),
    (_X.astype(np.int32), _Y, 3, {}, "train_x must hold floating"),
    (_X[:0], _Y[:0], 3, {}, "train_x must have at least one example"),
    (_NAN, _Y, 3, {}, "train_x must be finite; row 3"),
    (_X, _Y[:-1], 3, {}, r"train_y must have shape \(30,\)"),
    (_X, _Y.astype(np.float32), 3, {}, "train_y must hold integers"),
    (_X, _Y + 1, 3, {},
     r"train_y must lie in \[0, 3\), got values in \[1, 3\]"),
    (_X, _Y - 1, 3, {}, r"train_y must lie in \[0, 3\)"),
    (_X, _Y, 1, {}, "num_classes must be an integer >= 2"),
    (_X, _Y, 3, dict(l2=-1.0), "l2 must be finite and >= 0"),
    (_X, _Y, 3, dict(batch_size=0), "batch_size"),
])
def test_fit_rejects_bad_input(x, y, classes, kwargs, match):
  with pytest.raises(ValueError, match=match):
    lbfgs.fit(x, y, classes, **kwargs)


def test_evaluate_rejects_bad_input():
  result = lbfgs.fit(_X, _Y, 3, max_iter=1)
  with pytest.raises(ValueError, match="x must have 4 features"):
    lbfgs.evaluate(result, _X[:, :3], _Y)
  with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
    lbfgs.evaluate(result, _X, _Y + 3)


# Logical devices must be set before TF initialises, hence a fresh process.
_STRATEGY_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from selfsup.evaluation import features, lbfgs
rng = np.random.default_rng(0)
means = rng.normal(size=(3, 7))
y = rng.integers(0, 3, size=101)  # odd: the replicas get unequal shares
x = (means[y] + rng.normal(size=(101, 7))).astype(np.float32)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
objective = lbfgs.Objective(
    features.ArrayFeatures(x, y.astype(np.int32)), 3, 0.01, batch_size=16,
    strategy=strategy)
# Tight tolerances: both runs stop at the minimum, not where their (slightly
# different) float paths happen to satisfy scipy's default criteria.
tight = dict(gtol=1e-9, ftol=1e-15)
single = lbfgs.fit(x, y, 3, l2=0.01, batch_size=16, scipy_options=tight)
mirrored = lbfgs.fit(x, y, 3, l2=0.01, batch_size=16, strategy=strategy,
                     scipy_options=tight)
print(json.dumps(dict(
    shards=objective.shards,
    single=[single.objective, single.weights.tolist(), single.bias.tolist()],
    mirrored=[mirrored.objective, mirrored.weights.tolist(),
              mirrored.bias.tolist()])))
"""


def test_mirrored_strategy_matches_default_strategy():
  env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", _STRATEGY_SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  devices = [device for device, _ in out["shards"]]
  assert devices[0].endswith("CPU:0") and devices[1].endswith("CPU:1")
  assert [rows for _, rows in out["shards"]] == [64, 37]
  single, mirrored = out["single"], out["mirrored"]
  assert mirrored[0] == pytest.approx(single[0], rel=1e-6)
  np.testing.assert_allclose(mirrored[1], single[1], atol=1e-4)
  np.testing.assert_allclose(mirrored[2], single[2], atol=1e-4)


def _ill_conditioned(n, dim, classes, seed):
  """Blobs whose feature scales decay like CNN features', then rotated: the
  spectrum is not axis-aligned, so a per-feature scaling would not fix it."""
  x, y = _blobs(n, dim, classes, seed)
  x = x * (1.0 + np.arange(dim)) ** -1.0 + 0.5
  rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(
      size=(dim, dim)))
  return (x @ rotation).astype(np.float32), y


def test_preconditioned_objective_is_the_same_function():
  """In (V, b') coordinates the value is f at unpack(theta) and the gradient
  is the chain rule's: a central difference along a random direction."""
  x, y = _ill_conditioned(40, 6, 3, seed=8)
  objective = _objective(x, y, 3, 0.05, batch_size=16,
                              precondition=True)
  plain = _objective(x, y, 3, 0.05, batch_size=16)
  assert objective.preconditioner is not None
  rng = np.random.default_rng(9)
  theta = rng.normal(size=objective.size)
  value, grad = objective(theta)
  w, b = objective.unpack(theta)
  ref_value = _reference(x, y, w, b, 0.05)[0]
  assert value == pytest.approx(ref_value, rel=1e-5)
  assert value == pytest.approx(plain(np.concatenate([w.ravel(), b]))[0],
                                rel=1e-5)
  direction = rng.normal(size=objective.size)
  eps = 1e-3
  numeric = (objective(theta + eps * direction)[0]
             - objective(theta - eps * direction)[0]) / (2 * eps)
  assert numeric == pytest.approx(float(grad @ direction), rel=2e-3)


def test_preconditioning_reaches_the_same_minimum_in_fewer_iterations():
  x, y = _ill_conditioned(400, 24, 5, seed=10)
  tight = dict(gtol=1e-9, ftol=1e-15)
  plain = lbfgs.fit(x, y, 5, scipy_options=tight, precondition=False)
  fast = lbfgs.fit(x, y, 5, scipy_options=tight)
  assert fast.objective == pytest.approx(plain.objective, rel=1e-6)
  np.testing.assert_allclose(fast.weights, plain.weights, atol=2e-3)
  np.testing.assert_allclose(fast.bias, plain.bias, atol=2e-3)
  # Iterations to get within 1e-6 of the minimum.
  target = plain.objective * (1 + 1e-6)

  def reached(result):
    return next(i for i, (_, f) in enumerate(result.history) if f <= target)

  assert reached(fast) * 2 <= reached(plain), (reached(fast), reached(plain))


def test_bias_scaling_shortens_the_path_with_many_classes(monkeypatch):
  """The bias's curvature is ~1/C of the whitened weights'; scaling it by
  sqrt(C) takes several times fewer iterations (same minimum)."""
  x, y = _ill_conditioned(600, 24, 20, seed=12)
  tight = dict(gtol=1e-9, ftol=1e-15)
  scaled = lbfgs.fit(x, y, 20, scipy_options=tight)
  monkeypatch.setattr(coordinates, "bias_scale", lambda num_classes: 1.0)
  unscaled = lbfgs.fit(x, y, 20, scipy_options=tight)
  assert scaled.objective == pytest.approx(unscaled.objective, rel=1e-6)
  target = min(scaled.objective, unscaled.objective) * (1 + 1e-6)

  def reached(result):
    return next(i for i, (_, f) in enumerate(result.history) if f <= target)

  assert reached(scaled) * 2 <= reached(unscaled), (reached(scaled),
                                                    reached(unscaled))


def test_preconditioner_with_fewer_rows_than_features_and_no_penalty():
  x, y = _blobs(10, 32, 3, seed=11)  # rank-deficient covariance
  result = lbfgs.fit(x, y, 3, l2=0.0, max_iter=50)
  assert np.isfinite(result.objective)
  assert np.all(np.isfinite(result.weights))


@pytest.mark.parametrize("precondition", [False, True])
def test_streamed_fit_matches_in_memory(tmp_path, precondition):
  x, y = _blobs(300, 12, 4, seed=5)
  features.write_split(str(tmp_path), "train",
                       [(x[i:i + 40], y[i:i + 40]) for i in range(0, 300, 40)],
                       layer="l", shard_size=64, progress=False,
                       shard_format="raw")
  source = features.ShardedFeatures(str(tmp_path), "train")
  # A budget of a few KiB: chunks of a few rows, ~30 of them per evaluation.
  budget = source.chunk_bytes(10) / 2**20
  objective = lbfgs.Objective(source, 4, 0.01, chunk_rows=10,
                              precondition=precondition)
  in_memory = _objective(x, y, 4, 0.01, precondition=False)
  theta = np.random.default_rng(0).normal(size=objective.size) * 0.1
  w, b = objective.unpack(theta)
  value, _ = objective(theta)
  assert value == pytest.approx(in_memory(np.concatenate([w.ravel(), b]))[0],
                                rel=1e-6)
  streamed = lbfgs.fit(source, None, 4, memory_budget_mb=budget,
                       precondition=precondition)
  whole = lbfgs.fit(x, y, 4, precondition=precondition)
  assert streamed.objective == pytest.approx(whole.objective, rel=1e-6)
  np.testing.assert_allclose(streamed.weights, whole.weights, atol=2e-3)
  with pytest.raises(ValueError, match="train_y must be None"):
    lbfgs.fit(source, y, 4, memory_budget_mb=budget)
  with pytest.raises(ValueError, match="memory_budget_mb must be > 0"):
    lbfgs.fit(source, None, 4)
  with pytest.raises(ValueError, match="memory_budget_mb applies"):
    lbfgs.fit(x, y, 4, memory_budget_mb=1)


def _chain_rule(objective, grad_w, grad_b):
  """The gradient in `objective`'s coordinates of a (W, b) gradient: the
  identity, or through W = P V, b = s beta - mu W for a preconditioner."""
  if objective.preconditioner is None:
    return np.concatenate([grad_w.ravel(), grad_b])
  p, mu = (np.asarray(t, np.float64) for t in objective.preconditioner)
  grad_v = p.T @ (grad_w - mu[:, None] * grad_b[None, :])
  return np.concatenate([grad_v.ravel(),
                         np.sqrt(grad_b.shape[0]) * grad_b])


@pytest.mark.parametrize("precondition", [False, True])
def test_streamed_and_in_memory_objectives_agree_in_value_and_gradient(
    tmp_path, precondition):
  """Many chunks of a streamed split against one in-memory array: the same
  value and the same gradient (each in its own coordinates, through the
  chain rule), at several points, and each gradient against a central
  difference along a random direction."""
  x, y = _ill_conditioned(90, 7, 4, seed=13)
  features.write_split(str(tmp_path), "train",
                       [(x[i:i + 25], y[i:i + 25]) for i in range(0, 90, 25)],
                       layer="l", shard_size=32, progress=False,
                       shard_format="raw")
  source = features.ShardedFeatures(str(tmp_path), "train")
  streamed = lbfgs.Objective(source, 4, 0.02, chunk_rows=11, batch_size=8,
                             precondition=precondition)
  in_memory = _objective(x, y, 4, 0.02, batch_size=16,
                         precondition=precondition)
  plain = _objective(x, y, 4, 0.02, batch_size=16)
  rng = np.random.default_rng(14)
  for scale in (0.0, 0.1, 1.0):
    theta = rng.normal(size=plain.size) * scale
    for objective in (streamed, in_memory):
      w, b = objective.unpack(theta)
      value, grad = objective(theta)
      ref_value, ref_w, ref_b = _reference(x, y, w, b, 0.02)
      plain_value, plain_grad = plain(np.concatenate([w.ravel(), b]))
      assert value == pytest.approx(ref_value, rel=1e-5)
      assert value == pytest.approx(plain_value, rel=1e-6)
      split = w.size
      expected = _chain_rule(objective, ref_w, ref_b)
      np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(
          grad, _chain_rule(objective, plain_grad[:split].reshape(w.shape),
                            plain_grad[split:]), rtol=1e-4, atol=1e-5)
      direction = rng.normal(size=plain.size)
      direction /= np.linalg.norm(direction)
      eps = 1e-2  # a unit direction: float32 noise / eps stays ~1e-5
      numeric = (objective(theta + eps * direction)[0]
                 - objective(theta - eps * direction)[0]) / (2 * eps)
      assert numeric == pytest.approx(float(grad @ direction), rel=2e-3,
                                      abs=5e-5)
    # One preconditioner whatever the chunking (sampled by position): the
    # same coordinates, so the same value and gradient at the same theta.
    value, grad = streamed(theta)
    np.testing.assert_allclose(in_memory(theta)[0], value, rtol=1e-6)
    np.testing.assert_allclose(in_memory(theta)[1], grad, rtol=1e-4,
                               atol=1e-5)
    w, b = in_memory.unpack(theta)
    np.testing.assert_allclose(in_memory.pack(w, b), theta, rtol=1e-4,
                               atol=1e-6)
