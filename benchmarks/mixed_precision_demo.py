r"""Does the loss still fall with mixed_bfloat16? The offline demo, both ways.

Runs the demo's Rotation pretraining (gin/rotation.gin + gin/demo.gin:
digits at 32x32, ResNet50 v2 width 0.5) for --epochs in float32 and in
mixed_bfloat16 from the same seed, one process each, and prints the mean
training loss of the first and the last loop (steps_per_loop steps each), the
pretext accuracy on the held-out split at the end, and images/s.

    python benchmarks/mixed_precision_demo.py --epochs 3 --json /tmp/mp.json
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _child(epochs, mixed):
  import gin  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from selfsup.train import experiment  # pylint: disable=g-import-not-at-top
  from tests import training_runs  # pylint: disable=g-import-not-at-top
  gin.parse_config_files_and_bindings(
      [os.path.join(REPO, "gin", "rotation.gin"),
       os.path.join(REPO, "gin", "demo.gin")],
      [f"TrainConfig.epochs = {epochs}", "TrainConfig.decay_epochs = ()",
       f"TrainConfig.mixed_precision = {mixed}"])
  workdir = tempfile.mkdtemp(prefix="selfsup_mp_demo_")
  trainer = experiment.prepare(workdir)
  start = time.perf_counter()
  trainer.train()
  seconds = time.perf_counter() - start
  losses = training_runs.scalars(workdir)
  steps = sorted(losses)
  accuracy = trainer.evaluate("val", num_batches=5)
  images = trainer.step * trainer.config.batch_size * 4
  return dict(mixed_precision=mixed, steps=trainer.step,
              loss_first_loop=losses[steps[0]], loss_last_loop=losses[steps[-1]],
              losses=[losses[s] for s in steps], val=accuracy,
              images_per_s=images / seconds, seconds=seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--json", default="")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.epochs, args.child == "bf16")))
    return
  rows = []
  for kind in ("f32", "bf16"):
    row = common.run_child([os.path.abspath(__file__), f"--child={kind}",
                            f"--epochs={args.epochs}"], timeout=600)
    row["name"] = kind
    rows.append(row)
  print(common.table(rows, [
      ("name", "{}", "dtype policy"), ("steps", "{}", "steps"),
      ("loss_first_loop", "{:.3f}", "loss, first loop"),
      ("loss_last_loop", "{:.3f}", "loss, last loop"),
      ("images_per_s", "{:.0f}", "images/s")]))
  for row in rows:
    print(row["name"], "val", {k: round(v, 3) for k, v in row["val"].items()})
  common.write_json(args.json, dict(benchmark="mixed_precision_demo",
                                    epochs=args.epochs, rows=rows))


if __name__ == "__main__":
  main()
