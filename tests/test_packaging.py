"""The wheel and sdist: built with `python -m build`, installed (not
editable) into a fresh venv, they carry the gin configs and the console
scripts; a two-step pretraining runs from another directory and its export
works as a Keras layer there. Slow (a build, a venv, a pretraining): CI runs
it once (`.ci/run`)."""
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--gin_file=rotation.gin", "--gin_file=demo",
        "--gin_param=build_task.width=0.25",
        "--gin_param=build_task.image_size=16",
        "--gin_param=build_source.source_kwargs={'image_size': 16}",
        "--gin_param=TrainConfig.train_steps=2",
        "--gin_param=TrainConfig.steps_per_loop=1",
        "--gin_param=TrainConfig.checkpoint_steps=2",
        "--gin_param=TrainConfig.eval_batches=1",
        "--gin_param=TrainConfig.online_probe=False"]
SCRIPTS = ("selfsup", "selfsup-pretrain", "selfsup-linear-eval",
           "selfsup-import-tf1", "selfsup-study", "selfsup-report")

_LAYER = """
import json, os, sys
import numpy as np
import keras, selfsup
workdir = sys.argv[1]
model = keras.Sequential([selfsup.Representation.from_workdir(workdir),
                          keras.layers.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    from_logits=True))
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (16, 28, 28, 3), dtype=np.uint8)
history = model.fit(images, rng.integers(0, 10, 16), batch_size=8, epochs=2,
                    verbose=0)
model.save("model.keras")
loaded = keras.saving.load_model("model.keras")
diff = float(np.max(np.abs(loaded.predict(images, verbose=0)
                           - model.predict(images, verbose=0))))
print(json.dumps({"selfsup": selfsup.__file__, "loss": history.history["loss"],
                  "diff": diff}))
"""


def _run(argv, cwd, check=True, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
  env.pop("PYTHONPATH", None)
  proc = subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
  if check and proc.returncode:
    raise AssertionError(f"{argv} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return proc


def _venv(path):
  """A fresh venv that sees this environment's packages (TensorFlow, ...)
  through a .pth path: nothing is downloaded. The .pth files of this
  environment (its editable selfsup) are not processed there."""
  _run([sys.executable, "-m", "venv", "--without-pip", str(path)], ROOT)
  python = os.path.join(path, "bin", "python")
  site = _run([python, "-c", "import sysconfig; "
               "print(sysconfig.get_paths()['purelib'])"], ROOT).stdout.strip()
  here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  with open(os.path.join(site, "_parent_environment.pth"), "w") as f:
    f.write("\n".join(sorted(here)) + "\n")
  return python


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_directory(tmp_path):
  dist = tmp_path / "dist"
  _run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
        str(dist), ROOT], ROOT)
  [wheel] = [p for p in os.listdir(dist) if p.endswith(".whl")]
  [sdist] = [p for p in os.listdir(dist) if p.endswith(".tar.gz")]
  with zipfile.ZipFile(dist / wheel) as z:
    names = set(z.namelist())
    entry_points = next(z.read(n).decode() for n in names
                        if n.endswith("entry_points.txt"))
  for packaged in ("selfsup/gin/rotation.gin", "selfsup/gin/demo.gin",
                   "selfsup/gin/arch/revnet50.gin",
                   "selfsup/gin/eval/lbfgs.gin",
                   "selfsup/gin/study/demo.gin",
                   "selfsup/assets/permutations_100_max.bin",
                   "selfsup/study/paper_results.json",
                   "selfsup/representation.py", "selfsup/__main__.py"):
    assert packaged in names, packaged
  assert not any(n.startswith("gin/") for n in names)  # only inside selfsup
  for script in SCRIPTS:
    assert f"{script} =" in entry_points, script
  with tarfile.open(dist / sdist) as t:
    members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
  assert {"gin/rotation.gin", "gin/arch/revnet50.gin", "setup.py",
          "README.md", "MANIFEST.in"} <= members

  python = _venv(tmp_path / "venv")
  # This environment's pip installs into the venv (pip >= 22.3: --python).
  _run([sys.executable, "-m", "pip", "--python", python, "install",
        "--no-deps", "--no-index", "--quiet", str(dist / wheel)], ROOT)
  bin_dir = tmp_path / "venv" / "bin"
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()

  about = _run([str(bin_dir / "selfsup")], elsewhere).stdout
  assert "selfsup 0." in about and "selfsup-pretrain" in about
  assert str(tmp_path / "venv") in about  # the packaged configs' folder
  helped = _run([str(bin_dir / "selfsup-pretrain"), "--help"], elsewhere)
  assert "--gin_file" in helped.stdout and "revnet50" in helped.stdout

  workdir = elsewhere / "W"
  done = _run([str(bin_dir / "selfsup-pretrain"), *TINY,
               f"--workdir={workdir}"], elsewhere)
  assert "pretrained rotation" in done.stdout
  assert "I0000" not in done.stderr  # TensorFlow's C++ lines: in the log
  assert os.path.exists(workdir / "pretrain.log")
  with open(workdir / "export" / "info.json") as f:
    info = json.load(f)
  assert info["step"] == 2 and "logits" not in info["endpoints"]

  layer = _run([python, "-c", _LAYER, str(workdir)], elsewhere)
  result = json.loads(layer.stdout.strip().splitlines()[-1])
  assert result["selfsup"].startswith(str(tmp_path / "venv"))  # the wheel's
  assert all(x == x for x in result["loss"]) and result["diff"] < 1e-4


