r"""selfsup's L-BFGS logistic regression against scikit-learn's, same objective.

Both minimise mean cross-entropy + lambda * ||W||^2 with lambda = 100 / (M*C)
(scikit-learn with C = 1 / (2 * lambda * N)) on synthetic float32 features
(Gaussian class means plus noise with a decaying spectrum), from zero.
scikit-learn runs first, to its tol; then selfsup, and the time it takes to
reach scikit-learn's final objective (both recomputed in float64 numpy) is
compared with scikit-learn's time. selfsup runs with scikit-learn's L-BFGS-B
settings (gtol = tol, ftol = 64 eps, maxls = 50) unless --paper_options:
both are driven by the same scipy L-BFGS-B on the same objective, so what
differs is the cost of an evaluation and, with selfsup's preconditioner (the
default; --no_precondition turns it off), the path: fewer iterations to the
same minimum. The selfsup child also times the two feature matmuls alone
(same threads) and reports seconds per iteration against them.

Each solver runs in its own process so that ru_maxrss (peak resident memory)
is its own; "fit MB" is the peak over the process after it made the features
and initialised its libraries. --repeats alternates the two; medians are
reported. Inside each child the time spent in the objective (loss and
gradient, counted per evaluation) is separated from the rest (scipy's
L-BFGS-B, input checks, setup). Both objectives cost 4*N*M*C flops (two
matrix products) per evaluation; GF/s is that over the objective's time.
Last, two more children evaluate their objectives at one point in turns
(--interleaved times each): a per-evaluation ratio that a busy machine
disturbs less than whole runs minutes apart.

  python benchmarks/lbfgs_vs_sklearn.py                 # one core each
  python benchmarks/lbfgs_vs_sklearn.py --threads 0     # all cores for both
  python benchmarks/lbfgs_vs_sklearn.py --openblas_coretype ''  # OpenBLAS
      # picks its kernels for this CPU (AVX-512), not OPENBLAS_CORETYPE's
  python benchmarks/lbfgs_vs_sklearn.py --num_examples 4000 --dim 512 \
      --num_classes 20 --repeats 1                      # a quick run
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_CHUNK = 4096


def _make_data(args):
  """Overlapping Gaussian classes, generated in chunks, straight to float32.

  The class means have norm ~`separation` and the noise is unit per
  dimension, before dimension j is scaled by (1 + j) ** -decay (normalised).
  """
  rng = np.random.default_rng(args.seed)
  means = rng.standard_normal((args.num_classes, args.dim), np.float32)
  means *= args.separation / np.sqrt(args.dim)
  y = rng.integers(0, args.num_classes, size=args.num_examples)
  # A decaying spectrum, as CNN features have: it makes the problem
  # ill-conditioned, so that L-BFGS needs many iterations as on real features.
  scales = (1.0 + np.arange(args.dim, dtype=np.float32)) ** -args.decay
  scales /= np.sqrt(np.mean(scales ** 2))  # same total variance as decay=0
  if args.unaligned:
    x = np.empty((args.num_examples, args.dim), np.float32)
  else:  # 64-byte aligned, as features.read_split returns them: fit copies none
    buf = np.empty(args.num_examples * args.dim * 4 + 64, np.uint8)
    offset = (-buf.ctypes.data) % 64
    x = buf[offset:offset + args.num_examples * args.dim * 4].view(
        np.float32).reshape(args.num_examples, args.dim)
  for s in range(0, args.num_examples, _CHUNK):
    e = min(s + _CHUNK, args.num_examples)
    x[s:e] = rng.standard_normal((e - s, args.dim), np.float32)
    x[s:e] += means[y[s:e]]
    x[s:e] *= scales
  return x, y


def _objective(x, y, w, b, l2):
  """The shared objective in float64 numpy, chunked to bound memory."""
  total = 0.0
  for s in range(0, len(y), _CHUNK):
    logits = x[s:s + _CHUNK].astype(np.float64) @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=1))
    total += float((log_z - logits[np.arange(len(logits)), y[s:s + _CHUNK]])
                   .sum())
  return total / len(y) + l2 * float(np.sum(np.square(w, dtype=np.float64)))


def _l2(args):
  return 100.0 / (args.dim * args.num_classes)


def _blas():
  """The BLAS libraries loaded and how they run (threadpoolctl)."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  return [dict(lib=os.path.basename(i["filepath"]), arch=i.get("architecture"),
               threads=i["num_threads"])
          for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


