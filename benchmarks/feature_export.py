r"""Feature export throughput against a plain forward pass of the same backbone.

A Rotation backbone (random weights: the speed does not depend on them) is
exported as `bin/pretrain` would, then, in one process and on the same digits
images rendered at --image_size:

  forward  the backbone's `--endpoint` on batches of the already preprocessed
           images held in memory (tf.function, traced before timing);
  export   `extract.FeatureExtractor.export_split`: tf.data reads and
           preprocesses the split, the backbone computes and pools the
           endpoint, features.write_split serialises, writes and hashes the
           TFRecord shards; the extractor is traced on one batch first, as
           it is after the first batch of a long export;
  cold     `extract.export_features` from the export directory, once: model
           loading and tracing included, which a few hundred images do not
           amortise.

forward and export alternate --repeats times. On a machine shared with other
work, a run is only ever slowed down by it, so the best time of each is the
least disturbed one and "x forward (best)" the headline; the medians and the
ratio per round are printed too. CPU ms/image (all threads of the process)
is another view that other work disturbs less than wall time. "s outside
batches" is the export's time not spent waiting for the next batch of
features: serialising, writing and hashing the shards (the next batches are
computed meanwhile). "s startup" is the wait for the first batch less the
backbone's time on it: a fixed cost per split (building the tf.data
pipeline, which for digits embeds its images in the graph, and
preprocessing the first batch) that a few hundred images do not amortise.

Last, the layer-wise export (--layers, Figure 5's five by default): one
export per layer against all of them from one forward pass.

  python benchmarks/feature_export.py                    # RN50 v2, 64x64
  python benchmarks/feature_export.py --image_size 112 --endpoint block4 \
      --split val --json /tmp/feature_export.json
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _setup(args, workdir):
  """(export_dir, source, spec, loaded backbone, preprocessed images)."""
  import selfsup  # pylint: disable=g-import-not-at-top
  from selfsup.preprocess import get as get_spec  # pylint: disable=g-import-not-at-top
  from selfsup.train import export_backbone  # pylint: disable=g-import-not-at-top
  from selfsup.workdir import export as export_lib  # pylint: disable=g-import-not-at-top
  task = selfsup.tasks.get(args.task, backbone=args.backbone, width=args.width,
                           image_size=args.image_size).build()
  export_dir = export_backbone(task, workdir, step=0)
  del task
  info = export_lib.load_info(export_dir)
  backbone = export_lib.load_backbone(export_dir)
  backbone.trainable = False
  source = selfsup.data.get("digits", image_size=args.image_size)
  spec = info["eval_specs"]["eval"]
  preprocess = get_spec(spec, training=False)
  images = np.stack([preprocess(e)["image"].numpy()
                     for e in source.dataset(args.split, shuffle=False)])
  return export_dir, source, spec, backbone, images


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task", default="rotation")
  parser.add_argument("--backbone", default="resnet50_v2")
  parser.add_argument("--width", type=float, default=4,
                      help="Widening factor k; 4 is the standard ResNet-50.")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--split", default="trainval",
                      help="digits split: trainval (1797), train (1438), val "
                      "(359).")
  parser.add_argument("--endpoint", default="pre_logits")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--shard_size", type=int, default=512,
                      help="Examples per shard: small, so that shard "
                      "finishing (rename, sha256, metadata) is in the timing.")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=0,
                      help="TensorFlow intra/inter-op threads; 0: all cores.")
  parser.add_argument("--layers",
                      default="block1,block2,block3,block4,pre_logits",
                      help="Layer-wise export: these layers one export each "
                      "against one pass for all; empty skips it.")
  parser.add_argument("--layer_repeats", type=int, default=1)
  parser.add_argument("--json", default="", help="Write the numbers here.")
  args = parser.parse_args()

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import extract  # pylint: disable=g-import-not-at-top
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

  tmp = tempfile.mkdtemp(prefix="feature_export_bench_")
  try:
    export_dir, source, spec, backbone, images = _setup(
        args, os.path.join(tmp, "workdir"))
    n, b = len(images), args.batch_size

    forward = tf.function(
        lambda x: backbone(x, training=False)[args.endpoint])

    def run_forward():
      for start in range(0, n, b):
        forward(images[start:start + b]).numpy()

    extractor = extract.FeatureExtractor(backbone, args.endpoint)
    runs = iter(range(10**6))
    # Time spent getting batches (tf.data, preprocessing, the backbone) vs
    # the rest of the export (serialising, writing, hashing, metadata), and
    # the wait for the first batch (building the tf.data pipeline, the first
    # batch's preprocessing): a fixed cost per split.
    in_batches, first_batch = [], []
    computed = extractor._computed  # pylint: disable=protected-access

    def timed_computed(*a):
      it, total = computed(*a), 0.0
      while True:
        t = time.perf_counter()
        batch = next(it, None)
        total += time.perf_counter() - t
        if len(first_batch) == len(in_batches):
          first_batch.append(total)
        if batch is None:
          in_batches.append(total)
          return
        yield batch

    extractor._computed = timed_computed  # pylint: disable=protected-access

    def run_export():
      out = os.path.join(tmp, f"feats{next(runs)}")
      extractor.export_split(source, args.split, out, spec=spec,
                             batch_size=b, shard_size=args.shard_size)
      shutil.rmtree(out)

    # Traces: forward for both batch shapes, the extractor for one (its
    # signature leaves the batch size open).
    forward(images[:b])
    forward(images[n - (n % b or b):])
    extractor(images[:b])

    times = {"forward": [], "export": []}
    cpu = {"forward": [], "export": []}
    for _ in range(args.repeats):
      for name, fn in (("forward", run_forward), ("export", run_export)):
        start, cpu_start = time.perf_counter(), common.cpu_seconds()
        fn()
        times[name].append(time.perf_counter() - start)
        cpu[name].append(common.cpu_seconds() - cpu_start)

    start = time.perf_counter()
    extract.export_features(export_dir, source, (args.split,),
                            os.path.join(tmp, "cold"), endpoint=args.endpoint,
                            batch_size=b, shard_size=args.shard_size)
    cold = time.perf_counter() - start
    layerwise = _layerwise(args, extract, backbone, source, spec, tmp, b)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  best = {k: min(v) for k, v in times.items()}
  med = {k: common.median(v) for k, v in times.items()}
  cpu_ms = {k: 1e3 * common.median(v) / n for k, v in cpu.items()}
  ratio = best["forward"] / best["export"]
  median_ratio = med["forward"] / med["export"]
  rows = [
      dict(what="forward (preprocessed, in memory)", median=med["forward"],
           best=best["forward"], rate=n / best["forward"], ratio=1.0,
           median_ratio=1.0, cpu_ms=cpu_ms["forward"]),
      dict(what="export (extractor traced)", median=med["export"],
           best=best["export"], rate=n / best["export"], ratio=ratio,
           median_ratio=median_ratio, cpu_ms=cpu_ms["export"],
           writing=common.median([t - b for t, b in zip(times["export"],
                                                        in_batches)]),
           # Less the backbone's time on that first batch.
           startup=common.median(first_batch) - best["forward"] * b / n),
      dict(what="export_features (cold: load+trace)", best=cold,
           rate=n / cold, ratio=best["forward"] / cold),
  ]
  print(f"{args.backbone} width {args.width:g}, {args.endpoint}, "
        f"{args.image_size}x{args.image_size}, digits:{args.split} ({n} "
        f"images), batch {b}, shards of {args.shard_size}, threads "
        f"{args.threads or 'all'} ({os.cpu_count()} cores), {args.repeats} "
        f"rounds, load average {os.getloadavg()[0]:.1f}")
  print(common.table(rows, [("what", "{}", "run"),
                            ("median", "{:.2f}", "median s"),
                            ("best", "{:.2f}", "best s"),
                            ("rate", "{:.1f}", "images/s (best)"),
                            ("ratio", "{:.3f}", "x forward (best)"),
                            ("median_ratio", "{:.3f}", "x forward (median)"),
                            ("cpu_ms", "{:.2f}", "CPU ms/image"),
                            ("writing", "{:.2f}", "s outside batches"),
                            ("startup", "{:.2f}", "s startup")]))
  per_round = [f / e for f, e in zip(times["forward"], times["export"])]
  print("export / forward per round: "
        + " ".join(f"{r:.3f}" for r in per_round)
        + f"; CPU per image forward / export: "
        f"{cpu_ms['forward'] / cpu_ms['export']:.3f}")
  common.write_json(args.json, dict(
      benchmark="feature_export", args=vars(args), num_images=n,
      forward_seconds=times["forward"], export_seconds=times["export"],
      forward_cpu_seconds=cpu["forward"], export_cpu_seconds=cpu["export"],
      export_seconds_outside_batches=[
          t - b for t, b in zip(times["export"], in_batches)],
      export_seconds_to_first_batch=first_batch, cold_export_seconds=cold,
      forward_images_per_s=n / best["forward"],
      export_images_per_s=n / best["export"], ratio=ratio,
      median_ratio=median_ratio, ratio_per_round=per_round,
      cpu_ratio=cpu_ms["forward"] / cpu_ms["export"],
      cold_ratio=best["forward"] / cold, layerwise=layerwise))


def _layerwise(args, extract, backbone, source, spec, tmp, batch_size):
  from selfsup import preprocess as selfsup_preprocess  # pylint: disable=g-import-not-at-top
  """Layer-wise export (Figure 5's five layers): one export per layer, as
  before, against all layers from one pass; alternating, best of each."""
  layers = [l for l in args.layers.split(",") if l]
  if not layers:
    return None
  one_pass = extract.FeatureExtractor(backbone, layers)
  singles = {l: extract.FeatureExtractor(backbone, l) for l in layers}
  runs = iter(range(10**6))

  def per_layer():
    for layer, extractor in singles.items():
      out = os.path.join(tmp, f"layer{next(runs)}")
      extractor.export_split(source, args.split, out, spec=spec,
                             batch_size=batch_size,
                             shard_size=args.shard_size)
      shutil.rmtree(out)

  def together():
    dirs = {l: os.path.join(tmp, f"layers{next(runs)}", l) for l in layers}
    one_pass.export_split(source, args.split, dirs, spec=spec,
                          batch_size=batch_size, shard_size=args.shard_size)
    for d in dirs.values():
      shutil.rmtree(os.path.dirname(d), ignore_errors=True)

  # Warm-up: every extractor traced once (for the image shape the
  # preprocessed split has), so neither side pays tracing in the timing.
  preprocess = selfsup_preprocess.get(spec, training=False)
  first = next(iter(source.dataset(args.split, shuffle=False)))
  image = preprocess(first)["image"][None]
  for extractor in (one_pass, *singles.values()):
    extractor(image)
  times = {"per_layer": [], "one_pass": []}
  for _ in range(args.layer_repeats):
    for name, fn in (("per_layer", per_layer), ("one_pass", together)):
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  best = {k: min(v) for k, v in times.items()}
  print(f"layer-wise export of {len(layers)} layers ({', '.join(layers)}): "
        f"one export per layer {best['per_layer']:.2f} s, one pass "
        f"{best['one_pass']:.2f} s (best of {args.layer_repeats}): "
        f"{best['per_layer'] / best['one_pass']:.2f}x")
  return dict(layers=layers, seconds=times, best=best,
              speedup=best["per_layer"] / best["one_pass"])


if __name__ == "__main__":
  main()
