"""Multinomial logistic regression on frozen features, fit with scipy L-BFGS.

This is the paper's main linear evaluation (supplementary section 2): scipy's
L-BFGS-B with its default parameters, at most 800 iterations, minimising

  f(W, b) = 1/N * sum_i CE(softmax(x_i W + b), y_i) + lambda * ||W||_2^2

with W of shape [M, C] (M = feature size, C = classes), the bias b not
penalised, and lambda = 100 / (M * C) by default. The data term is the MEAN
cross-entropy over the N training examples, not the sum.

scikit-learn's `LogisticRegression(solver="lbfgs")` (1.9) minimises
C * sum_i CE_i + 0.5 * ||W||^2 (it divides by C * N internally), with the
intercept left out of the penalty for lbfgs, and fits a multinomial model for
three or more classes. So the same problem is `C = 1 / (2 * lambda * N)`;
`sklearn_equivalent_c` computes it.

Loss and gradient run in TensorFlow, float32 per batch with float64
accumulation across batches (float32 sums over a million examples would add
noise that L-BFGS's line search notices), and go to scipy as float64. Under a
`tf.distribute` strategy each replica holds a contiguous slice of the
features on its device and the partial sums are all-reduced, so features
larger than one device's memory fit across several; scipy runs on the host.
The replicas' shards may differ in size and sums are float64, so this suits
CPU and GPU strategies (Mirrored, MultiWorkerMirrored), not TPUStrategy.

Speed: an evaluation is two float32 matrix products over the features
(4 * N * M * C flops), which is all but ~10% of its time, and an L-BFGS
iteration is about one evaluation plus scipy's own O(M * C * maxcor) work.
scikit-learn does the same products in float32 through the same scipy
driver; unpreconditioned (`precondition=False`) the two take the same
iterations and differ by how fast their matrix products run, while the
default whitened coordinates (`_whitening`) reach the same minimum in
several times fewer iterations (benchmarks/lbfgs_vs_sklearn.py measures
both).
"""
import dataclasses
import time
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack
import scipy.optimize
import tensorflow as tf

import threadpoolctl

DEFAULT_MAX_ITER = 800
DEFAULT_BATCH_SIZE = 4096
# Rows per numpy chunk when scoring features: bounds the [rows, C] logits.
_CHUNK_ROWS = 65536
# Rows per feature dimension used to estimate the preconditioner's moments.
_PRECONDITION_ROWS_PER_DIM = 4
# L-BFGS-B's history (maxcor) when preconditioned; scipy's default, 10, without.
# Its workspace is ~(2 * maxcor + 5) * (M * C + C) float64: 5 instead of 10
# saves 16 MB at M = 2,048, C = 100 (a tenth of 20,000 such features) and
# took 26 iterations to scikit-learn's objective on
# benchmarks/lbfgs_vs_sklearn.py instead of 24 (3: 84).
_PRECONDITIONED_MAXCOR = 5
# Bytes of features per chunk of the finiteness check: its boolean temporary
# is a quarter of that (a whole 20,000 x 2,048 chunk added 41 MB, a quarter
# of the features, to fit's peak memory).
_CHECK_BYTES = 16 << 20
# TF's CPU kernels (Eigen) require tensor data aligned to this many bytes.
_ALIGN = 64
_ROW_ALIGN = 16


def default_l2(dim: int, num_classes: int) -> float:
  """The paper's penalty strength, lambda = 100 / (M * C)."""
  return 100.0 / (dim * num_classes)


def sklearn_equivalent_c(l2: float, num_examples: int) -> float:
  """scikit-learn's C that poses the same problem as `l2` on N examples."""
  return 1.0 / (2.0 * l2 * num_examples)


@dataclasses.dataclass
class LogisticRegressionResult:
  """A fitted linear classifier and how the optimisation went.

  Attributes:
    weights: [M, C] float32.
    bias: [C] float32.
    objective: final value of the objective in the module docstring.
    iterations: L-BFGS iterations run.
    seconds: wall time of the optimisation (input checks and transfers
      excluded).
    converged: whether scipy reported convergence rather than stopping at
      `max_iter` or on a failed line search.
    l2: the lambda used.
    message: scipy's termination message.
    evaluations: objective and gradient evaluations (line search included).
    history: (seconds since start, objective) after each iteration.
  """
  weights: np.ndarray
  bias: np.ndarray
  objective: float
  iterations: int
  seconds: float
  converged: bool
  l2: float
  message: str = ""
  evaluations: int = 0
  history: list = dataclasses.field(default_factory=list)