class _Timed:
  """Wraps `cls.name` to count calls and add up their wall time.

  `trace` holds the time at the end of each call, `values` what the call
  returned first (the objective), as a float.
  """

  def __init__(self, cls, name):
    self.calls, self.seconds, self.trace, self.values = 0, 0.0, [], []
    original = getattr(cls, name)
    timed = self

    def wrapper(*args, **kwargs):
      start = time.perf_counter()
      out = original(*args, **kwargs)
      timed.calls += 1
      timed.seconds += time.perf_counter() - start
      timed.trace.append(time.perf_counter())
      timed.values.append(float(out[0]))
      return out

    setattr(cls, name, wrapper)


def _sklearn_loss_class():
  # Private, but the one place all of LogisticRegression's lbfgs evaluations
  # go through (scikit-learn 1.1 to 1.9).
  from sklearn.linear_model import _linear_loss  # pylint: disable=g-import-not-at-top
  return _linear_loss.LinearModelLoss


def _run_sklearn(args):
  # Imported here: the selfsup child should not load scikit-learn's libraries.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  x, y = _make_data(args)
  timed = _Timed(_sklearn_loss_class(), "loss_gradient")
  base = common.maxrss_mb()
  c = 1.0 / (2.0 * _l2(args) * args.num_examples)
  cpu, start = common.cpu_seconds(), time.perf_counter()
  model = LogisticRegression(C=c, tol=args.sklearn_tol,
                             max_iter=args.max_iter).fit(x, y)
  seconds = time.perf_counter() - start
  # Its loss_gradient returns the mean loss + 0.5 / (C N) ||W||^2: our
  # objective, per evaluation (line search trials included).
  history = [(t - start, v) for t, v in zip(timed.trace, timed.values)]
  cpu = common.cpu_seconds() - cpu
  peak = common.maxrss_mb()
  return dict(seconds=seconds, cpu_seconds=cpu,
              iterations=int(model.n_iter_[0]),
              evaluations=timed.calls, objective_seconds=timed.seconds,
              objective=_objective(x, y, model.coef_.T, model.intercept_,
                                   _l2(args)),
              top1=float(model.score(x, y)), base_mb=base, peak_mb=peak,
              features_mb=x.nbytes / 2**20, blas=_blas(),
              history=history)


def _matmul_seconds(tf, x, num_classes, repeats=3):
  """Median seconds of the two products of one evaluation, x W and D^T x.

  The lower bound on an L-BFGS iteration (one evaluation): measured in the
  same process, on the same features and threads as the fit.
  """
  xt = tf.experimental.dlpack.from_dlpack(x.__dlpack__())
  w = tf.random.normal([x.shape[1], num_classes], stddev=0.01)
  d = tf.random.normal([x.shape[0], num_classes])

  @tf.function
  def two(xt, w, d):
    return (tf.reduce_sum(tf.matmul(xt, w))
            + tf.reduce_sum(tf.matmul(d, xt, transpose_a=True)))

  two(xt, w, d).numpy()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    two(xt, w, d).numpy()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def _init_tf(args):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  # The runtime's own memory (thread pools, oneDNN) belongs in the base.
  a = tf.ones([64, 64])
  tf.matmul(a, a).numpy()
  return tf


def _run_selfsup(args):
  tf = _init_tf(args)
  from selfsup.evaluation import lbfgs  # pylint: disable=g-import-not-at-top
  x, y = _make_data(args)
  timed = _Timed(lbfgs.Objective, "__call__")
  base = common.maxrss_mb()
  # scikit-learn's own L-BFGS-B settings, so that only the implementations of
  # the objective differ; --paper_options gives scipy's defaults instead.
  options = None if args.paper_options else dict(
      gtol=args.sklearn_tol, ftol=64 * np.finfo(float).eps, maxls=50)
  cpu, start = common.cpu_seconds(), time.perf_counter()
  result = lbfgs.fit(x, y, args.num_classes, max_iter=args.max_iter,
                     batch_size=args.batch_size, scipy_options=options,
                     precondition=not args.no_precondition)
  seconds = time.perf_counter() - start
  cpu = common.cpu_seconds() - cpu
  peak = common.maxrss_mb()
  fit_start = start + (seconds - result.seconds)  # after checks and setup
  target = args.target * (1 + args.reach_rtol)
  reach = next((i for i, (_, f) in enumerate(result.history) if f <= target),
               None)
  out = dict(seconds=seconds, cpu_seconds=cpu, iterations=result.iterations,
             evaluations=result.evaluations, objective_seconds=timed.seconds,
             reach_seconds=None, reach_iteration=None, reach_evaluations=None,
             objective=_objective(x, y, result.weights, result.bias,
                                  result.l2),
             top1=lbfgs.evaluate(result, x, y)["top1"],
             message=result.message, base_mb=base, peak_mb=peak,
             features_mb=x.nbytes / 2**20, blas=_blas())
  if reach is not None:
    reached_at = fit_start + result.history[reach][0]
    out.update(reach_seconds=reached_at - start, reach_iteration=reach + 1,
               reach_evaluations=sum(t <= reached_at for t in timed.trace))
  # After the fit, so that its peak memory is the fit's own.
  out["matmul_seconds"] = _matmul_seconds(tf, x, args.num_classes)
  if reach is not None:
    # Seconds per iteration up to the target against the two products an
    # iteration cannot do without: from the fit's start (placing the
    # features, the preconditioner and the first trace included), and
    # steady (after the first iteration).
    history = result.history
    out["s_per_iteration"] = history[reach][0] / (reach + 1)
    out["bound_ratio"] = out["s_per_iteration"] / out["matmul_seconds"]
    if reach:
      out["s_per_iteration_steady"] = (history[reach][0] - history[0][0]) / reach
      out["steady_bound_ratio"] = (out["s_per_iteration_steady"]
                                   / out["matmul_seconds"])
  out["history"] = result.history
  return out


