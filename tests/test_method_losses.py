"""NT-Xent, BYOL and Barlow Twins losses against NumPy written by hand,
values and gradients (the gradients derived on paper, not by autodiff)."""
import numpy as np
import pytest
import tensorflow as tf

from selfsup.tasks import losses


def _np_nt_xent(z1, z2, t):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  n = n2 // 2
  total = 0.0
  for k in range(n2):
    pos = (k + n) % n2
    sims = np.array([z[k] @ z[m] / t for m in range(n2)])
    others = [m for m in range(n2) if m != k]
    total += -sims[pos] + np.log(np.sum(np.exp(sims[others])))
  return total / n2


def _np_nt_xent_grad(z1, z2, t):
  """d loss / d z by the chain rule through the normalisation."""
  raw = np.concatenate([z1, z2]).astype(np.float64)
  norms = np.linalg.norm(raw, axis=1, keepdims=True)
  z = raw / norms
  n2 = len(z)
  n = n2 // 2
  sims = z @ z.T / t
  np.fill_diagonal(sims, -np.inf)
  p = np.exp(sims - sims.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  target = np.zeros_like(p)
  target[np.arange(n2), (np.arange(n2) + n) % n2] = 1
  dlogits = (p - target) / n2  # d loss / d sims
  dz = (dlogits + dlogits.T) @ z / t  # sims is symmetric in z
  # Through z = raw / |raw|: (I - z z^T) / |raw|.
  dz = (dz - np.sum(dz * z, 1, keepdims=True) * z) / norms
  return dz[:n], dz[n:]


def _np_byol(p, z):
  p = p / np.linalg.norm(p, axis=1, keepdims=True)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  return np.mean(2 - 2 * np.sum(p * z, 1))


def _np_barlow(z1, z2, lam, eps=1e-5):
  def norm(z):
    return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)
  n = len(z1)
  c = norm(z1).T @ norm(z2) / n
  on = sum((1 - c[i, i]) ** 2 for i in range(len(c)))
  off = sum(c[i, j] ** 2 for i in range(len(c)) for j in range(len(c))
            if i != j)
  return on + lam * off


def _numeric_grad(f, x, h=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[idx] += h
    down[idx] -= h
    g[idx] = (f(up) - f(down)) / (2 * h)
  return g


def _grads(fn, *xs):
  xs = [tf.constant(x, tf.float32) for x in xs]
  with tf.GradientTape() as tape:
    tape.watch(xs)
    value = fn(*xs)
  grads = tape.gradient(value, xs,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return value.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_value_and_gradient(t):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  value, (g1, g2) = _grads(lambda a, b: losses.nt_xent_loss(a, b, t), z1, z2)
  np.testing.assert_allclose(value, _np_nt_xent(z1, z2, t), rtol=1e-5)
  e1, e2 = _np_nt_xent_grad(z1, z2, t)
  np.testing.assert_allclose(g1, e1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g2, e2, rtol=1e-4, atol=1e-6)


def test_nt_xent_perfect_views_beat_random_ones():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(8, 16))
  same = float(losses.nt_xent_loss(z, z, 0.1))
  other = float(losses.nt_xent_loss(z, rng.normal(size=(8, 16)), 0.1))
  assert same < other
  assert float(losses.nt_xent_accuracy(z, z)) == 1.0


def test_byol_value_gradient_and_stop_gradient():
  rng = np.random.default_rng(2)
  p, z = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
  value, (gp, gz) = _grads(losses.byol_loss, p, z)
  np.testing.assert_allclose(value, _np_byol(p, z), rtol=1e-5)
  np.testing.assert_allclose(gp, _numeric_grad(lambda a: _np_byol(a, z), p),
                             rtol=1e-3, atol=1e-6)
  assert not np.any(gz), "no gradient may reach the target"
  assert float(losses.byol_loss(p, 3 * p)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_barlow_twins_value_and_gradient(lam):
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
  value, (g1, g2) = _grads(lambda a, b: losses.barlow_twins_loss(a, b, lam),
                           z1, z2)
  np.testing.assert_allclose(value, _np_barlow(z1, z2, lam), rtol=1e-4)
  np.testing.assert_allclose(
      g1, _numeric_grad(lambda a: _np_barlow(a, z2, lam), z1), rtol=2e-3,
      atol=1e-5)
  np.testing.assert_allclose(
      g2, _numeric_grad(lambda b: _np_barlow(z1, b, lam), z2), rtol=2e-3,
      atol=1e-5)


def test_barlow_twins_identical_decorrelated_views_give_zero():
  # Zero-mean orthonormal columns: after normalisation c is the identity.
  z = np.random.default_rng(4).normal(size=(16, 4))
  z, _ = np.linalg.qr(z - z.mean(0))
  loss = float(losses.barlow_twins_loss(z, z, 0.0051, epsilon=0.0))
  assert loss == pytest.approx(0.0, abs=1e-4)
  assert _np_barlow(z, z, 0.0051, eps=0.0) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("fn,kwargs,message", [
    (losses.nt_xent_loss, dict(temperature=0.0), "temperature"),
    (losses.barlow_twins_loss, dict(lambda_=-1.0), "lambda_"),
])
def test_bad_arguments_are_named(fn, kwargs, message):
  z = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match=message):
    fn(z, z, **kwargs)


def test_shapes_must_match():
  with pytest.raises(ValueError, match="one shape"):
    losses.byol_loss(np.ones((4, 3)), np.ones((4, 2)))
