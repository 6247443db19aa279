"""bin/study and bin/report: grid expansion, commands, a real two-cell study
on digits (run, kill, resume) and the report on hand-written results."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import gin
import pytest

from selfsup.study import report, results, runner, spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spec(**kw):
  fields = dict(name="t", tasks=("rotation", "jigsaw"),
                backbones=("resnet50_v2", "revnet50"), widths=(0.25, 0.5))
  fields.update(kw)
  return spec_lib.make_spec(**fields)


def test_grid_expansion_and_names():
  spec = _spec(task_widths={"jigsaw": (0.25,)}, baselines=("random_init",),
               backbone_options={"": {}, "noskip": {"skip_connections": False}},
               evaluations=("lbfgs", "sgd_linear"), fractions=(None, 0.1),
               sgd_schedules={"first30": 30, "first480": 480})
  cells = spec_lib.expand(spec)
  # (rotation: 2 widths + jigsaw: 1 + random_init: 2) x 2 backbones x 2 options
  assert len(cells) == (2 + 1 + 2) * 2 * 2
  names = [c.name for c in cells]
  assert len(set(names)) == len(names)
  assert "rotation-resnet50_v2-w0.25" in names
  assert "jigsaw-revnet50-w0.25-noskip" in names
  assert "jigsaw-revnet50-w0.5" not in names
  cell = next(c for c in cells if c.name == "random_init-revnet50-w0.5-noskip")
  assert cell.settings["kind"] == "random_init"
  assert cell.pretrain["gin_files"][0] == "gin/rotation.gin"
  # Batch-norm statistics measured on the data (as bin/demo's baseline),
  # weights untouched: the random-init bindings come last.
  params = cell.pretrain["params"]
  assert params[-len(spec_lib.RANDOM_INIT_PARAMS):] == list(
      spec_lib.RANDOM_INIT_PARAMS)
  assert "TrainConfig.bn_recalibration_batches = 60" in params
  assert "TrainConfig.train_steps = 0" in params  # weights untouched
  # The option replaces the gin files' kwargs but keeps the task's
  # batch-norm group size.
  assert ('build_task.backbone_kwargs = {"skip_connections": False, '
          '"bn_group_size": %BN_GROUP_SIZE}' in cell.pretrain["params"])
  # lbfgs x 2 fractions + sgd_linear x 2 fractions x 2 schedules
  labels = [e["label"] for e in cell.evals]
  assert labels == ["lbfgs", "lbfgs-f0.1", "sgd_linear-sgdfirst30",
                    "sgd_linear-sgdfirst480", "sgd_linear-f0.1-sgdfirst30",
                    "sgd_linear-f0.1-sgdfirst480"]
  sgd = cell.evals[2]["params"]
  assert 'linear_eval.sgd_kwargs = {"epochs": 70, "decay_epochs": (30, 50)}' \
      in sgd


def test_baselines_take_their_own_widths_and_random_init_params():
  spec = _spec(baselines=("random_init", "supervised"),
               task_widths={"supervised": (0.5,)},
               random_init_params=("TrainConfig.train_steps = 7",))
  names = [c.name for c in spec_lib.expand(spec)]
  assert "supervised-revnet50-w0.5" in names
  assert "supervised-revnet50-w0.25" not in names
  assert "random_init-revnet50-w0.25" in names
  cell = next(c for c in spec_lib.expand(spec)
              if c.name == "random_init-revnet50-w0.25")
  assert cell.pretrain["params"][-1] == "TrainConfig.train_steps = 7"


@pytest.mark.parametrize("kw,needle", [
    (dict(widths=(0,)), "width 0"),
    (dict(tasks=("rotaton",)), "gin/rotaton.gin"),
    (dict(baselines=("random",)), "baseline 'random'"),
    (dict(fractions=(1.5,)), "fraction 1.5"),
    (dict(evaluations=("lbgfs",)), "gin/eval/lbgfs.gin"),
    (dict(task_widths={"exemplar": (4,)}), "task_widths names 'exemplar'"),
    (dict(random_init_params="TrainConfig.train_steps = 9"),
     "study.random_init_params="),
    (dict(backbones=()), "study.backbones=()"),
    (dict(sgd_schedules={"x": -3}), "SGD schedule 'x'"),
])
def test_bad_specs_are_named(kw, needle):
  with pytest.raises(ValueError) as err:
    _spec(**kw)
  assert needle in str(err.value)


@pytest.mark.parametrize("name,count", [("demo", 30), ("paper_table1", 114),
                                        ("paper_layers", 12),
                                        ("paper_width_repr", 12),
                                        ("modern", 72)])
def test_study_files_expand(name, count):
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(REPO, "gin", "study", f"{name}.gin"))
    spec = spec_lib.study()
  finally:
    gin.clear_config()
  cells = spec_lib.expand(spec)
  assert len(cells) == count
  for cell in cells:  # every file a command names exists
    for path in cell.pretrain["gin_files"] + [
        f for e in cell.evals for f in e["gin_files"]]:
      assert os.path.exists(os.path.join(REPO, path)), path


def test_dry_run_prints_the_exact_commands(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "bin", "study"),
       "--gin_file=gin/study/demo.gin", f"--root={tmp_path}", "--dry_run",
       "--only=^jigsaw-revnet50"], capture_output=True, text=True,
      timeout=120, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("# study demo (Fashion-MNIST, 10% of train): 2 cells")
  assert [l for l in lines if l.startswith("# cell")] == [
      "# cell jigsaw-revnet50-w0.25", "# cell jigsaw-revnet50-w0.5"]
  argv = shlex.split(lines[2])
  assert argv[1].endswith("bin/pretrain")
  assert argv[2:4] == ["--gin_file=gin/jigsaw.gin", "--gin_file=gin/demo.gin"]
  assert '--gin_param=build_task.backbone = "revnet50"' in argv
  assert argv[-1] == f"--workdir={tmp_path}/jigsaw-revnet50-w0.25"
  evaluate = shlex.split(lines[3])
  assert evaluate[1].endswith("bin/linear_eval")
  assert "--gin_file=gin/eval/layerwise.gin" in evaluate
  assert not os.listdir(tmp_path)  # nothing run, nothing written


def test_bad_study_flags_fail_clearly(tmp_path):
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "bin", "study"),
       "--gin_file=gin/study/demo.gin", f"--root={tmp_path}", "--dry_run",
       "--gin_param=study.widths=(-1,)"], capture_output=True, text=True,
      timeout=120, cwd=REPO)
  assert proc.returncode != 0
  assert "error: bad study: width -1 is not valid" in proc.stderr


TINY_STUDY = """
import selfsup.study.spec
study.name = "tiny"
study.tasks = ("rotation",)
study.baselines = ("random_init",)
study.backbones = ("resnet50_v2",)
study.widths = (0.25,)
study.source = "digits"
study.gin_files = ("gin/demo.gin",)
study.params = ("build_task.image_size = 16",
                'build_source.source_kwargs = {"image_size": 16}',
                "TrainConfig.train_steps = 4", "TrainConfig.steps_per_loop = 2",
                "TrainConfig.checkpoint_steps = 2",
                "TrainConfig.eval_batches = 1",
                "TrainConfig.online_probe = False")
