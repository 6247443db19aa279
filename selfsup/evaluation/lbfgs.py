"""Multinomial logistic regression on frozen features, fit with scipy L-BFGS.

This is the paper's main linear evaluation (supplementary section 2): scipy's
L-BFGS-B with its default parameters, at most 800 iterations, minimising

  f(W, b) = 1/N * sum_i CE(softmax(x_i W + b), y_i) + lambda * ||W||_2^2

with W of shape [M, C] (M = feature size, C = classes), the bias b not
penalised, and lambda = 100 / (M * C) by default. The data term is the MEAN
cross-entropy over the N training examples, not the sum: an interpretation,
since the paper writes out only the penalty (docs/paper_vs_code.md, 7e).

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
default whitened coordinates (`coordinates.whitened`) reach the same minimum in
several times fewer iterations (benchmarks/lbfgs_vs_sklearn.py measures
both).
"""
import dataclasses
import time
from typing import Any, Mapping, Optional

from absl import logging
import numpy as np
import scipy.optimize
import tensorflow as tf

import threadpoolctl

from selfsup.core import checks
from selfsup.core import errors
from selfsup.evaluation import coordinates
from selfsup.evaluation import features
from selfsup.evaluation import host
from selfsup.core.checks import ConfigError

DEFAULT_MAX_ITER = 800
DEFAULT_BATCH_SIZE = 4096
# Rows per numpy chunk when scoring features: bounds the [rows, C] logits.
_CHUNK_ROWS = 65536
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
# Replicas' slices start at multiples of this many rows (alignment).
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