def _check_features(x, name: str, dim: Optional[int] = None) -> np.ndarray:
  """Returns `x` as float32 [N, M] (no copy if it already is), or raises."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D [examples, features], got shape "
                     f"{x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} must hold floating point values, got dtype "
                     f"{x.dtype}.")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"{name} must have at least one example and one feature, "
                     f"got shape {x.shape}.")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"{name} must have {dim} features (as the fitted model), "
                     f"got shape {x.shape}.")
  x = np.ascontiguousarray(x, dtype=np.float32)
  # Chunked so that the boolean temporary stays small on ImageNet-size input.
  rows = max(1, _CHECK_BYTES // (4 * x.shape[1]))
  for start in range(0, x.shape[0], rows):
    finite = np.isfinite(x[start:start + rows]).all(axis=1)
    if not finite.all():
      row = start + int(np.argmin(finite))
      raise ValueError(f"{name} must be finite; row {row} holds NaN or inf.")
  return x


def _check_labels(y, num_examples: int, num_classes: int, name: str):
  """Returns `y` as int32 [N], or raises."""
  y = np.asarray(y)
  if y.shape != (num_examples,):
    raise ValueError(f"{name} must have shape ({num_examples},) to match the "
                     f"features, got {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} must hold integers, got dtype {y.dtype}.")
  low, high = int(y.min()), int(y.max())
  if low < 0 or high >= num_classes:
    raise ValueError(f"{name} must lie in [0, {num_classes}), got values in "
                     f"[{low}, {high}].")
  return y.astype(np.int32)


def _replica_devices(strategy):
  """One device per replica; the default strategy has no list of its own."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:
    gpus = tf.config.list_logical_devices("GPU")
    return [gpus[0].name if gpus else "/CPU:0"]