study.random_init_params = ("TrainConfig.train_steps = 0",
                            "TrainConfig.bn_recalibration_batches = 2")
study.evaluations = ("lbfgs",)
study.layers = ("block4", "pre_logits")
study.eval_params = ("linear_eval.max_iter = 50",)
"""


def _study(gin_file, root, *extra, **kw):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "bin", "study"),
       f"--gin_file={gin_file}", f"--root={root}", *extra],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), **kw)


def test_two_cell_study_runs_resumes_after_kill_and_reports(tmp_path):
  gin_file = tmp_path / "tiny.gin"
  gin_file.write_text(TINY_STUDY)
  root = tmp_path / "root"
  first = root / "rotation-resnet50_v2-w0.25"
  second = root / "random_init-resnet50_v2-w0.25"
  proc = _study(gin_file, root, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    record = runner.read_record(str(first))
    if record and record["status"] == "done":
      break
    time.sleep(0.5)
  assert runner.read_record(str(first))["status"] == "done", proc.stdout.read()
  os.killpg(proc.pid, signal.SIGKILL)  # the study and its running command
  proc.wait()
  assert (runner.read_record(str(second)) or {}).get("status") != "done"

  proc = _study(gin_file, root)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert "pretrain: done, skipped" in out  # the first cell is not re-run
  for cell_dir in (first, second):
    record = runner.read_record(str(cell_dir))
    assert record["status"] == "done" and record["error"] is None
    assert [s["status"] for s in record["steps"]] == ["done", "done"]
  assert runner.read_record(str(first))["steps"][0]["runs"] == 1
  assert runner.read_record(str(second))["settings"]["kind"] == "random_init"

  tic = time.time()  # a finished study re-runs in seconds
  proc = _study(gin_file, root)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0 and out.count("done, skipped") == 4, out
  assert time.time() - tic < 30

  proc = subprocess.run([sys.executable, os.path.join(REPO, "bin", "report"),
                         f"--root={root}"], capture_output=True, text=True,
                        timeout=120, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  text = (root / "report" / "report.md").read_text()
  assert "| architecture | rotation x0.25 | random_init x0.25 |" in text
  assert "evaluated on digits split val" in text
  line = next(l for l in text.splitlines() if l.startswith("| resnet50_v2 |"))
  values = [float(v.strip("* ")) for v in line.split("|")[2:4]]
  assert all(0 <= v <= 100 for v in values)
  assert (root / "report" / "fig5_digits_lbfgs_all.png").stat().st_size > 0
  assert (root / "report" / "fig2_digits_lbfgs_all.png").stat().st_size > 0


def test_failed_cell_is_recorded_and_the_study_goes_on(tmp_path):
  gin_file = tmp_path / "bad.gin"
  gin_file.write_text(TINY_STUDY.replace(
      'study.baselines = ("random_init",)', 'study.widths = (0.25, 0.5)')
      .replace('"TrainConfig.train_steps = 4"', '"TrainConfig.batchsize = 4"')
      .replace("study.widths = (0.25,)\n", ""))
  proc = _study(gin_file, tmp_path / "root")
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1, out
  assert "0 of 2 cells done; failed: rotation-resnet50_v2-w0.25, " \
         "rotation-resnet50_v2-w0.5" in out
  for width in ("0.25", "0.5"):
    record = runner.read_record(
        str(tmp_path / "root" / f"rotation-resnet50_v2-w{width}"))
    assert record["status"] == "failed"
    assert record["error"].startswith("pretrain: error: bad gin")
    assert "batchsize" in record["error"]
    assert [s["status"] for s in record["steps"]] == ["failed", "pending"]


def _cell(root, name, settings, entries, pretext=None, steps=None):
  cell_dir = os.path.join(root, name)
  os.makedirs(cell_dir)
  base = {"task": None, "kind": "pretext", "backbone": None, "width": None,
          "representation_size": None, "option": None, "option_kwargs": {},
          "seed": None, "source": "imagenet2012", "study": "hand-written"}
  record = {"name": name, "settings": dict(base, **settings),
            "status": "done", "error": None,
            "steps": steps or [{"label": "pretrain", "kind": "pretrain",
                                "seconds": 12.0, "results": []}]}
  with open(os.path.join(cell_dir, "cell.json"), "w") as f:
    json.dump(record, f)
  with open(os.path.join(cell_dir, "results.json"), "w") as f:
    json.dump(entries, f)
  if pretext is not None:
    with open(os.path.join(cell_dir, "pretrain_results.json"), "w") as f:
      json.dump({"pretext_eval_end": {"accuracy": pretext}}, f)


def _entry(top1, layer="pre_logits", source="places205", **extra):
  # As protocol.py writes them: the protocol's options nested under
  # "settings", the export's fingerprint and the entry's key, which differ
  # from cell to cell and must not split a table.
  return dict({"protocol": "lbfgs", "layer": layer, "source": source,
               "eval_split": "val", "fraction": None, "top1": top1,
               "top5": min(1.0, top1 + 0.2), "iterations": 10,
               "export": {"weights_sha256": f"{top1}", "step": 10},
               "key": f"k{top1}", "time": "2026-01-01T00:00:00",
               "settings": {"max_iter": 800, "precondition": True}},
              **extra)


@pytest.fixture
def hand_written(tmp_path):
  root = str(tmp_path / "root")
  os.makedirs(root)
  _cell(root, "rotation-revnet50-w4", dict(task="rotation",
                                           backbone="revnet50", width=4),
        [_entry(0.40, layer="block3"), _entry(0.45)], pretext=0.9)
  _cell(root, "rotation-resnet50_v1-w4", dict(
      task="rotation", backbone="resnet50_v1", width=4),
        [_entry(0.35, layer="block3"), _entry(0.30),
         _entry(0.99, layer="logits", source="imagenet2012",
                future_setting="x")], pretext=0.8)
  _cell(root, "exemplar-revnet50-w4", dict(task="exemplar",
                                           backbone="revnet50", width=4),
        [_entry(0.33)], pretext=0.5)
  # The ablation: ResNet18 with and without skips on ImageNet, by layer.
  for option, kwargs, vals in (("skip", {}, (0.2, 0.3)),
                               ("noskip", {"skip_connections": False},
                                (0.2, 0.25))):
    _cell(root, f"rotation-resnet18_v2-w4-{option}", dict(
        task="rotation", backbone="resnet18_v2", width=4, option=option,
        option_kwargs=kwargs),
          [_entry(vals[0], layer="block1", source="imagenet2012"),
           _entry(vals[1], layer="block2", source="imagenet2012")])
  os.makedirs(os.path.join(root, "not_a_cell"))
  return root


def test_report_reads_self_describing_entries(hand_written):
  cells = results.load_cells(hand_written)
  assert len(cells) == 5
  rows = results.rows(cells)
  assert len(rows) == 10
  odd = next(r for r in rows if r["layer"] == "logits")
  assert odd["future_setting"] == "x" and odd["precondition"] is True
  assert odd["max_iter"] == 800
  assert odd["task"] == "rotation" and odd["pretext"] == 0.8


def test_report_tables_and_figures(hand_written, tmp_path):
  out = str(tmp_path / "report")
  written = report.write_report(hand_written, out)
  assert os.path.join(out, "report.md") in written
  text = open(os.path.join(out, "report.md")).read()
  # One pre-logits table on Places205 (fingerprints do not split it), with
  # the best architecture in bold and the paper's number (supplementary
  # Table 3) in brackets.
  assert "evaluated on places205 split val (trained on train, all of it); " \
         "protocol lbfgs (max_iter=800, precondition=True)" in text
  assert "| architecture | rotation x4 | exemplar x4 |" in text
  assert "| revnet50 | **45.0** [41.8] | **33.0** [39.4] |" in text
  assert "| resnet50_v1 | 30.0 [38.1] |  |" in text
  assert "supplementary Table 3" in text
  # The ablation with its difference row and the paper's supplementary
  # Table 1 numbers.
  assert "| option | block1 | block2 |" in text
  table = text[text.index("| option | block1 | block2 |"):].splitlines()
  assert table[2:5] == ["| skip | 20.0 [26.0] | 30.0 [36.0] |",
                        "| noskip | 20.0 [26.0] | 25.0 [33.3] |",
                        "| diff. skip - noskip | +0.0 | +5.0 |"]
  layers = text[text.index("## Layer by layer"):]
  assert "| cell | block3 | pre_logits |" in layers
  assert "| rotation-revnet50-w4 | 40.0 | 45.0 |" in layers
  pngs = [p for p in written if p.endswith(".png")]
  assert any("fig2_places205" in p for p in pngs)
  assert any("fig5_places205" in p for p in pngs)
  assert any("fig4_places205" in p for p in pngs)
  for p in pngs:
    assert open(p, "rb").read(4) == b"\x89PNG"
  assert "<table>" in open(os.path.join(out, "report.html")).read()


def test_report_on_an_empty_root_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="no cell under"):
    results.load_cells(str(tmp_path))


def test_report_draws_every_figure_it_has_cells_for(tmp_path):
  root = str(tmp_path / "root")
  os.makedirs(root)
  for width in (4, 8):
    for size in (256, 512):
      history = [{"epoch": e, "top1": 0.1 * e} for e in (1, 2, 3)]
      steps = [{"label": "pretrain", "kind": "pretrain", "seconds": 1.0}]
      steps += [{"label": f"sgd_linear-sgd{s}", "kind": "eval",
                 "seconds": 2.0, "settings": {"sgd_schedule": s},
                 "results": [_entry(0.3 + 0.01 * e, protocol="sgd_linear",
                                    source="imagenet2012", epochs=e,
                                    history=history[:e])]}
                for s, e in (("first1", 2), ("first2", 3))]
      entries = [_entry(0.2 + 0.01 * width + 0.0001 * size,
                        source="imagenet2012"),
                 _entry(0.1 + 0.01 * width, source="imagenet2012",
                        fraction=0.1),
                 _entry(0.25 + 0.01 * width, source="imagenet2012",
                        protocol="mlp")]
      _cell(root, f"rotation-revnet50-w{width}-r{size}", dict(
          task="rotation", backbone="revnet50", width=width,
          representation_size=size), entries, pretext=0.7, steps=steps)
  out = str(tmp_path / "report")
  written = [os.path.basename(p) for p in report.write_report(root, out)]
  for prefix in ("fig3_", "fig6_", "fig7_", "fig8_"):
    assert any(p.startswith(prefix) for p in written), (prefix, written)
  text = open(os.path.join(out, "report.md")).read()
  # The two SGD schedules stay apart (the runner's step records say which).
  assert "sgd_schedule=first1" in text and "sgd_schedule=first2" in text


def _stub_steps(cell_dir, fail=False, tag="a"):
  """Steps whose commands are tiny Python programs standing in for
  bin/pretrain (writes export/info.json) and bin/linear_eval (appends to
  results.json), so the runner's logic is tested in milliseconds."""
  pretrain = ("import os, sys; os.makedirs('{d}/export', exist_ok=True); "
              "open('{d}/export/info.json', 'w').write('{{}}')"
              ).format(d=cell_dir)
  if fail:
    pretrain = "import sys; print('error: boom', file=sys.stderr); sys.exit(1)"
  evaluate = ("import json, os; p = '{d}/results.json'; "
              "r = json.load(open(p)) if os.path.exists(p) else []; "
              "r.append(dict(protocol='lbfgs', layer='pre_logits', "
              "source='digits', eval_split='val', fraction=None, top1=0.5, "
              "tag='{t}')); json.dump(r, open(p, 'w'))").format(d=cell_dir,
                                                                t=tag)
  return [{"label": "pretrain", "kind": "pretrain", "settings": {},
           "command": [sys.executable, "-c", pretrain]},
          {"label": "lbfgs", "kind": "eval", "settings": {},
           "command": [sys.executable, "-c", evaluate]}]