def _as_features(x, name: str, dim: Optional[int] = None) -> np.ndarray:
  """`x` as C-contiguous float32 [N, M] (no copy if it already is), or
  raises; finiteness is checked where the values are read."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ConfigError(f"{name} must be 2-D [examples, features], got shape "
                      f"{x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise ConfigError(f"{name} must hold floating point values, got dtype "
                      f"{x.dtype}.")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise ConfigError(f"{name} must have at least one example and one feature, "
                      f"got shape {x.shape}.")
  if dim is not None and x.shape[1] != dim:
    raise ConfigError(f"{name} must have {dim} features (as the fitted model), "
                      f"got shape {x.shape}.")
  return np.ascontiguousarray(x, dtype=np.float32)


def _check_finite(x: np.ndarray, name: str, first_row: int = 0):
  """Raises unless every value of `x` (rows from `first_row` of `name`) is
  finite; in blocks, so that the boolean temporary stays small."""
  rows = max(1, _CHECK_BYTES // (4 * x.shape[1]))
  for start in range(0, x.shape[0], rows):
    finite = np.isfinite(x[start:start + rows]).all(axis=1)
    if not finite.all():
      row = first_row + start + int(np.argmin(finite))
      raise errors.DataError(f"{name} must be finite; row {row} holds NaN "
                             f"or inf.")


def _check_features(x, name: str, dim: Optional[int] = None) -> np.ndarray:
  """Returns `x` as float32 [N, M] (no copy if it already is), or raises."""
  x = _as_features(x, name, dim)
  _check_finite(x, name)
  return x


def _check_label_range(low, high, num_classes: int, name: str):
  if low < 0 or high >= num_classes:
    raise errors.DataError(f"{name} must lie in [0, {num_classes}), got "
                           f"values in [{low}, {high}].")


def _check_labels(y, num_examples: int, num_classes: int, name: str,
                  check_range: bool = True):
  """Returns `y` as int32 [N], or raises."""
  y = np.asarray(y)
  if y.shape != (num_examples,):
    raise ConfigError(f"{name} must have shape ({num_examples},) to match the "
                      f"features, got {y.shape}.")
  if not np.issubdtype(y.dtype, np.integer):
    raise ConfigError(f"{name} must hold integers, got dtype {y.dtype}.")
  if check_range:
    _check_label_range(int(y.min()), int(y.max()), num_classes, name)
  return y.astype(np.int32)


def _replica_devices(strategy):
  """One device per replica; the default strategy has no list of its own."""
  try:
    return list(strategy.extended.worker_devices)
  except RuntimeError:
    gpus = tf.config.list_logical_devices("GPU")
    return [gpus[0].name if gpus else "/CPU:0"]


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
    on_host = host.host_tensor(array[bounds[i]:bounds[i + 1]])
    with tf.device(devices[i]):
      return tf.identity(on_host)

  return strategy.experimental_distribute_values_from_function(value_fn)


def _batch_sums(xb, yb, w, b, loss, grad_w_t, grad_b):
  """(loss, grad_w^T, grad_b) plus their sums over one batch of examples.

  Both matrix products of a batch run while it is in cache, and they are
  the whole cost of an evaluation (4 * N * M * C flops; the softmax is ~5%
  of it). The weight gradient is accumulated as [C, M], dlogits^T x: with
  x row-major that product runs ~25% faster in oneDNN than x^T dlogits
  ([M, C]).
  """
  num_classes = w.shape[1]
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
  return loss, grad_w_t, grad_b


def _zero_sums(dim, num_classes):
  return (tf.zeros([], tf.float64), tf.zeros([num_classes, dim], tf.float64),
          tf.zeros([num_classes], tf.float64))


def _replica_sums(x, y, w, b, batch_size: int, sums=None):
  """`sums` (None: zeros) plus the sums of `_batch_sums` over these
  examples, `batch_size` at a time: (loss, grad_w^T, grad_b), float64."""
  n = tf.shape(x)[0]

  def body(start, *sums):
    batch = slice(start, start + batch_size)
    return (start + batch_size, *_batch_sums(x[batch], y[batch], w, b, *sums))

  # A plain tf.while_loop, not autograph: converting this function took
  # ~0.25 s of the first evaluation, longer than a whole fit on small input.
  # One batch at a time: each batch's matmuls already use every thread, and
  # overlapping iterations (the default 10) only kept more [batch, C]
  # temporaries alive (8 MB of a fit's peak at 20,000 x 2,048 x 100).
  _, *sums = tf.while_loop(lambda start, *_: start < n, body,
                           (tf.constant(0), *(sums or _zero_sums(*w.shape))),
                           parallel_iterations=1)
  return tuple(sums)


def _first_pass(source, num_classes: int, rows: int, prefetch: int):
  """Reads `source` once: checks that its features are finite and its
  labels in [0, num_classes), and yields the rows of
  `coordinates.sample_ranges` (the preconditioner's sample) as it goes."""
  n, dim = source.shape
  ranges = coordinates.sample_ranges(n, dim)
  low, high, start = np.inf, -np.inf, 0
  for x, y in source.chunks(rows, prefetch):
    _check_finite(x, source.x_name, start)
    low, high = min(low, int(y.min())), max(high, int(y.max()))
    stop = start + len(x)
    for a, b in ranges:
      if a < stop and b > start:
        yield x[max(a, start) - start:min(b, stop) - start]
    start = stop
  _check_label_range(low, high, num_classes, source.y_name)


class Objective:
  """f (module docstring) and its gradient, as scipy wants them, over a
  `features.FeatureSource`.

  theta is one float64 vector in the coordinates of `coordinates`
  (`coordinates.Plain`: (W, b); `coordinates.Whitened` with
  `precondition`), which also map it to the model (`unpack`) and back
  (`pack`). Construction reads the source once (`_first_pass`: the checks
  and the preconditioner's sample).

  Where the source is in memory and read as one chunk (`chunk_rows` None or
  >= N), that chunk is placed on the strategy's replicas once, and a call is
  one TensorFlow function: theta goes in and (value, gradient) come out in
  float64, so the host does no arithmetic on the ~M * C parameters (numpy's
  fresh 1.6 MB temporaries per call cost ~10 ms at M = 2048, C = 100: 10%
  of an evaluation). Otherwise (features streamed from disk; the default
  strategy only) each call reads the source once in chunks of `chunk_rows`:
  a background thread reads and converts the next `prefetch` chunks while
  TensorFlow computes on this one, and the same per-batch sums accumulate
  across chunks in TensorFlow (float32 within a batch, float64 across
  batches and chunks), so both are the same function to float rounding.
  """

  def __init__(self, source, num_classes: int, l2: float, *,
               batch_size: int = DEFAULT_BATCH_SIZE, strategy=None,
               precondition: bool = False, chunk_rows: Optional[int] = None,
               prefetch: int = 1):
    self.source = source
    self.num_examples, self.dim = source.shape
    self.num_classes = num_classes
    self.l2 = l2
    self.chunk_rows = int(chunk_rows or self.num_examples)
    self._prefetch = prefetch
    self._strategy = strategy or tf.distribute.get_strategy()
    resident = source.resident and source.num_chunks(self.chunk_rows) == 1
    if not resident and not isinstance(
        self._strategy, type(tf.distribute.get_strategy())):
      raise ConfigError("Streamed features support the default strategy "
                        f"only; got {type(self._strategy).__name__}.")
    sample = _first_pass(source, num_classes, self.chunk_rows, prefetch)
    if precondition:
      self.coordinates = coordinates.whitened(sample, self.dim, num_classes,
                                              l2)
    else:
      for _ in sample:
        pass
      self.coordinates = coordinates.Plain(self.dim, num_classes)
    self._batch_size = batch_size
    self._value_and_grad = (self._resident() if resident
                            else self._streamed())

  @property
  def preconditioner(self):
    """(P, mu) of whitened coordinates, or None."""
    return self.coordinates.preconditioner

  @property
  def size(self) -> int:
    return self.coordinates.size

  def unpack(self, theta: np.ndarray):
    """(W, b) of the model at `theta`, float64."""
    return self.coordinates.unpack(theta)

  def pack(self, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta of the model (W, b)."""
    return self.coordinates.pack(w, b)

  @property
  def shards(self):
    """[(device, rows)] of the features held by each replica (in memory)."""
    return [(t.device, int(t.shape[0]))
            for t in self._strategy.experimental_local_results(self._x)]

  def _finish(self, w64, loss, grad_w_t, grad_b):
    """(value, d value / d theta) from the data sums (in a graph): the
    penalty and its gradient come from scipy's own float64 theta."""
    inv_n = 1.0 / self.num_examples
    value = loss * inv_n + self.l2 * tf.reduce_sum(tf.square(w64))
    grad_w = tf.transpose(grad_w_t) * inv_n + (2.0 * self.l2) * w64
    return value, self.coordinates.gradient(grad_w, grad_b * inv_n)

  def _theta_spec(self):
    return tf.TensorSpec([self.size], tf.float64)

  def _resident(self):
    """One function of theta over the chunk placed on the replicas."""
    x, y = next(iter(self.source.chunks(self.num_examples, 0)))
    strategy = self._strategy
    self._x = _distribute(strategy, x)
    self._y = _distribute(strategy, np.asarray(y, np.int32))

    @tf.function(input_signature=[self._theta_spec()], autograph=False)
    def value_and_grad(theta):
      w32, b32, w64 = self.coordinates.model(theta)
      # Each replica reads the float32 parameters (0.8 MB at M = 2048,
      # C = 100) from the host: cheaper than a synchronised variable.
      per_replica = strategy.run(_replica_sums, args=(
          self._x, self._y, w32, b32, self._batch_size))
      return self._finish(w64, *[
          strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)
          for t in per_replica])

    return value_and_grad

  def _streamed(self):
    """theta -> (value, gradient), reading the source once per call.

    The model's parameters and the running sums are variables, so that a
    chunk's call passes only the chunk: a call with the parameters and sums
    as arguments cost ~0.5 ms of CPU more (argument handling and fresh
    800 KB outputs), ~10% of a streamed evaluation at 1,023-row chunks.
    """
    dim, num_classes = self.dim, self.num_classes
    params = [tf.Variable(tf.zeros([dim, num_classes]), trainable=False),
              tf.Variable(tf.zeros([num_classes]), trainable=False)]
    sums = [tf.Variable(t, trainable=False)
            for t in _zero_sums(dim, num_classes)]

    @tf.function(input_signature=[self._theta_spec()], autograph=False)
    def start(theta):
      w32, b32, w64 = self.coordinates.model(theta)
      params[0].assign(w32)
      params[1].assign(b32)
      for total in sums:
        total.assign(tf.zeros_like(total))
      return w64

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32),
                                  tf.TensorSpec([None], tf.int32)],
                 autograph=False)
    def add_chunk(x, y):
      chunk = _replica_sums(x, y, params[0], params[1], self._batch_size)
      for total, value in zip(sums, chunk):
        total.assign_add(value)

    @tf.function(input_signature=[
        tf.TensorSpec([dim, num_classes], tf.float64)], autograph=False)
    def finish(w64):
      return self._finish(w64, *[total.read_value() for total in sums])

    def value_and_grad(theta):
      w64 = start(theta)
      for x, y in self._placed_chunks():
        add_chunk(x, y)
      return finish(w64)

    return value_and_grad

  def _placed_chunks(self):
    """The source's chunks as tensors. The source reads and converts them in
    a background thread `prefetch` chunks ahead, into recycled buffers
    (each chunk is done with when the next is asked for): the main thread
    only computes."""
    for x, y in self.source.chunks(self.chunk_rows, self._prefetch,
                                   recycle=True):
      yield host.host_tensor(x), tf.constant(np.asarray(y, np.int32))

  def __call__(self, theta: np.ndarray):
    value, grad = self._value_and_grad(
        tf.constant(np.asarray(theta, np.float64)))
    return float(value), grad.numpy()


