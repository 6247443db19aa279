r"""lbfgs.fit on features streamed from disk against the same fit in memory.

Writes synthetic features (as lbfgs_vs_sklearn.py makes them) to a raw v2
feature cache, then runs `max_iter` L-BFGS iterations twice, each in its own
child process: in memory (features.read_split, then lbfgs.fit) and streamed
(features.ShardedFeatures with --budget_mb, features 4x or more the budget).
Reports seconds per iteration and the peak resident memory each child added
after its libraries were loaded (for the streamed fit: must stay within the
budget plus the fixed costs: the L-BFGS-B workspace ~25 M C x 8 bytes, P
M^2 x 4, TensorFlow's runtime buffers). Then a third child evaluates the two
objectives at one point in turns (--interleaved times each): a per-evaluation
ratio that a busy machine disturbs less than two fits a minute apart.

  python benchmarks/lbfgs_streaming.py
  python benchmarks/lbfgs_streaming.py --dtype float16
  python benchmarks/lbfgs_streaming.py --interleaved 0   # the fits only
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import lbfgs_vs_sklearn  # pylint: disable=g-import-not-at-top,wrong-import-position


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return common.maxrss_mb()


def _child(args):
  lbfgs_vs_sklearn._init_tf(args)  # pylint: disable=protected-access
  from selfsup.evaluation import features, lbfgs  # pylint: disable=g-import-not-at-top
  base = _rss_mb()  # now, not the peak: imports' transients peak higher
  if args.child == "interleaved":
    return _interleaved(args, features, lbfgs)
  start = time.perf_counter()
  if args.child == "memory":
    x, y = features.read_split(args.cache, "train", verify=False)
    result = lbfgs.fit(x, y, args.num_classes, max_iter=args.max_iter)
  else:
    source = features.ShardedFeatures(args.cache, "train", verify=False)
    result = lbfgs.fit(source, None, args.num_classes, max_iter=args.max_iter,
                       memory_budget_mb=args.budget_mb)
  seconds = time.perf_counter() - start
  first = result.history[0][0] if result.history else 0.0
  return dict(seconds=seconds, iterations=result.iterations,
              s_per_iteration=(result.history[-1][0] - first)
              / max(len(result.history) - 1, 1),
              objective=result.objective, fit_mb=common.maxrss_mb() - base)


def _interleaved(args, features, lbfgs):
  """Seconds per evaluation of the in-memory and the streamed objective at
  the same point, evaluated in turns."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = features.read_split(args.cache, "train", verify=False)
  source = features.ShardedFeatures(args.cache, "train", verify=False)
  l2 = lbfgs.default_l2(args.dim, args.num_classes)
  rows = lbfgs._memory_rows(source, args.budget_mb, 1)  # pylint: disable=protected-access
  objectives = {
      "memory": lbfgs.Objective(features.ArrayFeatures(x, y), args.num_classes,
                                l2, precondition=True),
      "streamed": lbfgs.Objective(source, args.num_classes, l2,
                                  precondition=True, chunk_rows=rows)}
  theta = np.random.default_rng(0).normal(
      size=objectives["memory"].size) * 0.01
  seconds = {k: [] for k in objectives}
  for _ in range(args.interleaved + 1):  # the first is a warm-up
    for name, objective in objectives.items():
      start = time.perf_counter()
      objective(theta)
      seconds[name].append(time.perf_counter() - start)
  medians = {k: float(np.median(v[1:])) for k, v in seconds.items()}
  return dict(medians, ratio=medians["streamed"] / medians["memory"],
              pair_ratio=float(np.median(np.divide(seconds["streamed"][1:],
                                                   seconds["memory"][1:]))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=20_000)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--num_classes", type=int, default=100)
  parser.add_argument("--budget_mb", type=float, default=16.0)
  parser.add_argument("--max_iter", type=int, default=15)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--threads", type=int, default=1)
  parser.add_argument("--interleaved", type=int, default=10,
                      help="Evaluations of each objective in turns (0: none).")
  parser.add_argument("--json", default="")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args)))
    return
  from selfsup.evaluation import features  # pylint: disable=g-import-not-at-top
  data_args = argparse.Namespace(
      seed=0, num_classes=args.num_classes, dim=args.dim,
      num_examples=args.num_examples, separation=2.0, decay=0.5,
      unaligned=True)
  x, y = lbfgs_vs_sklearn._make_data(data_args)  # pylint: disable=protected-access
  features_mb = x.nbytes / 2**20
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    features.write_split(cache, "train",
                         [(x[i:i + 4096], y[i:i + 4096])
                          for i in range(0, len(y), 4096)],
                         layer="synthetic", progress=False,
                         shard_format="raw", dtype=args.dtype)
    del x
    env = common.child_env(args.threads)
    runs = {}
    for which in ("memory", "streamed") + (
        ("interleaved",) if args.interleaved else ()):
      argv = [os.path.abspath(__file__), f"--child={which}",
              f"--cache={cache}"] + [
                  f"--{k}={v}" for k, v in vars(args).items()
                  if k not in ("child", "cache", "json")]
      runs[which] = common.run_child(argv, env)
  inter = runs.pop("interleaved", None)
  mem, st = runs["memory"], runs["streamed"]
  print(f"{args.num_examples} x {args.dim} x {args.num_classes} classes, "
        f"features {features_mb:.0f} MB float32 ({args.dtype} on disk), "
        f"budget {args.budget_mb:g} MB ({features_mb / args.budget_mb:.1f}x "
        f"smaller), {args.max_iter} iterations, threads {args.threads}, load "
        f"{os.getloadavg()[0]:.1f}")
  for name, r in runs.items():
    print(f"  {name:9s} {r['s_per_iteration']:.3f} s/iteration, fit "
          f"{r['fit_mb']:.0f} MB above base, objective {r['objective']:.8f}")
  ratio = st["s_per_iteration"] / mem["s_per_iteration"]
  print(f"streamed / in memory: {ratio:.2f}x per iteration; streamed fit "
        f"memory {st['fit_mb']:.0f} MB = budget {args.budget_mb:g} + "
        f"{st['fit_mb'] - args.budget_mb:.0f} MB fixed")
  if inter:
    print(f"interleaved, {args.interleaved} evaluations each: in memory "
          f"{inter['memory']:.3f} s, streamed {inter['streamed']:.3f} s "
          f"(medians): {inter['ratio']:.2f}x (median of the pairs' ratios "
          f"{inter['pair_ratio']:.2f}x)")
  common.write_json(args.json, dict(
      benchmark="lbfgs_streaming", args=vars(args), features_mb=features_mb,
      runs=runs, ratio=ratio, interleaved=inter,
      fixed_mb=st["fit_mb"] - args.budget_mb))


if __name__ == "__main__":
  main()