def test_runner_skips_done_steps_and_reruns_what_changed(tmp_path):
  cell = spec_lib.expand(_spec(tasks=("rotation",), backbones=("revnet50",),
                               widths=(4,)))[0]
  cell_dir = str(tmp_path / cell.name)
  logs = []
  assert runner.run_cell(cell, _stub_steps(cell_dir), cell_dir,
                         log=logs.append) == "done"
  record = runner.read_record(cell_dir)
  assert [s["runs"] for s in record["steps"]] == [1, 1]
  assert record["steps"][1]["results"][0]["tag"] == "a"
  assert record["settings"]["backbone"] == "revnet50"
  # Done: nothing runs.
  assert runner.run_cell(cell, _stub_steps(cell_dir), cell_dir,
                         log=logs.append) == "done"
  assert [s["runs"] for s in runner.read_record(cell_dir)["steps"]] == [1, 1]
  # A changed evaluation command runs that step only, and its new entry is
  # recorded with it.
  runner.run_cell(cell, _stub_steps(cell_dir, tag="b"), cell_dir,
                  log=logs.append)
  record = runner.read_record(cell_dir)
  assert [s["runs"] for s in record["steps"]] == [1, 2]
  assert [r["tag"] for r in record["steps"][1]["results"]] == ["b"]
  # A deleted export re-runs the pretraining, then the evaluations.
  os.remove(os.path.join(cell_dir, "export", "info.json"))
  runner.run_cell(cell, _stub_steps(cell_dir, tag="b"), cell_dir,
                  log=logs.append)
  assert [s["runs"] for s in runner.read_record(cell_dir)["steps"]] == [2, 3]
  # A failure is recorded with its error line; the later steps wait.
  other = str(tmp_path / "other")
  assert runner.run_cell(cell, _stub_steps(other, fail=True), other,
                         log=logs.append) == "failed"
  record = runner.read_record(other)
  assert record["error"] == "pretrain: error: boom"
  assert [s["status"] for s in record["steps"]] == ["failed", "pending"]
  assert runner.run_cell(cell, _stub_steps(other, fail=True), other,
                         skip_failed=True, log=logs.append) == "failed"
  assert runner.read_record(other)["steps"][0]["runs"] == 1
  assert os.path.exists(os.path.join(other, "logs", "pretrain.log"))