def _memory_rows(source, memory_budget_mb: float, prefetch: int) -> int:
  """Rows per chunk so that the chunks in flight fit the budget."""
  per_row = source.chunk_bytes(1, prefetch)
  rows = int(memory_budget_mb * 2**20 // max(per_row, 1))
  if rows < 1:
    raise checks.ConfigError(
        f"memory_budget_mb={memory_budget_mb} holds no chunk of one row "
        f"({per_row} bytes with prefetch {prefetch}).")
  return min(rows, source.num_examples)


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
      converted (a copy). Must be finite. Or a `features.FeatureSource`, e.g.
      a `features.ShardedFeatures` (features and labels left on disk,
      streamed once per evaluation; then `memory_budget_mb` must be given);
      then `train_y` must be None.
    train_y: [N] integer labels in [0, num_classes); None with a
      `FeatureSource`, whose labels are used.
    num_classes: C, at least 2.
    l2: lambda of the penalty lambda * ||W||^2; default 100 / (M * C).
    max_iter: L-BFGS iterations at most (the paper's 800).
    batch_size: examples per matrix product inside one evaluation; bounds the
      [batch, C] temporaries, not the result.
    strategy: a `tf.distribute.Strategy` whose replicas each hold a slice of
      the features (in memory only); default: the current strategy.
    verbose: log objective and gradient norm at every iteration.
    scipy_options: overrides of scipy's L-BFGS-B options (e.g. `gtol`,
      `ftol`, `maxcor`); the paper used the defaults. Preconditioned fits
      default to maxcor 5 (scipy's is 10): the same minimum in about as many
      iterations with half L-BFGS-B's workspace.
    precondition: run L-BFGS in whitened coordinates
      (`coordinates.whitened`): the same objective and minimum in several
      times fewer iterations. False: plain L-BFGS on (W, b), as the paper.
    memory_budget_mb: streamed fits only: MiB for the feature chunks in
      flight (read ahead, converted, being computed on); the fit's memory is
      this plus fixed costs (the L-BFGS-B workspace, ~25 * M * C * 8 bytes;
      P, M * M * 4; TensorFlow's runtime).
    prefetch: streamed fits only: chunks read ahead of the computation.

  Returns:
    A `LogisticRegressionResult`.

  Raises:
    selfsup.core.errors.DataError (a ValueError): non-finite features or
      labels out of range (what a damaged or mismatched cache gives).
    ValueError: empty or misshaped input, or a non-positive setting.
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ConfigError(f"num_classes must be an integer >= 2, got "
                      f"{num_classes!r}.")
  num_classes = int(num_classes)
  source, rows = _training_source(train_x, train_y, num_classes,
                                  memory_budget_mb, prefetch)
  l2 = default_l2(source.dim, num_classes) if l2 is None else float(l2)
  if not np.isfinite(l2) or l2 < 0:
    raise ConfigError(f"l2 must be finite and >= 0, got {l2}.")
  if max_iter < 1 or batch_size < 1:
    raise ConfigError(f"max_iter and batch_size must be >= 1, got "
                      f"max_iter={max_iter}, batch_size={batch_size}.")
  # The clock includes the first pass, placing the features and the
  # preconditioner.
  start = time.perf_counter()
  objective = Objective(source, num_classes, l2, batch_size=batch_size,
                        strategy=strategy, precondition=precondition,
                        chunk_rows=rows, prefetch=prefetch)
  return _minimize(objective, start, l2, max_iter, verbose, scipy_options)


def _training_source(train_x, train_y, num_classes, memory_budget_mb,
                     prefetch):
  """`fit`'s input as a `FeatureSource` and the rows per chunk to read."""
  if isinstance(train_x, features.FeatureSource):
    if train_y is not None:
      raise ConfigError(f"train_y must be None when train_x is a "
                        f"FeatureSource: the labels come from "
                        f"{train_x.y_name}.")
    if train_x.resident and memory_budget_mb is None:
      return train_x, None
    if memory_budget_mb is None or not memory_budget_mb > 0:
      raise ConfigError(f"memory_budget_mb must be > 0 for features streamed "
                        f"from disk, got {memory_budget_mb!r}.")
    return train_x, _memory_rows(train_x, memory_budget_mb, prefetch)
  if memory_budget_mb is not None:
    raise ConfigError("memory_budget_mb applies to features streamed from "
                      "disk (features.ShardedFeatures), not to an in-memory "
                      "train_x.")
  x = _as_features(train_x, "train_x")
  y = _check_labels(train_y, x.shape[0], num_classes, "train_y",
                    check_range=False)  # the first pass checks the range
  return features.ArrayFeatures(x, y, x_name="train_x", y_name="train_y"), None


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

  A label counts as within the top k only when fewer than k other classes
  score at least as high: ties count against the model (unlike
  `tf.math.in_top_k`), so constant or collapsed logits score at or below
  chance rather than 100%, and a NaN score is never correct.
  """
  num_classes = result.weights.shape[1]
  x = _check_features(x, "x", dim=result.weights.shape[0])
  y = _check_labels(y, x.shape[0], num_classes, "y")
  correct = {1: 0, 5: 0}
  for start in range(0, x.shape[0], _CHUNK_ROWS):
    logits = x[start:start + _CHUNK_ROWS] @ result.weights + result.bias
    yb = y[start:start + _CHUNK_ROWS]
    true_logit = logits[np.arange(len(yb)), yb][:, None]
    # `not <` counts NaN scores as beating the label; minus the label itself.
    rank = (~(logits < true_logit)).sum(axis=1) - 1
    valid = ~np.isnan(true_logit[:, 0])
    for k in correct:
      correct[k] += int(((rank < k) & valid).sum())
  n = x.shape[0]
  return dict(top1=correct[1] / n, top5=correct[5] / n, num_examples=n)