def _aligned_empty(shape, dtype, zeros: bool = False) -> np.ndarray:
  """An uninitialised (or zero, from calloc: its pages become resident only
  when written) C-contiguous array whose data is _ALIGN-byte aligned."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  buf = (np.zeros if zeros else np.empty)(nbytes + _ALIGN, np.uint8)
  offset = (-buf.ctypes.data) % _ALIGN
  return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def _host_tensor(array: np.ndarray) -> tf.Tensor:
  """A CPU tensor over `array`'s own memory, or over one aligned copy.

  `tf.constant` would copy a 2 GB array twice on the way in. DLPack shares the
  buffer instead, but TF's kernels abort on data that is not aligned to
  _ALIGN bytes, and numpy's large arrays usually are not: those (and
  read-only ones, which numpy will not export) are staged once.
  """
  if not (array.flags.c_contiguous and array.flags.writeable
          and array.ctypes.data % _ALIGN == 0):
    staged = _aligned_empty(array.shape, array.dtype)
    staged[...] = array
    array = staged
  return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _distribute(strategy, array: np.ndarray):
  """Places a contiguous slice of `array`'s rows on each replica's device.

  On a CPU device an aligned input is used in place; on an accelerator each
  slice is copied to the device once (staged on the host one slice at a time
  if the input is not aligned).
  """
  devices = _replica_devices(strategy)
  n = array.shape[0]
  # Slices start at multiples of _ROW_ALIGN rows so that an aligned input
  # gives aligned slices.
  step = -(-n // (len(devices) * _ROW_ALIGN)) * _ROW_ALIGN
  bounds = [min(i * step, n) for i in range(len(devices) + 1)]

  def value_fn(ctx):
    i = ctx.replica_id_in_sync_group
    host = _host_tensor(array[bounds[i]:bounds[i + 1]])
    with tf.device(devices[i]):
      return tf.identity(host)

  return strategy.experimental_distribute_values_from_function(value_fn)


def _replica_sums(x, y, w, b, batch_size: int):
  """Sum over this replica's examples of the loss and of its gradient.

  One pass over the features per evaluation: both matrix products of a batch
  run while it is in cache, and they are the whole cost (4 * N * M * C
  flops; the softmax is ~5% of it). The weight gradient is accumulated as
  [C, M], dlogits^T x: with x row-major that product runs ~25% faster in
  oneDNN than x^T dlogits ([M, C]). Returns (loss, grad_w^T, grad_b).
  """
  dim, num_classes = w.shape
  n = tf.shape(x)[0]

  def body(start, loss, grad_w_t, grad_b):
    xb = x[start:start + batch_size]
    yb = y[start:start + batch_size]
    log_p = tf.nn.log_softmax(tf.matmul(xb, w) + b)
    # Each example's loss to float64 before the sum: a float32 sum of 4096
    # losses carries ~1e-7 relative noise, as large as the objective's
    # change per iteration near the minimum; there it failed L-BFGS-B's line
    # search (31 evaluations for one iteration, then a restart) on one
    # rounding path of benchmarks/lbfgs_vs_sklearn.py and not on another.
    loss -= tf.reduce_sum(tf.cast(tf.gather(log_p, yb, batch_dims=1),
                                  tf.float64))
    # d CE / d logits = softmax - one_hot: only [batch, C], never [N, C].
    dlogits = tf.exp(log_p) - tf.one_hot(yb, num_classes, dtype=tf.float32)
    # float32 within a batch, float64 across batches: a float32 running sum
    # over a million examples would add noise the line search notices.
    grad_w_t += tf.cast(tf.matmul(dlogits, xb, transpose_a=True), tf.float64)
    grad_b += tf.cast(tf.reduce_sum(dlogits, axis=0), tf.float64)
    return start + batch_size, loss, grad_w_t, grad_b

  # A plain tf.while_loop, not autograph: converting this function took
  # ~0.25 s of the first evaluation, longer than a whole fit on small input.
  # One batch at a time: each batch's matmuls already use every thread, and
  # overlapping iterations (the default 10) only kept more [batch, C]
  # temporaries alive (8 MB of a fit's peak at 20,000 x 2,048 x 100).
  _, loss, grad_w_t, grad_b = tf.while_loop(
      lambda start, *_: start < n, body,
      (tf.constant(0), tf.zeros([], tf.float64),
       tf.zeros([num_classes, dim], tf.float64),
       tf.zeros([num_classes], tf.float64)),
      parallel_iterations=1)
  return loss, grad_w_t, grad_b


class Objective:
  """The objective and its gradient as scipy wants them.

  Parameters are one float64 vector, theta = concat(W.ravel(), b). `x` must
  be C-contiguous float32 [N, M] and `y` int32 [N] (`fit` checks and converts
  its input); they are placed on the strategy's replicas at construction.
  A call is one TensorFlow function: theta goes in and (value, gradient)
  come out in float64, so the host does no arithmetic on the ~M * C
  parameters (numpy's fresh 1.6 MB temporaries per call cost ~10 ms at
  M = 2048, C = 100: 10% of an evaluation).
  """

  def __init__(self, x, y, num_classes: int, l2: float, *,
               batch_size: int = DEFAULT_BATCH_SIZE, strategy=None,
               precondition: bool = False):
    self.num_examples, self.dim = x.shape
    self.num_classes = num_classes
    self.l2 = l2
    strategy = strategy or tf.distribute.get_strategy()
    self._strategy = strategy
    self._x = _distribute(strategy, x)
    self._y = _distribute(strategy, y)
    self.preconditioner = (
        _whitening(_sample_blocks(x), self.dim, num_classes, l2)
        if precondition else None)
    split = self.dim * num_classes
    inv_n = 1.0 / self.num_examples

    def data_sums(w32, b32):
      # Each replica reads the float32 parameters (0.8 MB at M = 2048,
      # C = 100) from the host: cheaper than a synchronised variable.
      per_replica = strategy.run(
          _replica_sums, args=(self._x, self._y, w32, b32, batch_size))
      return [strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)
              for t in per_replica]

    @tf.function(input_signature=[tf.TensorSpec([self.size], tf.float64)],
                 autograph=False)
    def value_and_grad(theta):
      w64 = tf.reshape(theta[:split], [self.dim, num_classes])
      b64 = theta[split:]
      loss, grad_w_t, grad_b = data_sums(tf.cast(w64, tf.float32),
                                         tf.cast(b64, tf.float32))
      # The penalty and its gradient come from scipy's own float64 theta.
      value = loss * inv_n + self.l2 * tf.reduce_sum(tf.square(w64))
      grad_w = tf.transpose(grad_w_t) * inv_n + (2.0 * self.l2) * w64
      return value, tf.concat([tf.reshape(grad_w, [-1]), grad_b * inv_n], 0)

    bias_scale = _bias_scale(num_classes)

    @tf.function(input_signature=[tf.TensorSpec([self.size], tf.float64)],
                 autograph=False)
    def preconditioned_value_and_grad(theta):
      # theta = (V, beta): W = P V, b = s beta - mu W (see _whitening).
      p, mu = self.preconditioner
      v32 = tf.cast(tf.reshape(theta[:split], [self.dim, num_classes]),
                    tf.float32)
      w32 = tf.matmul(p, v32)
      w64 = tf.cast(w32, tf.float64)
      b64 = bias_scale * theta[split:] - tf.cast(
          tf.linalg.matvec(w32, mu, transpose_a=True), tf.float64)
      loss, grad_w_t, grad_b = data_sums(w32, tf.cast(b64, tf.float32))
      value = loss * inv_n + self.l2 * tf.reduce_sum(tf.square(w64))
      grad_w = tf.transpose(grad_w_t) * inv_n + (2.0 * self.l2) * w64
      grad_b = grad_b * inv_n
      # The chain rule through (W, b)(V, beta): dV = P^T (dW - mu^T db),
      # dbeta = s db.
      grad_w -= tf.cast(mu, tf.float64)[:, None] * grad_b[None, :]
      grad_v = tf.matmul(p, tf.cast(grad_w, tf.float32), transpose_a=True)
      return value, tf.concat([tf.reshape(tf.cast(grad_v, tf.float64), [-1]),
                               bias_scale * grad_b], 0)

    self._value_and_grad = (value_and_grad if self.preconditioner is None
                            else preconditioned_value_and_grad)

  @property
  def shards(self):
    """[(device, rows)] of the features held by each replica."""
    return [(t.device, int(t.shape[0]))
            for t in self._strategy.experimental_local_results(self._x)]

  @property
  def size(self) -> int:
    return self.dim * self.num_classes + self.num_classes

  def unpack(self, theta: np.ndarray):
    """(W, b) of the objective at `theta`, float64: the parameters of the
    model (with a preconditioner, mapped back from scipy's (V, beta))."""
    split = self.dim * self.num_classes
    w = theta[:split].reshape(self.dim, self.num_classes)
    b = theta[split:]
    if self.preconditioner is not None:
      p, mu = (t.numpy() for t in self.preconditioner)
      # W = P V in float64, a block of P's rows at a time (a float64 copy of
      # P would add M * M * 8 bytes to fit's peak memory).
      w = np.concatenate([p[i:i + 256].astype(np.float64) @ w
                          for i in range(0, self.dim, 256)])
      b = _bias_scale(self.num_classes) * b - mu.astype(np.float64) @ w
    return w, b

  def __call__(self, theta: np.ndarray):
    value, grad = self._value_and_grad(
        tf.constant(np.asarray(theta, np.float64)))
    return float(value), grad.numpy()


def _sample_blocks(x):
  """Evenly spaced blocks of about _PRECONDITION_ROWS_PER_DIM * M rows of x
  (feature files are often sorted by class)."""
  n, dim = x.shape
  block = min(1024, n)
  blocks = min(-(-_PRECONDITION_ROWS_PER_DIM * dim // block), -(-n // block))
  gap = (n - block) // max(blocks - 1, 1)
  for i in range(blocks):
    yield x[i * gap:i * gap + block]


def _memory_rows(source, memory_budget_mb: float, prefetch: int) -> int:
  """Rows per chunk so that the chunks in flight fit the budget."""
  per_row = source.chunk_bytes(1, prefetch)
  rows = int(memory_budget_mb * 2**20 // per_row)
  if rows < 1:
    raise ValueError(f"memory_budget_mb={memory_budget_mb} holds no chunk of "
                     f"one row ({per_row} bytes with prefetch {prefetch}).")
  return min(rows, source.num_examples)


class StreamedObjective:
  """`Objective` over features that stay on disk (`features.ShardedFeatures`).

  Each evaluation reads the split once in chunks of `chunk_rows` (the next
  chunk is read in a background thread while TensorFlow computes on this
  one) and accumulates the same per-batch sums as `Objective` (float32 within
  a batch, float64 across batches and chunks), so it is the same function to
  float rounding. Construction reads the split once: labels checked against
  `num_classes`, features checked finite, and the preconditioner's sample
  taken from evenly spaced chunks. The default strategy only.
  """

  def __init__(self, source, num_classes: int, l2: float, *, chunk_rows: int,
               batch_size: int = DEFAULT_BATCH_SIZE,
               precondition: bool = False, prefetch: int = 1):
    self.source = source
    self.num_examples, self.dim = source.shape
    self.num_classes = num_classes
    self.l2 = l2
    self.chunk_rows = int(chunk_rows)
    self._prefetch = prefetch
    num_chunks = sum(-(-e["num_examples"] // self.chunk_rows)
                     for e in source.meta["shards"])
    block = min(1024, self.chunk_rows)
    wanted = -(-_PRECONDITION_ROWS_PER_DIM * self.dim // block)
    stride = max(1, num_chunks // max(wanted, 1))

    def first_pass():
      for i, (x, y) in enumerate(source.chunks(self.chunk_rows, prefetch)):
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
          raise ValueError(f"features of {source.where} must be finite; a "
                           f"row of chunk {i} holds NaN or inf.")
        if y.min() < 0 or y.max() >= num_classes:
          raise ValueError(f"labels of {source.where} must lie in [0, "
                           f"{num_classes}), got values in [{y.min()}, "
                           f"{y.max()}].")
        if i % stride == 0:
          yield x[:block]

    if precondition:
      self.preconditioner = _whitening(first_pass(), self.dim, num_classes,
                                       l2)
    else:
      self.preconditioner = None
      for _ in first_pass():
        pass
    split = self.dim * num_classes
    inv_n = 1.0 / self.num_examples
    dim = self.dim
    bias_scale = _bias_scale(num_classes)
    spec = tf.TensorSpec([self.size], tf.float64)

    @tf.function(input_signature=[spec], autograph=False)
    def params(theta):
      """(W float32, b float32, W float64) of the model at theta."""
      if self.preconditioner is None:
        w64 = tf.reshape(theta[:split], [dim, num_classes])
        return tf.cast(w64, tf.float32), tf.cast(theta[split:],
                                                 tf.float32), w64
      p, mu = self.preconditioner
      w32 = tf.matmul(p, tf.cast(tf.reshape(theta[:split],
                                            [dim, num_classes]), tf.float32))
      b64 = bias_scale * theta[split:] - tf.cast(
          tf.linalg.matvec(w32, mu, transpose_a=True), tf.float64)
      return w32, tf.cast(b64, tf.float32), tf.cast(w32, tf.float64)

    @tf.function(input_signature=[
        tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([None],
                                                              tf.int32),
        tf.TensorSpec([dim, num_classes], tf.float32),
        tf.TensorSpec([num_classes], tf.float32)], autograph=False)
    def chunk_sums(x, y, w32, b32):
      return _replica_sums(x, y, w32, b32, batch_size)

    @tf.function(input_signature=[
        tf.TensorSpec([dim, num_classes], tf.float64),
        tf.TensorSpec([], tf.float64),
        tf.TensorSpec([num_classes, dim], tf.float64),
        tf.TensorSpec([num_classes], tf.float64)], autograph=False)
    def finish(w64, loss, grad_w_t, grad_b):
      value = loss * inv_n + self.l2 * tf.reduce_sum(tf.square(w64))
      grad_w = tf.transpose(grad_w_t) * inv_n + (2.0 * self.l2) * w64
      grad_b = grad_b * inv_n
      if self.preconditioner is None:
        return value, tf.concat([tf.reshape(grad_w, [-1]), grad_b], 0)
      p, mu = self.preconditioner
      grad_w -= tf.cast(mu, tf.float64)[:, None] * grad_b[None, :]
      grad_v = tf.matmul(p, tf.cast(grad_w, tf.float32), transpose_a=True)
      return value, tf.concat([tf.reshape(tf.cast(grad_v, tf.float64), [-1]),
                               bias_scale * grad_b], 0)

    self._params, self._chunk_sums, self._finish = params, chunk_sums, finish

  @property
  def size(self) -> int:
    return self.dim * self.num_classes + self.num_classes

  unpack = None  # set below: the same mapping as Objective's

  def __call__(self, theta: np.ndarray):
    w32, b32, w64 = self._params(tf.constant(np.asarray(theta, np.float64)))
    loss = 0.0
    grad_w_t = np.zeros((self.num_classes, self.dim), np.float64)
    grad_b = np.zeros(self.num_classes, np.float64)
    for x, y in self.source.chunks(self.chunk_rows, self._prefetch):
      sums = self._chunk_sums(_host_tensor(x), tf.constant(y.astype(np.int32)),
                              w32, b32)
      del x
      loss += float(sums[0])
      grad_w_t += sums[1].numpy()
      grad_b += sums[2].numpy()
    value, grad = self._finish(w64, tf.constant(loss, tf.float64),
                               tf.constant(grad_w_t), tf.constant(grad_b))
    return float(value), grad.numpy()


def _bias_scale(num_classes: int) -> float:
  """s in the preconditioned bias b = s beta - mu W: sqrt(C).

  The bias's Hessian, (1/N) sum_i S_i, is about (I - 1 1^T / C) / C at the
  start, a hundredth of the whitened weights' (about I) at C = 100: left
  unscaled, L-BFGS spent ~30 of 56 iterations on benchmarks/
  lbfgs_vs_sklearn.py (20,000 x 2,048 x 100) in a flat stretch near the
  minimum; with b' = sqrt(C) beta it took 24 (23-27 for s from 7 to 20).
  """
  return float(np.sqrt(num_classes))


def _whitening(blocks, dim, num_classes, l2):
  """A change of variables that makes L-BFGS's problem well conditioned.

  CNN features have a steeply decaying spectrum, so the Hessian of f in W,
  about (1/N) sum_i x_i x_i^T (x) S_i + 2 lambda I with S_i the softmax
  covariance (about I / C at the start), has a large condition number, and
  L-BFGS needs hundreds of iterations. With W = P V and b = s beta - mu W,
  where mu is the features' mean, P P^T = (Sigma / C + 2 lambda I)^-1 (Sigma
  their covariance, P from a Cholesky factor) and s = sqrt(C)
  (`_bias_scale`), f in (V, beta) has the feature-side curvature removed and
  the bias's scaled to match. It is the same function of the same model, so
  the same minimum and objective values; only the path to it is shorter
  (benchmarks/lbfgs_vs_sklearn.py's features: 24 iterations to
  scikit-learn's objective, against 171 for scikit-learn and 56 with P alone).
  Each evaluation pays two [M, M] x [M, C] products more (M / (2 N) of its
  cost), and P takes M * M float32.

  mu and Sigma are estimated from `blocks` of host features, about
  _PRECONDITION_ROWS_PER_DIM * M rows (`_sample_blocks`, or a streamed
  fit's evenly spaced chunks). Everything happens in place in one [M, M] float32
  buffer (BLAS syrk/syr, LAPACK potrf/trtri), which becomes P, shared with
  TensorFlow: fit's peak memory grows by that one buffer (less: the pages of
  its upper triangle are never written), not by the several a TensorFlow
  graph would keep.
  Returns (P, mu) as float32 tensors, or None, with a warning, where the
  Cholesky factorisation fails (then fit runs unpreconditioned).
  """
  # Fortran order for LAPACK, aligned so that TensorFlow can take P (its
  # transpose, C order) without a copy: P's buffer is the only [M, M] one.
  # Only the lower triangle is ever written (syrk, syr, potrf and trtri with
  # lower=1, no cleaning), so the calloc'd pages wholly above the diagonal
  # stay the kernel's shared zero page and are not resident.
  gram = _aligned_empty((dim, dim), np.float32, zeros=True).T
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
    return None
  # inv_l is L^-1 in Fortran order (gram's buffer, overwritten in place): its
  # transpose is P in C order, shared with TensorFlow.
  return _host_tensor(inv_l.T), tf.constant(mu)


StreamedObjective.unpack = Objective.unpack


def _single_threaded_blas():
  """Keeps BLAS to one thread while scipy's L-BFGS-B runs.

  The driver's work is level-1 BLAS on vectors of M * C + C float64 (a few
  MB): memory-bound, so a second thread gains nothing, while OpenBLAS's
  threads spin after each call and take the cores from TensorFlow's. On 2
  busy cores this made L-BFGS-B's own share 6-15x slower (60-160 ms an
  iteration instead of 10 at M = 2048, C = 100). The objective runs in
  TensorFlow (oneDNN/Eigen), which this does not touch.
  """
  return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def fit(train_x, train_y, num_classes: int, *, l2: Optional[float] = None,
        max_iter: int = DEFAULT_MAX_ITER, batch_size: int = DEFAULT_BATCH_SIZE,
        strategy: Optional[tf.distribute.Strategy] = None,
        verbose: bool = False,
        scipy_options: Optional[Mapping[str, Any]] = None,
        precondition: bool = True,
        memory_budget_mb: Optional[float] = None,
        prefetch: int = 1) -> LogisticRegressionResult:
  """Fits multinomial logistic regression with L-BFGS, starting from zero.

  Args:
    train_x: [N, M] features; float32 is used as is, other float dtypes are
      converted (a copy). Must be finite. Or a `features.ShardedFeatures`
      (features and labels left on disk, streamed once per evaluation; then
      `train_y` must be None and `memory_budget_mb` given).
    train_y: [N] integer labels in [0, num_classes); None with a
      `ShardedFeatures`, whose labels are used.
    num_classes: C, at least 2.
    l2: lambda of the penalty lambda * ||W||^2; default 100 / (M * C).
    max_iter: L-BFGS iterations at most (the paper's 800).
    batch_size: examples per matrix product inside one evaluation; bounds the
      [batch, C] temporaries, not the result.
    strategy: a `tf.distribute.Strategy` whose replicas each hold a slice of
      the features; default: the current strategy.
    verbose: log objective and gradient norm at every iteration.
    scipy_options: overrides of scipy's L-BFGS-B options (e.g. `gtol`,
      `ftol`, `maxcor`); the paper used the defaults. Preconditioned fits
      default to maxcor 5 (scipy's is 10): the same minimum in about as many
      iterations with half L-BFGS-B's workspace.
    precondition: run L-BFGS in whitened coordinates (see `_whitening`):
      the same objective and minimum in several times fewer iterations.
      False: plain L-BFGS on (W, b), as the paper.
    memory_budget_mb: streamed fits only: MiB for the feature chunks in
      flight (read ahead, converted, being computed on); the fit's memory is
      this plus fixed costs (the L-BFGS-B workspace, ~25 * M * C * 8 bytes;
      P, M * M * 4; TensorFlow's runtime).
    prefetch: streamed fits only: chunks read ahead of the computation.

  Returns:
    A `LogisticRegressionResult`.

  Raises:
    ValueError: on empty, misshaped or non-finite input, labels out of range,
      or a non-positive setting.
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got "
                     f"{num_classes!r}.")
  if hasattr(train_x, "chunks"):
    return _fit_streamed(train_x, train_y, int(num_classes), l2=l2,
                         max_iter=max_iter, batch_size=batch_size,
                         strategy=strategy, verbose=verbose,
                         scipy_options=scipy_options,
                         precondition=precondition,
                         memory_budget_mb=memory_budget_mb, prefetch=prefetch)
  if memory_budget_mb is not None:
    raise ValueError("memory_budget_mb applies to features streamed from "
                     "disk (features.ShardedFeatures), not to an in-memory "
                     "train_x.")
  x = _check_features(train_x, "train_x")
  y = _check_labels(train_y, x.shape[0], int(num_classes), "train_y")
  l2 = default_l2(x.shape[1], num_classes) if l2 is None else float(l2)
  if not np.isfinite(l2) or l2 < 0:
    raise ValueError(f"l2 must be finite and >= 0, got {l2}.")
  if max_iter < 1 or batch_size < 1:
    raise ValueError(f"max_iter and batch_size must be >= 1, got "
                     f"max_iter={max_iter}, batch_size={batch_size}.")

  # The clock includes placing the features and the preconditioner.
  start = time.perf_counter()
  objective = Objective(x, y, int(num_classes), l2, batch_size=batch_size,
                        strategy=strategy, precondition=precondition)
  return _minimize(objective, start, l2, max_iter, verbose, scipy_options)


def _fit_streamed(source, train_y, num_classes, *, l2, max_iter, batch_size,
                  strategy, verbose, scipy_options, precondition,
                  memory_budget_mb, prefetch):
  """`fit` on a `features.ShardedFeatures`."""
  if train_y is not None:
    raise ValueError("train_y must be None when train_x is streamed from "
                     f"disk: the labels come from {source.where}.")
  if strategy is not None and not isinstance(
      strategy, type(tf.distribute.get_strategy())):
    raise ValueError("Streamed features support the default strategy only; "
                     f"got {type(strategy).__name__}.")
  if memory_budget_mb is None or not memory_budget_mb > 0:
    raise ValueError(f"memory_budget_mb must be > 0 for features streamed "
                     f"from disk, got {memory_budget_mb!r}.")
  if max_iter < 1 or batch_size < 1:
    raise ValueError(f"max_iter and batch_size must be >= 1, got "
                     f"max_iter={max_iter}, batch_size={batch_size}.")
  dim = source.dim
  l2 = default_l2(dim, num_classes) if l2 is None else float(l2)
  if not np.isfinite(l2) or l2 < 0:
    raise ValueError(f"l2 must be finite and >= 0, got {l2}.")
  rows = _memory_rows(source, memory_budget_mb, prefetch)
  start = time.perf_counter()
  objective = StreamedObjective(source, num_classes, l2, chunk_rows=rows,
                                batch_size=batch_size,
                                precondition=precondition, prefetch=prefetch)
  return _minimize(objective, start, l2, max_iter, verbose, scipy_options)


def _minimize(objective, start, l2, max_iter, verbose, scipy_options):
  """Runs scipy's L-BFGS-B on `objective` from zero; the fit's result."""
  history = []

  def callback(intermediate_result):
    history.append((time.perf_counter() - start,
                    float(intermediate_result.fun)))
    if verbose:
      logging.info("L-BFGS iteration %d: objective %.8g (%.1fs)",
                   len(history), history[-1][1], history[-1][0])

  options = {"maxiter": int(max_iter)}
  if objective.preconditioner is not None:
    options["maxcor"] = _PRECONDITIONED_MAXCOR
  options.update(scipy_options or {})
  with _single_threaded_blas():
    res = scipy.optimize.minimize(
        objective, np.zeros(objective.size), jac=True, method="L-BFGS-B",
        callback=callback, options=options)
  seconds = time.perf_counter() - start
  w, b = objective.unpack(res.x)
  message = res.message if isinstance(res.message, str) else str(res.message)
  if verbose:
    logging.info("L-BFGS done after %d iterations, %.1fs: objective %.8g, %s",
                 res.nit, seconds, res.fun, message)
  return LogisticRegressionResult(
      weights=w.astype(np.float32), bias=b.astype(np.float32),
      objective=float(res.fun), iterations=int(res.nit), seconds=seconds,
      converged=bool(res.success), l2=l2, message=message,
      evaluations=int(res.nfev), history=history)


def predict_logits(result: LogisticRegressionResult, x) -> np.ndarray:
  """[N, C] float32 logits x W + b."""
  x = _check_features(x, "x", dim=result.weights.shape[0])
  return x @ result.weights + result.bias


def evaluate(result: LogisticRegressionResult, x, y) -> dict:
  """Top-1 and top-5 accuracy (fractions in [0, 1]) of `result` on (x, y).

  A label counts as within the top k when fewer than k classes score strictly
  higher, so ties are resolved in the model's favour, as `tf.math.in_top_k`
  does.
  """
  num_classes = result.weights.shape[1]
  x = _check_features(x, "x", dim=result.weights.shape[0])
  y = _check_labels(y, x.shape[0], num_classes, "y")
  correct = {1: 0, 5: 0}
  for start in range(0, x.shape[0], _CHUNK_ROWS):
    logits = x[start:start + _CHUNK_ROWS] @ result.weights + result.bias
    yb = y[start:start + _CHUNK_ROWS]
    true_logit = logits[np.arange(len(yb)), yb][:, None]
    rank = (logits > true_logit).sum(axis=1)
    for k in correct:
      correct[k] += int((rank < k).sum())
  n = x.shape[0]
  return dict(top1=correct[1] / n, top5=correct[5] / n, num_examples=n)