def test_one_task_order_covers_every_registered_task():
  import selfsup.tasks  # pylint: disable=import-outside-toplevel
  from selfsup.cli import demo  # pylint: disable=import-outside-toplevel
  from selfsup.study import figures, labels  # pylint: disable=import-outside-toplevel
  missing = set(selfsup.tasks.TASKS.names()) - set(labels.TASK_ORDER)
  assert not missing, f"add {sorted(missing)} to study/labels.py TASK_ORDER"
  assert figures.TASKS is labels.TASK_ORDER
  assert set(demo.TASKS) <= set(labels.TASK_ORDER)
  # figures no longer imports report (the report imports figures late).
  import ast  # pylint: disable=import-outside-toplevel
  tree = ast.parse(open(figures.__file__, encoding="utf-8").read())
  imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
              for a in n.names}
  assert "report" not in imported


def test_seeds_pool_into_mean_and_std_with_noise_marks(tmp_path):
  """Three seeds per cell: tables show mean ± std; the best architecture is
  marked beyond the noise only where its lead exceeds 2 standard errors."""
  root = str(tmp_path / "root")
  os.makedirs(root)
  tops = {"revnet50": (0.50, 0.51, 0.52), "resnet50_v1": (0.40, 0.41, 0.42),
          "resnet50_v2": (0.49, 0.53, 0.45)}
  for backbone, values in tops.items():
    for seed, top1 in enumerate(values):
      _cell(root, f"rotation-{backbone}-w4-s{seed}",
            dict(task="rotation", backbone=backbone, width=4, seed=seed),
            [_entry(top1), _entry(top1 - 0.1, layer="block3")],
            pretext=0.9)
  for backbone, values in (("revnet50", (0.60, 0.61, 0.62)),
                           ("resnet50_v1", (0.40, 0.41, 0.42))):
    for seed, top1 in enumerate(values):  # a clear lead
      _cell(root, f"exemplar-{backbone}-w4-s{seed}",
            dict(task="exemplar", backbone=backbone, width=4, seed=seed),
            [_entry(top1)])
  rows = results.pool_seeds(results.rows(results.load_cells(root)))
  pre = {r["backbone"]: r for r in rows if r["layer"] == "pre_logits"
         and r["task"] == "rotation"}
  assert len(rows) == 8 and pre["revnet50"]["n_seeds"] == 3
  assert pre["revnet50"]["top1"] == pytest.approx(0.51)
  assert pre["revnet50"]["top1_std"] == pytest.approx(0.01)
  assert pre["revnet50"]["cell"] == "rotation-revnet50-w4"
  # revnet50 leads resnet50_v2 by 0.02 with se sqrt(0.01^2/3 + 0.04^2/3):
  # within the noise.
  assert not results.beyond_noise(pre["revnet50"], pre["resnet50_v2"])
  assert results.beyond_noise(pre["revnet50"], pre["resnet50_v1"])
  out = str(tmp_path / "report")
  report.write_report(root, out)
  text = open(os.path.join(out, "report.md")).read()
  assert ("| revnet50 | **51.0 ± 1.0** [41.8] | **61.0 ± 1.0**† [39.4] |"
          in text)  # rotation: within the noise; exemplar: beyond it
  assert "| resnet50_v1 | 41.0 ± 1.0 [38.1] | 41.0 ± 1.0 [39.3] |" in text
  assert "| rotation-revnet50-w4 | 41.0 ± 1.0 | 51.0 ± 1.0 |" in text
  assert "standard error" in text