def _serve_evaluations(args):
  """Evaluates one objective each time a line arrives on stdin.

  Both solvers run as such servers, side by side, and the parent asks them
  in turn, pausing between requests so that neither's idle threads (which
  spin for a while after work) overlap the other's evaluation. The point is
  the same random one for both, in each solver's own parameter layout.
  """
  x, y = _make_data(args)
  m, c = x.shape[1], args.num_classes
  rng = np.random.default_rng(1)
  w = rng.standard_normal((m, c)) * 0.01
  b = rng.standard_normal(c) * 0.01
  if args.child == "serve_sklearn":
    from sklearn._loss.loss import HalfMultinomialLoss  # pylint: disable=g-import-not-at-top
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads  # pylint: disable=g-import-not-at-top
    loss = _sklearn_loss_class()(base_loss=HalfMultinomialLoss(n_classes=c),
                                 fit_intercept=True)
    # Its lbfgs layout: [C, M + 1] in Fortran order; its penalty is
    # 0.5 * l2_reg * ||W||^2 with l2_reg = 1 / (C * N) = 2 * lambda.
    coef = np.concatenate([w.T, b[:, None]], axis=1).ravel(order="F")
    y_float, threads = y.astype(np.float32), _openmp_effective_n_threads()

    def evaluate():
      return loss.loss_gradient(coef, x, y_float, None, 2 * _l2(args),
                                threads)[0]
  else:
    _init_tf(args)
    # pylint: disable-next=g-import-not-at-top
    from selfsup.evaluation import features, lbfgs
    objective = lbfgs.Objective(
        features.ArrayFeatures(x, y.astype(np.int32)), c, _l2(args),
        batch_size=args.batch_size)
    theta = np.concatenate([w.ravel(), b])

    def evaluate():
      return objective(theta)[0]
  value = evaluate()  # warm up
  print(json.dumps(dict(ready=True)), flush=True)
  for _ in sys.stdin:
    start = time.perf_counter()
    value = evaluate()
    print(json.dumps(dict(seconds=time.perf_counter() - start, value=value)),
          flush=True)


