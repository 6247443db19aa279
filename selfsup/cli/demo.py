"""The demo: does self-supervised pretraining teach features a linear model
can use? Pretrains a task, evaluates every layer with L-BFGS logistic
regression, does the same for the backbone left at its random
initialisation (batch-norm statistics measured on the data, weights
untouched), and prints one table and a verdict.

    bin/demo [TASK] [WORKDIR] [--data=fashion_mnist|digits] [--download]
    selfsup-demo ...          (the same, installed from a wheel)

TASK: rotation (default), exemplar, relative_patch_location, jigsaw,
simclr, byol, barlow_twins, supervised. WORKDIR: default $TMPDIR/selfsup_demo. Data: Fashion-MNIST by
default (apt-get install dataset-fashion-mnist, or --download with internet);
the embedded digits when it is not installed, saying so, or with
--data=digits. Writes WORKDIR/demo.json (top-1 as fractions) and
WORKDIR/demo.log (everything TensorFlow says). A finished run in WORKDIR is
reused, not repeated.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from selfsup.core import files, gin_files
from selfsup.study import labels
from selfsup.core import lock

# Every task: its gin file, then gin/demo.gin's laptop settings (and the
# data's, then the task's own laptop recipe where gin/demo/ has one), in the
# study's order.
TASKS = labels.PRETEXT_TASKS + labels.METHODS + ("supervised",)
LAYERS = ("block1", "block2", "block3", "block4", "pre_logits")
# Per data set: the pretraining gin files (after the task's), and the linear
# evaluation: trained on `fraction` of `train_split`, scored on `eval_split`.
DATA = {
    "fashion_mnist": {
        "gin": ("demo.gin", "demo/fashion_mnist.gin"),
        "train_split": "train", "fraction": 0.1, "eval_split": "test"},
    "digits": {
        "gin": ("demo.gin",),
        "train_split": "train", "fraction": None, "eval_split": "val"},
}
# The baseline: the backbone at its random initialisation, with its
# batch-norm statistics measured on the data as the pretrained one's are
# (recalibrated on 60 training batches, weights untouched). Left at their
# initial values (mean 0, variance 1) they leave the features unnormalised;
# on Fashion-MNIST that baseline scored 1.3 points lower at block1, its best
# layer, and 5 points higher at pre_logits (49.7% against 44.5%).
RANDOM_INIT = ["--gin_param=TrainConfig.train_steps=0",
               "--gin_param=TrainConfig.bn_recalibration_batches=60"]
# Gains of at least this many points of top-1 count as a clear win.
CLEAR_GAIN = 3.0


def task_gin(task):
  """The task's laptop recipe, gin/demo/<task>.gin, where it has one (the
  methods' learning rates for a batch of 128, tuned on Fashion-MNIST's
  val), as a tuple of gin file names."""
  name = f"demo/{task}.gin"
  base = gin_files.gin_dir()
  return (name,) if base and os.path.exists(os.path.join(base, name)) else ()


class DemoError(Exception):
  """A step failed; the message says which and where the log is."""


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog=("bin/demo" if sys.argv[0].endswith(os.path.join("bin", "demo"))
            else "selfsup-demo"),
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("task", nargs="?", default="rotation", choices=TASKS)
  parser.add_argument("workdir", nargs="?", default=os.path.join(
      os.environ.get("TMPDIR", "/tmp"), "selfsup_demo"))
  parser.add_argument("--data", choices=sorted(DATA), default=None,
                      help="default: fashion_mnist if installed, else digits")
  parser.add_argument("--download", action="store_true",
                      help="fetch Fashion-MNIST (internet) if it is missing")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra pretraining binding, e.g. "
                      "'TrainConfig.epochs=1' (repeatable)")
  parser.add_argument("--eval_gin_param", action="append", default=[],
                      help="extra linear-evaluation binding (repeatable)")
  return parser.parse_args(argv)


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get(
      "TF_CPP_MIN_LOG_LEVEL", "2"), PYTHONUNBUFFERED="1")


def fashion_mnist_dir():
  """Where Fashion-MNIST is installed, or None (asked in a subprocess, so
  this process imports no TensorFlow and prints none of its noise)."""
  code = ("from selfsup.data import fashion_mnist as f; "
          "print(f.find() or '')")
  proc = subprocess.run([sys.executable, "-c", code], env=_env(),
                        capture_output=True, text=True, check=False)
  lines = proc.stdout.strip().splitlines()
  return lines[-1] if proc.returncode == 0 and lines else None


def choose_data(requested, download, find=fashion_mnist_dir):
  """(data name, note for the console or None)."""
  if requested == "digits":
    return "digits", None
  if find() or download:
    return "fashion_mnist", None
  if requested == "fashion_mnist":
    raise DemoError(
        "Fashion-MNIST is not installed: apt-get install "
        "dataset-fashion-mnist (offline), or rerun with --download "
        "(internet).")
  return "digits", ("Fashion-MNIST is not installed (apt-get install "
                    "dataset-fashion-mnist, or --download with internet): "
                    "running on the embedded digits instead.")


class Runner:
  """Runs selfsup's commands (`python -m selfsup.cli.X`) with their output in
  the log; shows progress."""

  def __init__(self, log_path):
    self.log_path = log_path
    self.log = open(log_path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def run(self, label, argv):
    print(f"{label} ", end="", flush=True)
    tic = time.time()
    self.log.write(f"\n$ {' '.join(argv)}\n")
    self.log.flush()
    proc = subprocess.run([sys.executable, "-m"] + argv, env=_env(),
                          stdout=self.log, stderr=subprocess.STDOUT,
                          check=False)
    if proc.returncode:
      print("failed", flush=True)
      raise DemoError(f"{label} failed: {_last_error(self.log_path)}\n"
                      f"(full output: {self.log_path})")
    print(f"{_duration(time.time() - tic)} | ", end="", flush=True)

  def close(self):
    self.log.close()


def _last_error(log_path):
  with open(log_path, encoding="utf-8", errors="replace") as f:
    lines = [line.rstrip() for line in f if line.strip()]
  errors = [line for line in lines if line.startswith("error:")]
  return errors[-1] if errors else "\n".join(lines[-5:])


def _duration(seconds):
  return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def latest_top1(results_path, eval_split, train_split, fraction):
  """{layer: (top-1, backbone)} from the newest matching L-BFGS entries."""
  with open(results_path, encoding="utf-8") as f:
    entries = json.load(f)
  found = {}
  for e in entries:  # oldest first: later entries replace earlier ones
    if (e.get("protocol") == "lbfgs" and e.get("eval_split") == eval_split
        and e.get("train_split") == train_split
        and e.get("fraction") == fraction and e.get("layer") in LAYERS):
      found[e["layer"]] = (e["top1"], e["backbone"])
  return found


def summary(task, backbone, data, eval_split, pretrained, random, seconds):
  """The demo.json record: top-1 as fractions, per layer."""
  return {
      "task": task, "backbone": backbone, "data": data,
      "eval_split": eval_split,
      "layers": {layer: {"pretrained": pretrained[layer],
                         "random": random[layer]}
                 for layer in LAYERS if layer in pretrained
                 and layer in random},
      "seconds": round(float(seconds), 1),
  }


def table(record):
  """The console table: layer x (pretrained, random, difference), in %."""
  rows = [f"{'layer':<12}{'pretrained':>11}{'random':>9}{'difference':>12}"]
  for layer, top1 in record["layers"].items():
    diff = 100 * (top1["pretrained"] - top1["random"])
    rows.append(f"{layer:<12}{100 * top1['pretrained']:>10.2f}%"
                f"{100 * top1['random']:>8.2f}%{diff:>+11.2f}")
  return "\n".join(rows)


def verdict(record):
  """One line: is the pretrained backbone's best layer ahead of the best
  layer of the same backbone at random initialisation, and at pre_logits?"""
  layers = record["layers"]
  if not layers:
    return "Verdict: no layer was evaluated."
  pre = {layer: 100 * t["pretrained"] for layer, t in layers.items()}
  rnd = {layer: 100 * t["random"] for layer, t in layers.items()}
  best_pre, best_rnd = max(pre, key=pre.get), max(rnd, key=rnd.get)
  gain = pre[best_pre] - rnd[best_rnd]
  facts = (f"best layer {pre[best_pre]:.2f}% ({best_pre}) against random "
           f"init's {rnd[best_rnd]:.2f}% ({best_rnd}), {gain:+.2f} points")
  if "pre_logits" in layers:
    end = pre["pre_logits"] - rnd["pre_logits"]
    facts += f"; {end:+.2f} at pre_logits"
  else:
    end = None
  if gain >= CLEAR_GAIN and (end is None or end > 0):
    return f"Verdict: {record['task']} pretraining helps: {facts}."
  if gain > 0:
    return (f"Verdict: a small gain, under the {CLEAR_GAIN:g} points of a "
            f"clear one: {facts}.")
  return f"Verdict: no gain over random initialisation: {facts}."


def main(argv):
  args = parse_args(argv)
  tic = time.time()
  data, note = choose_data(args.data, args.download)
  conf = DATA[data]
  os.makedirs(args.workdir, exist_ok=True)
  try:  # held until the process ends; its commands lock their own workdirs
    lock.WorkdirLock(args.workdir, "demo").acquire()
  except lock.WorkdirLockedError as err:
    raise DemoError(str(err)) from None
  log_path = os.path.join(args.workdir, "demo.log")
  if note:
    print(note)
  # The commands find these gin files in the package, from any directory.
  pretrain = ["selfsup.cli.pretrain", f"--gin_file={args.task}.gin"]
  pretrain += [f"--gin_file={g}" for g in conf["gin"] + task_gin(args.task)]
  # The demo shows the layers' linear evaluation; the online probe would only
  # add time (--gin_param=TrainConfig.online_probe=True brings it back).
  pretrain.append("--gin_param=TrainConfig.online_probe=False")
  if data == "fashion_mnist" and args.download:
    pretrain.append('--gin_param=build_source.source_kwargs='
                    '{"image_size": 32, "download": True}')
  pretrain += [f"--gin_param={p}" for p in args.gin_param]
  evaluate = ["selfsup.cli.linear_eval",
              "--gin_file=eval/lbfgs.gin",
              "--gin_file=eval/layerwise.gin",
              f"--gin_param=linear_eval.train_split={conf['train_split']!r}",
              f"--gin_param=linear_eval.eval_split={conf['eval_split']!r}",
              f"--gin_param=linear_eval.fraction={conf['fraction']!r}"]
  evaluate += [f"--gin_param={p}" for p in args.eval_gin_param]
  trained = os.path.join(args.workdir, f"{data}_{args.task}")
  random = trained + "_random"
  print(f"selfsup demo: {args.task} on {data}, every layer by L-BFGS on "
        f"{conf['eval_split']}, against random initialisation "
        f"(log: {log_path})")
  runner = Runner(log_path)
  try:
    runner.run("pretraining", pretrain + [f"--workdir={trained}"])
    runner.run("evaluating", evaluate + [f"--workdir={trained}"])
    runner.run("random init", pretrain + RANDOM_INIT + [
        f"--workdir={random}"])
    runner.run("evaluating", evaluate + [f"--workdir={random}"])
  finally:
    runner.close()
  seconds = time.time() - tic
  print(f"total {_duration(seconds)}")
  split = (conf["eval_split"], conf["train_split"], conf["fraction"])
  scores = {name: latest_top1(os.path.join(path, "results.json"), *split)
            for name, path in (("pretrained", trained), ("random", random))}
  backbone = next(iter(scores["pretrained"].values()))[1]
  record = summary(args.task, backbone, data, conf["eval_split"],
                   {k: v[0] for k, v in scores["pretrained"].items()},
                   {k: v[0] for k, v in scores["random"].items()}, seconds)
  path = os.path.join(args.workdir, "demo.json")
  files.write_json(path, record, indent=2)
  print()
  print(table(record))
  print(verdict(record))
  print(f"(top-1 on {data}:{conf['eval_split']}; {path})")


def run():
  """The `selfsup-demo` console script (and bin/demo)."""
  try:
    main(sys.argv[1:])
  except DemoError as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:
    sys.exit("\ninterrupted")


if __name__ == "__main__":
  run()