def test_report_draws_the_online_probe_curves(tmp_path):
  root = str(tmp_path / "root")
  os.makedirs(root)
  for seed, offset in enumerate((0.0, 0.02)):
    for task in ("rotation", "simclr"):
      name = f"{task}-revnet50-w0.5-s{seed}"
      _cell(root, name, dict(task=task, backbone="revnet50", width=0.5,
                             seed=seed), [_entry(0.5)])
      history = [{"step": s, "top1": {"pre_logits": 0.1 + 0.001 * s + offset}}
                 for s in (0, 10, 20)]
      with open(os.path.join(root, name, "pretrain_results.json"), "w") as f:
        json.dump({"online_probe": {"endpoints": ["pre_logits"],
                                    "eval_split": "val",
                                    "history": history}}, f)
  curves = results.probe_curves(results.load_cells(root))
  assert [(c["task"], c["n_seeds"]) for c in curves] == [("rotation", 2),
                                                          ("simclr", 2)]
  assert curves[0]["steps"] == [0, 10, 20]
  assert curves[0]["top1"] == pytest.approx([0.11, 0.12, 0.13])
  assert curves[0]["std"][0] == pytest.approx(0.02 / 2 ** 0.5)
  out = str(tmp_path / "report")
  written = report.write_report(root, out)
  assert os.path.join(out, "fig_probe.png") in written
  assert "Online linear probe (pre-logits) on val" in open(
      os.path.join(out, "report.md")).read()