# -- Fast: the commands' help and the gin lookup, from a checkout. ------------

COMMANDS = {  # bin script: flags its --help must list
    "pretrain": ("--workdir", "--gin_file", "--gin_param", "--data_dir",
                 "--strategy=auto"),
    "linear_eval": ("--workdir", "--gin_file", "--data_dir"),
    "import_tf1": ("--checkpoint", "--backbone=auto", "--width", "--task=rotation",
                   "--workdir"),
    "study": ("--gin_file", "--root", "--dry_run=False", "--only"),
    "report": ("--root", "--out", "--figures=True"),
}


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_help_lists_the_commands_own_flags(script, tmp_path):
  proc = _run([sys.executable, os.path.join(ROOT, "bin", script), "--help"],
              tmp_path, check=False, timeout=120)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "Flags:" in out and "Traceback" not in proc.stderr
  for flag in COMMANDS[script]:
    assert f"  {flag}\n" in out, (flag, out)
  if script in ("pretrain", "linear_eval", "study"):
    assert "Packaged gin configs" in out and "revnet50" in out
  if script == "import_tf1":
    assert "One of: rotation, exemplar, jigsaw, relative_patch_location" in (
        " ".join(out.split()))


def test_demo_help_prints_help(tmp_path):
  proc = _run([sys.executable, os.path.join(ROOT, "bin", "demo"), "--help"],
              tmp_path, check=False, timeout=120)
  assert proc.returncode == 0 and "usage: bin/demo" in proc.stdout
  assert not os.listdir(tmp_path)  # nothing ran


def test_python_m_selfsup_prints_version_and_commands(tmp_path):
  env_path = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-m", "selfsup"], cwd=str(tmp_path),
                        env=env_path, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  from selfsup.version import __version__  # pylint: disable=import-outside-toplevel
  assert f"selfsup {__version__}" in proc.stdout
  for script in SCRIPTS[1:]:
    assert script in proc.stdout
  assert "tensorflow" not in proc.stderr.lower()  # answered without TF


def test_gin_files_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
  from selfsup.cli import common  # pylint: disable=import-outside-toplevel
  from selfsup.core import gin_files  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)
  jigsaw = os.path.join(gin_files.gin_dir(), "jigsaw.gin")
  for name in ("jigsaw", "jigsaw.gin", "gin/jigsaw.gin"):
    assert common._resolve(name) == jigsaw  # pylint: disable=protected-access
  assert common._resolve("arch/revnet50") == os.path.join(  # pylint: disable=protected-access
      gin_files.gin_dir(), "arch", "revnet50.gin")
  mine = tmp_path / "jigsaw.gin"  # a file here wins over the packaged one
  mine.write_text("# mine\n")
  assert common._resolve("jigsaw.gin") == "jigsaw.gin"  # pylint: disable=protected-access
  with pytest.raises(common.GinError, match=r"--gin_file=rotatoin: no such "
                     r"file .* one of: .*rotation"):
    common._resolve("rotatoin")  # pylint: disable=protected-access
  assert "rotation.gin" in gin_files.list_files()
  assert os.path.join("arch", "revnet50.gin") in gin_files.list_files()


def test_import_tf1_backbone_choices_are_the_registry():
  import selfsup.models  # pylint: disable=import-outside-toplevel
  from selfsup.cli import import_tf1  # pylint: disable=import-outside-toplevel
  flag = import_tf1.FLAGS["backbone"]
  # "auto" (the default) reads the architecture off the checkpoint.
  assert flag.default == "auto"
  assert sorted(set(flag.parser.enum_values) - {"auto"}) == (
      selfsup.models.names())
