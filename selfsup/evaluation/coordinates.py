"""The coordinates scipy's L-BFGS-B sees for the model (W, b) of `lbfgs`.

A parameterisation owns everything that depends on the coordinates: how many
there are (`size`), the model they stand for (`model`, TensorFlow, traced
into the objective), the chain rule back from the model's gradient
(`gradient`), and the numpy maps `pack` (model -> coordinates) and `unpack`
(coordinates -> model). The objective itself (`lbfgs.Objective`) is written
once, in the model's terms.

- `Plain`: theta = concat(W.ravel(), b), as the paper.
- `Whitened`: theta = (V, beta) with W = P V, b = s beta - mu W (see
  `whitened`): the same function with the feature-side curvature removed,
  so L-BFGS reaches the same minimum in several times fewer iterations.
"""
from absl import logging
import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack
import tensorflow as tf

from selfsup.evaluation import host

# Rows per feature dimension used to estimate the preconditioner's moments.
PRECONDITION_ROWS_PER_DIM = 4
_SAMPLE_BLOCK = 1024


class Plain:
  """theta = concat(W.ravel(), b)."""
  preconditioner = None

  def __init__(self, dim: int, num_classes: int):
    self.dim, self.num_classes = dim, num_classes
    self.size = dim * num_classes + num_classes

  def _split(self, theta):
    split = self.dim * self.num_classes
    return tf.reshape(theta[:split], [self.dim, self.num_classes]), \
        theta[split:]

  def model(self, theta):
    """(W float32, b float32, W float64) at float64 `theta` (in a graph)."""
    w64, b64 = self._split(theta)
    return tf.cast(w64, tf.float32), tf.cast(b64, tf.float32), w64

  def gradient(self, grad_w, grad_b):
    """d f / d theta from d f / d W [M, C] and d f / d b [C], float64."""
    return tf.concat([tf.reshape(grad_w, [-1]), grad_b], 0)

  def unpack(self, theta: np.ndarray):
    """(W, b) at `theta`, float64 numpy."""
    split = self.dim * self.num_classes
    return (np.asarray(theta[:split]).reshape(self.dim, self.num_classes),
            np.asarray(theta[split:]))

  def pack(self, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta of the model (W, b), float64 numpy."""
    return np.concatenate([np.ravel(w), b]).astype(np.float64)


class Whitened(Plain):
  """theta = (V, beta): W = P V, b = s beta - mu W.

  `p` [M, M] and `mu` [M] are float32 tensors (see `whitened`), s =
  `bias_scale(C)`.
  """

  def __init__(self, dim: int, num_classes: int, p, mu):
    super().__init__(dim, num_classes)
    self.preconditioner = (p, mu)
    self.scale = bias_scale(num_classes)

  def model(self, theta):
    p, mu = self.preconditioner
    v64, beta = self._split(theta)
    w32 = tf.matmul(p, tf.cast(v64, tf.float32))
    b64 = self.scale * beta - tf.cast(
        tf.linalg.matvec(w32, mu, transpose_a=True), tf.float64)
    return w32, tf.cast(b64, tf.float32), tf.cast(w32, tf.float64)

  def gradient(self, grad_w, grad_b):
    # The chain rule through (W, b)(V, beta): dV = P^T (dW - mu db^T),
    # dbeta = s db.
    p, mu = self.preconditioner
    grad_w -= tf.cast(mu, tf.float64)[:, None] * grad_b[None, :]
    grad_v = tf.matmul(p, tf.cast(grad_w, tf.float32), transpose_a=True)
    return tf.concat([tf.reshape(tf.cast(grad_v, tf.float64), [-1]),
                      self.scale * grad_b], 0)

  def unpack(self, theta: np.ndarray):
    v, beta = super().unpack(theta)
    p, mu = (t.numpy() for t in self.preconditioner)
    # W = P V in float64, a block of P's rows at a time (a float64 copy of
    # P would add M * M * 8 bytes to fit's peak memory).
    w = np.concatenate([p[i:i + 256].astype(np.float64) @ v
                        for i in range(0, self.dim, 256)])
    return w, self.scale * beta - mu.astype(np.float64) @ w

  def pack(self, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    p, mu = (t.numpy().astype(np.float64) for t in self.preconditioner)
    v = scipy.linalg.solve_triangular(p, w, lower=False)  # P = L^-T: upper
    return super().pack(v, (b + mu @ w) / self.scale)


def bias_scale(num_classes: int) -> float:
  """s in the preconditioned bias b = s beta - mu W: sqrt(C).

  The bias's Hessian, (1/N) sum_i S_i, is about (I - 1 1^T / C) / C at the
  start, a hundredth of the whitened weights' (about I) at C = 100: left
  unscaled, L-BFGS spent ~30 of 56 iterations on benchmarks/
  lbfgs_vs_sklearn.py (20,000 x 2,048 x 100) in a flat stretch near the
  minimum; with b' = sqrt(C) beta it took 24 (23-27 for s from 7 to 20).
  """
  return float(np.sqrt(num_classes))


def sample_ranges(num_examples: int, dim: int):
  """[(start, stop)] of evenly spaced blocks, about
  PRECONDITION_ROWS_PER_DIM * M rows in all, from which the preconditioner's
  moments are estimated (feature files are often sorted by class). They
  depend on the data's shape only, not on how it is read in chunks."""
  block = min(_SAMPLE_BLOCK, num_examples)
  blocks = min(-(-PRECONDITION_ROWS_PER_DIM * dim // block),
               -(-num_examples // block))
  gap = (num_examples - block) // max(blocks - 1, 1)
  return [(i * gap, i * gap + block) for i in range(blocks)]


def whitened(blocks, dim, num_classes, l2):
  """`Whitened` coordinates estimated from `blocks` of host features, or
  `Plain` ones, with a warning, where the factorisation fails.

  CNN features have a steeply decaying spectrum, so the Hessian of f in W,
  about (1/N) sum_i x_i x_i^T (x) S_i + 2 lambda I with S_i the softmax
  covariance (about I / C at the start), has a large condition number, and
  L-BFGS needs hundreds of iterations. With W = P V and b = s beta - mu W,
  where mu is the features' mean, P P^T = (Sigma / C + 2 lambda I)^-1 (Sigma
  their covariance, P from a Cholesky factor) and s = sqrt(C)
  (`bias_scale`), f in (V, beta) has the feature-side curvature removed and
  the bias's scaled to match. It is the same function of the same model, so
  the same minimum and objective values; only the path to it is shorter
  (benchmarks/lbfgs_vs_sklearn.py's features: 24 iterations to
  scikit-learn's objective, against 171 for scikit-learn and 56 with P alone).
  Each evaluation pays two [M, M] x [M, C] products more (M / (2 N) of its
  cost), and P takes M * M float32.

  mu and Sigma are estimated from the rows of `sample_ranges`. Everything
  happens in place in one [M, M] float32 buffer (BLAS syrk/syr, LAPACK
  potrf/trtri), which becomes P, shared with TensorFlow: fit's peak memory
  grows by that one buffer (less: the pages of its upper triangle are never
  written), not by the several a TensorFlow graph would keep.
  """
  # Fortran order for LAPACK, aligned so that TensorFlow can take P (its
  # transpose, C order) without a copy: P's buffer is the only [M, M] one.
  # Only the lower triangle is ever written (syrk, syr, potrf and trtri with
  # lower=1, no cleaning), so the calloc'd pages wholly above the diagonal
  # stay the kernel's shared zero page and are not resident.
  gram = host.aligned_empty((dim, dim), np.float32, zeros=True).T
  total = np.zeros(dim, np.float64)
  count = 0
  for xb in blocks:
    count += len(xb)
    total += xb.sum(axis=0, dtype=np.float64)
    # Lower triangle of gram += xb^T xb (xb.T is a Fortran-order view).
    gram = scipy.linalg.blas.ssyrk(1.0, xb.T, beta=1.0, c=gram, lower=1,
                                   overwrite_c=1)
  mu = (total / count).astype(np.float32)
  # A = (gram / count - mu mu^T) / C + floor * I, lower triangle. The floor
  # keeps A positive definite when lambda = 0 and the features are
  # rank-deficient (fewer rows than dimensions).
  gram /= count
  gram = scipy.linalg.blas.ssyr(-1.0, mu, a=gram, lower=1, overwrite_a=1)
  gram /= num_classes
  diag = np.einsum("ii->i", gram)
  diag += max(2.0 * l2, 1e-6 * float(diag.mean()) + 1e-12)
  try:
    chol, info = scipy.linalg.lapack.spotrf(gram, lower=1, clean=0,
                                            overwrite_a=1)
    if info != 0:
      raise np.linalg.LinAlgError(f"spotrf info {info}")
    # P = L^-T, so that P P^T = (L L^T)^-1 = A^-1.
    inv_l, info = scipy.linalg.lapack.strtri(chol, lower=1, overwrite_c=1)
    if info != 0 or not np.all(np.isfinite(inv_l)):
      raise np.linalg.LinAlgError(f"strtri info {info}")
  except np.linalg.LinAlgError as e:
    logging.warning("L-BFGS preconditioner unavailable (%s); fitting "
                    "without it.", e)
    return Plain(dim, num_classes)
  # inv_l is L^-1 in Fortran order (gram's buffer, overwritten in place): its
  # transpose is P in C order, shared with TensorFlow.
  return Whitened(dim, num_classes, host.host_tensor(inv_l.T),
                  tf.constant(mu))
