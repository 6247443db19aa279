r"""selfsup's L-BFGS logistic regression against scikit-learn's, same objective.

Both minimise mean cross-entropy + lambda * ||W||^2 with lambda = 100 / (M*C)
(scikit-learn with C = 1 / (2 * lambda * N)) on synthetic features: Gaussian
class means plus noise, float32. scikit-learn runs first; then selfsup, and
the time it takes to reach scikit-learn's final objective is reported. Each
solver runs in its own process so that ru_maxrss (peak resident memory) is
its own; the peak is reported relative to the process after it made the
features, next to the features' size.

selfsup runs with scikit-learn's L-BFGS-B settings (gtol = tol, ftol =
64 eps, maxls = 50) unless --paper_options, so that only the implementations
of the objective and its gradient differ.

  python benchmarks/lbfgs_vs_sklearn.py --threads 1          # 20000 x 2048, 100
  python benchmarks/lbfgs_vs_sklearn.py --num_examples 4000 --dim 512 \
      --num_classes 20 --threads 1                           # a quick run
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHUNK = 4096


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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


def _run_sklearn(args):
  # Imported here: the selfsup child should not load scikit-learn's libraries.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  x, y = _make_data(args)
  base = _maxrss_mb()
  l2 = 100.0 / (args.dim * args.num_classes)
  c = 1.0 / (2.0 * l2 * args.num_examples)
  start = time.perf_counter()
  model = LogisticRegression(C=c, tol=args.sklearn_tol,
                             max_iter=args.max_iter).fit(x, y)
  seconds = time.perf_counter() - start
  peak = _maxrss_mb()
  return dict(seconds=seconds, iterations=int(model.n_iter_[0]),
              objective=_objective(x, y, model.coef_.T, model.intercept_, l2),
              top1=float(model.score(x, y)), base_mb=base, peak_mb=peak,
              features_mb=x.nbytes / 2**20)


def _run_selfsup(args):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import lbfgs  # pylint: disable=g-import-not-at-top
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  x, y = _make_data(args)
  base = _maxrss_mb()
  start = time.perf_counter()
  # scikit-learn's own L-BFGS-B settings, so that only the implementations of
  # the objective differ; --paper_options gives scipy's defaults instead.
  options = None if args.paper_options else dict(
      gtol=args.sklearn_tol, ftol=64 * np.finfo(float).eps, maxls=50)
  result = lbfgs.fit(x, y, args.num_classes, max_iter=args.max_iter,
                     batch_size=args.batch_size, scipy_options=options)
  seconds = time.perf_counter() - start
  peak = _maxrss_mb()
  setup = seconds - result.seconds  # input checks, placement, variables
  target = args.target * (1 + args.reach_rtol)
  reached = [t for t, f in result.history if f <= target]
  return dict(seconds=seconds, iterations=result.iterations,
              reach_seconds=setup + reached[0] if reached else None,
              reach_iteration=(1 + [f <= target for _, f in result.history]
                               .index(True)) if reached else None,
              objective=_objective(x, y, result.weights, result.bias,
                                   result.l2),
              top1=lbfgs.evaluate(result, x, y)["top1"], message=result.message,
              base_mb=base, peak_mb=peak, features_mb=x.nbytes / 2**20)


def _child(args, which, **extra):
  cmd = [sys.executable, os.path.abspath(__file__), f"--child={which}"]
  for key, value in dict(vars(args), **extra).items():
    if key in ("unaligned", "paper_options"):
      cmd += [f"--{key}"] if value else []
    elif key != "child":
      cmd.append(f"--{key}={value}")
  env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL="2")
  if args.threads:  # BLAS and OpenMP read these when they load
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
      env[var] = str(args.threads)
  out = subprocess.run(cmd, env=env, check=True, capture_output=True,
                       text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


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
  parser.add_argument("--threads", type=int, default=0,
                      help="Threads for BLAS, OpenMP and TF in both solvers; "
                      "0: their defaults. On a busy machine OpenMP's "
                      "spin-waiting makes scikit-learn many times slower "
                      "unless this is 1.")
  parser.add_argument("--paper_options", action="store_true",
                      help="selfsup with scipy's default L-BFGS-B options "
                      "(as the paper) rather than scikit-learn's.")
  parser.add_argument("--unaligned", action="store_true",
                      help="Plain np.empty features, which fit must copy.")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--target", type=float, default=0.0,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    run = _run_sklearn if args.child == "sklearn" else _run_selfsup
    print(json.dumps(run(args)))
    return

  print(f"{args.num_examples} x {args.dim} float32 features, "
        f"{args.num_classes} classes, lambda = 100/(M*C), max_iter "
        f"{args.max_iter}, sklearn tol {args.sklearn_tol:g}, threads "
        f"{args.threads or 'default'}, features "
        f"{'unaligned' if args.unaligned else 'aligned'}, selfsup with "
        f"{'scipy' if args.paper_options else 'sklearn'}'s L-BFGS options")
  sk = _child(args, "sklearn")
  ours = _child(args, "selfsup", target=sk["objective"])
  for name, r in [("sklearn", sk), ("selfsup", ours)]:
    print(f"{name:8s} {r['seconds']:8.1f}s {r['iterations']:4d} iterations  "
          f"objective {r['objective']:.8f}  train top-1 {r['top1']:.4f}  "
          f"peak RSS +{r['peak_mb'] - r['base_mb']:.0f} MB over "
          f"{r['base_mb']:.0f} MB (features {r['features_mb']:.0f} MB)")
  if ours["reach_seconds"] is None:
    print(f"selfsup never reached sklearn's objective "
          f"({ours['message']}).")
  else:
    print(f"selfsup reached sklearn's objective (rtol {args.reach_rtol:g}) "
          f"after {ours['reach_iteration']} iterations, "
          f"{ours['reach_seconds']:.1f}s vs sklearn's {sk['seconds']:.1f}s")


if __name__ == "__main__":
  main()