def _interleaved(args):
  """{solver: [seconds per evaluation]} from the two servers, in turns."""
  names = ("sklearn", "selfsup")
  servers = {k: _child(args, f"serve_{k}", serve=True) for k in names}
  try:
    for proc in servers.values():
      json.loads(proc.stdout.readline())  # data made, warmed up
    times, values = {k: [] for k in names}, {}
    for _ in range(args.interleaved):
      for k, proc in servers.items():
        time.sleep(0.3)
        proc.stdin.write("eval\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        times[k].append(reply["seconds"])
        values[k] = reply["value"]
  finally:
    for proc in servers.values():
      proc.stdin.close()
      proc.wait(timeout=60)
  return dict(times, values=values)


def _child(args, which, serve=False, **extra):
  """Runs a child to its JSON result, or starts a server child (serve)."""
  argv = [os.path.abspath(__file__), f"--child={which}"]
  for key, value in dict(vars(args), **extra).items():
    if key == "also_plain":
      continue
    if key in ("unaligned", "paper_options", "no_precondition"):
      argv += [f"--{key}"] if value else []
    elif key not in ("child", "json"):
      argv.append(f"--{key}={value}")
  coretype = {} if args.openblas_coretype == "inherit" else dict(
      OPENBLAS_CORETYPE=args.openblas_coretype or None)
  env = common.child_env(args.threads, **coretype)
  if serve:
    return subprocess.Popen([sys.executable, *argv], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  return common.run_child(argv, env)


def _fmt_ratio(value):
  return "never" if value is None else f"{value:.2f}x"


def _summary(runs, key):
  """The median over runs of a number; the first run's value otherwise."""
  values = [r[key] for r in runs if r.get(key) is not None]
  if values and all(isinstance(v, (int, float)) for v in values):
    return common.median(values)
  return values[0] if values else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=20_000)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--num_classes", type=int, default=100)
  parser.add_argument("--separation", type=float, default=2.0,
                      help="Norm of the class means; the noise is N(0, 1) per "
                      "dimension.")
  parser.add_argument("--decay", type=float, default=0.5,
                      help="Feature dimension j is scaled by (1+j)**-decay.")
  parser.add_argument("--max_iter", type=int, default=800)
  parser.add_argument("--sklearn_tol", type=float, default=1e-6,
                      help="scikit-learn's tol (its default is 1e-4, which "
                      "stops it early).")
  parser.add_argument("--batch_size", type=int, default=4096)
  parser.add_argument("--reach_rtol", type=float, default=1e-6,
                      help="Relative slack on 'reached sklearn's objective'.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=1,
                      help="Threads for BLAS, OpenMP and TF in both solvers; "
                      "0: each library's default (all cores). One is the "
                      "default because on 2 cores shared with other work "
                      "OpenBLAS's spinning threads make scikit-learn's "
                      "2-thread runs erratic (2-5x slower than 1 thread, "
                      "varying from run to run).")
  parser.add_argument("--openblas_coretype", default="inherit",
                      help="OPENBLAS_CORETYPE for both children ('' unsets "
                      "it, letting OpenBLAS pick the kernels for this CPU); "
                      "inherit: as in this environment.")
  parser.add_argument("--repeats", type=int, default=2,
                      help="Alternating runs of each solver; medians shown.")
  parser.add_argument("--interleaved", type=int, default=10,
                      help="Evaluations of each objective in the interleaved "
                      "child; 0 skips it.")
  parser.add_argument("--paper_options", action="store_true",
                      help="selfsup with scipy's default L-BFGS-B options "
                      "(as the paper) rather than scikit-learn's.")
  parser.add_argument("--no_precondition", action="store_true",
                      help="selfsup without its whitening preconditioner "
                      "(plain L-BFGS on (W, b), as the paper).")
  parser.add_argument("--also_plain", action="store_true",
                      help="After each selfsup run, one without the "
                      "preconditioner: its time and peak memory too.")
  parser.add_argument("--unaligned", action="store_true",
                      help="Plain np.empty features, which fit must copy.")
  parser.add_argument("--json", default="", help="Write the numbers here.")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--target", type=float, default=0.0,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    if args.child.startswith("serve_"):
      _serve_evaluations(args)
      return
    run = dict(sklearn=_run_sklearn, selfsup=_run_selfsup)[args.child]
    print(json.dumps(run(args)))
    return

  n, m, c = args.num_examples, args.dim, args.num_classes
  flops = 4.0 * n * m * c
  coretype = (os.environ.get("OPENBLAS_CORETYPE")
              if args.openblas_coretype == "inherit"
              else args.openblas_coretype) or "unset"
  threads = args.threads or f"default (all {os.cpu_count()} cores)"
  print(f"{n} x {m} float32 features, {c} classes, lambda = 100/(M*C), "
        f"max_iter {args.max_iter}, sklearn tol {args.sklearn_tol:g}, threads "
        f"{threads}, features {'unaligned' if args.unaligned else 'aligned'}, "
        f"selfsup with {'scipy' if args.paper_options else 'sklearn'}'s "
        f"L-BFGS options, OPENBLAS_CORETYPE {coretype}, "
        f"{flops / 1e9:.1f} GFLOP per evaluation, load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)
  runs = {"sklearn": [], "selfsup": []}
  if args.also_plain and not args.no_precondition:
    runs["selfsup_plain"] = []
  for _ in range(args.repeats):
    runs["sklearn"].append(_child(args, "sklearn"))
    target = runs["sklearn"][-1]["objective"]
    runs["selfsup"].append(_child(args, "selfsup", target=target))
    if "selfsup_plain" in runs:
      runs["selfsup_plain"].append(_child(args, "selfsup", target=target,
                                          no_precondition=True))
  rows = []
  for name, rs in runs.items():
    row = {k: _summary(rs, k) for k in rs[0]}
    row.update(name=name, fit_mb=row["peak_mb"] - row["base_mb"])
    row["s_per_eval"] = row["objective_seconds"] / row["evaluations"]
    row["gflops"] = flops / row["s_per_eval"] / 1e9
    row["rest_seconds"] = row["seconds"] - row["objective_seconds"]
    row["peak_x_features"] = (row["features_mb"] + row["fit_mb"]) / row[
        "features_mb"]
    rows.append(row)
  print(common.table(rows, [
      ("name", "{}", "solver"), ("seconds", "{:.1f}", "fit s"),
      ("iterations", "{:.0f}", "iters"), ("evaluations", "{:.0f}", "evals"),
      ("objective_seconds", "{:.1f}", "in objective s"),
      ("s_per_eval", "{:.3f}", "s/eval"), ("gflops", "{:.0f}", "GF/s"),
      ("rest_seconds", "{:.1f}", "rest s"),
      ("objective", "{:.8f}", "objective"), ("top1", "{:.4f}", "train top1"),
      ("fit_mb", "{:.0f}", "fit MB"),
      ("peak_x_features", "{:.2f}", "(features+fit)/features")]))
  sk, ours = rows[:2]
  print(f"features {sk['features_mb']:.0f} MB; BLAS: sklearn "
        f"{runs['sklearn'][0]['blas']}, selfsup {runs['selfsup'][0]['blas']}")
  ratios = [s["seconds"] / o["reach_seconds"]
            for s, o in zip(runs["sklearn"], runs["selfsup"])
            if o["reach_seconds"]]
  if not ratios:
    print(f"selfsup never reached sklearn's objective "
          f"({runs['selfsup'][0]['message']}).")
  else:
    print(f"selfsup reached sklearn's objective (rtol {args.reach_rtol:g}) "
          f"after {ours['reach_iteration']:.0f} iterations "
          f"({ours['reach_evaluations']:.0f} evaluations), "
          f"{ours['reach_seconds']:.1f}s vs sklearn's {sk['seconds']:.1f}s "
          f"({sk['iterations']:.0f} iterations): {common.median(ratios):.2f}x "
          f"faster (per run: {' '.join(f'{r:.2f}' for r in ratios)})")
  if ours.get("bound_ratio"):
    print(f"selfsup per iteration up to sklearn's objective: "
          f"{ours['s_per_iteration']:.3f}s; its two matrix products alone "
          f"{ours['matmul_seconds']:.3f}s ({flops / ours['matmul_seconds'] / 1e9:.0f}"
          f" GF/s): {ours['bound_ratio']:.2f}x the matmul bound; after "
          f"the first iteration {ours.get('s_per_iteration_steady', 0):.3f}s"
          f" = {ours.get('steady_bound_ratio', 0):.2f}x")
  interleaved = None
  if args.interleaved:
    interleaved = _interleaved(args)
    t_sk = common.median(interleaved["sklearn"])
    t_ours = common.median(interleaved["selfsup"])
    print(f"one evaluation, interleaved x{args.interleaved}: sklearn "
          f"{t_sk * 1e3:.0f} ms ({flops / t_sk / 1e9:.0f} GF/s), selfsup "
          f"{t_ours * 1e3:.0f} ms ({flops / t_ours / 1e9:.0f} GF/s): "
          f"{t_sk / t_ours:.2f}x (values {interleaved['values']['sklearn']:.8f}"
          f" and {interleaved['values']['selfsup']:.8f})")
  plain = None
  if "selfsup_plain" in runs:
    plain = rows[2]
    reach = [s["seconds"] / o["reach_seconds"]
             for s, o in zip(runs["sklearn"], runs["selfsup_plain"])
             if o["reach_seconds"]]
    plain["speedup"] = common.median(reach) if reach else None
    print(f"selfsup without the preconditioner: {plain['iterations']:.0f} "
          f"iterations, {plain['seconds']:.1f}s, reached sklearn's objective "
          f"{_fmt_ratio(plain['speedup'])} faster; peak "
          f"{plain['peak_x_features']:.2f}x the features")
  common.write_json(args.json, dict(
      benchmark="lbfgs_vs_sklearn", args=vars(args),
      flops_per_evaluation=flops, runs=runs, rows=rows, plain=plain,
      speedup=common.median(ratios) if ratios else None,
      speedup_per_run=ratios, interleaved=interleaved))


if __name__ == "__main__":
  main()