def test_gain_table_compares_best_layers_with_random_init(tmp_path):
  """Each cell's best layer against random init's best layer of the same
  architecture (at the baseline's only width), † beyond the seeds' noise."""
  root = str(tmp_path / "root")
  os.makedirs(root)
  values = {  # (block1, pre_logits) per seed
      ("random_init", 0.5): ((0.80, 0.40), (0.81, 0.41), (0.79, 0.42)),
      ("rotation", 0.5): ((0.85, 0.60), (0.86, 0.62), (0.84, 0.61)),
      ("simclr", 0.25): ((0.78, 0.70), (0.82, 0.71), (0.80, 0.72))}
  for (task, width), seeds in values.items():
    for seed, (block1, pre) in enumerate(seeds):
      kind = "random_init" if task == "random_init" else "pretext"
      _cell(root, f"{task}-revnet50-w{width}-s{seed}",
            dict(task=task, kind=kind, backbone="revnet50", width=width,
                 seed=seed),
            [_entry(block1, layer="block1"), _entry(pre)])
  rows = results.pool_seeds(results.rows(results.load_cells(root)))
  (_, header, body, notes), = report.gain_tables(rows)
  assert header[:5] == ["cell", "best layer", "top-1", "random init's best",
                        "gain"]
  assert body == [
      ["rotation revnet50 x0.5", "block1", "85.0 ± 1.0",
       "80.0 ± 1.0 (block1)", "+5.0†", "+20.0†"],
      # 80 against 80: no gain, within the noise; compared at width 0.5.
      ["simclr revnet50 x0.25", "block1", "80.0 ± 2.0",
       "80.0 ± 1.0 (block1)", "+0.0", "+30.0†"]]
  assert any("baseline's width" in n for n in notes)
  out = str(tmp_path / "report")
  report.write_report(root, out, figures=False)
  assert "## Best layer against random initialisation" in open(
      os.path.join(out, "report.md")).read()


def test_kept_cells_make_the_same_report(hand_written, tmp_path):
  kept = str(tmp_path / "kept")
  assert results.keep_cells(hand_written, kept) == 5
  assert sorted(os.listdir(os.path.join(kept, "rotation-revnet50-w4"))) == [
      "cell.json", "pretrain_results.json", "results.json"]
  texts = []
  for root in (hand_written, kept):
    out = str(tmp_path / ("report_" + os.path.basename(root)))
    report.write_report(root, out, figures=False)
    text = open(os.path.join(out, "report.md")).read()
    texts.append(text.replace(root, "ROOT"))
  assert texts[0] == texts[1]
