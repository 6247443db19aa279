"""A study: the axes of a grid of pretraining runs and their evaluations.

A study gin file binds `study.*` (see gin/study/); `expand(spec)` turns it
into cells. A cell is one pretraining workdir (task x backbone x width x
representation size x backbone option x seed) plus the `bin/linear_eval`
calls made on it (evaluation x data fraction x evaluation source x SGD
schedule). Building the grid needs neither TensorFlow nor data, so
`bin/study --dry_run` is instant.
"""
import dataclasses
import itertools
import json
import os
import re

import gin

from selfsup.core import gin_files
from selfsup.core.checks import ConfigError

# The packaged configs (an installed wheel's selfsup/gin, a checkout's gin/).
GIN_DIR = gin_files.gin_dir() or os.path.join(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gin")
# Baselines are cells too: the random-init one exports the initialisation of
# `random_init_task`'s model, the supervised one trains on labels.
BASELINES = ("random_init", "supervised")
# The random-init baseline's weights stay at their initialisation, but its
# batch-norm statistics are measured on the data, as the pretrained cells'
# are (and as bin/demo's baseline): exported at step 0 after a batch-norm
# recalibration on 60 training batches (`Trainer.recalibrate_batch_norm`).
# Left at their initial values (mean 0, variance 1) the features would be
# unnormalised. Applied after every other binding of the cell;
# `study.random_init_params` replaces them.
RANDOM_INIT_PARAMS = ("TrainConfig.train_steps = 0",
                      "TrainConfig.bn_recalibration_batches = 60")
SGD_EVALUATIONS = ("sgd_linear", "mlp")
_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """The axes and shared settings of a study; see `study` for each field."""
  name: str
  tasks: tuple
  backbones: tuple
  widths: tuple
  task_widths: dict = dataclasses.field(default_factory=dict)
  representation_sizes: tuple = (None,)
  backbone_options: dict = dataclasses.field(default_factory=lambda: {"": {}})
  backbone_kwargs: dict = None
  seeds: tuple = (None,)
  baselines: tuple = ()
  random_init_task: str = "rotation"
  random_init_params: tuple = RANDOM_INIT_PARAMS
  source: str = None
  gin_files: tuple = ()
  params: tuple = ()
  task_params: dict = dataclasses.field(default_factory=dict)
  evaluations: tuple = ("lbfgs",)
  layers: tuple = None
  fractions: tuple = (None,)
  eval_sources: tuple = (None,)
  eval_source_params: dict = dataclasses.field(default_factory=dict)
  sgd_schedules: dict = None
  eval_params: tuple = ()
  pretrain_flags: tuple = ()
  eval_flags: tuple = ()


@gin.configurable("study", module="selfsup.study")
def study(name=gin.REQUIRED, tasks=gin.REQUIRED, backbones=gin.REQUIRED,
          widths=gin.REQUIRED, **kwargs):
  """The study bound in a gin file (`study.tasks = (...)`, ...).

  Args:
    name: the study's name (titles of the report).
    tasks: pretext tasks; each has its gin file, gin/<task>.gin.
    backbones: backbone names (`build_task.backbone`).
    widths: widening factors (`build_task.width`).
    **kwargs: the other fields of `StudySpec`:
      task_widths: {task or baseline: widths} replacing `widths` for that
        task (the paper skips widths that did not fit in memory).
      representation_sizes: sizes of the extra linear layer of section 4.6
        (None: no extra layer).
      backbone_options: {label: backbone kwargs}, e.g. {"": {}, "noskip":
        {"skip_connections": False}}; a non-empty label is part of the name.
      backbone_kwargs: kwargs shared by every cell. When any backbone kwarg
        is set, `build_task.backbone_kwargs` is bound and replaces the one
        of the gin files, so restate theirs here (e.g. bn_momentum); the
        task file's batch-norm group size (%BN_GROUP_SIZE) is kept unless
        `bn_group_size` is given.
      seeds: `TrainConfig.seed` values (None: the gin files' seed).
      baselines: a subset of BASELINES, one cell per backbone and width.
      random_init_task: whose model the random-init baseline exports.
      random_init_params: the random-init baseline's pretraining bindings,
        applied last (default RANDOM_INIT_PARAMS: batch-norm statistics
        measured on the data, weights untouched).
      source: `build_source.name` of pretraining (None: the gin files').
      gin_files: pretraining gin files applied after gin/<task>.gin.
      params: pretraining bindings for every cell.
      task_params: {task: bindings} for one task (or baseline) only.
      evaluations: gin/eval/<name>.gin names (or gin file paths) run by
        bin/linear_eval on every cell.
      layers: endpoints to evaluate (None: the evaluation file's).
      fractions: low-data fractions (None: all the training data).
      eval_sources: evaluation sources (None: the pretraining source).
      eval_source_params: {source: bindings} for one evaluation source.
      sgd_schedules: {label: first decay epoch, or an sgd_kwargs dict} for
        the SGD evaluations ("sgd_linear", "mlp"): section 4.7's schedules.
      eval_params: bindings for every evaluation.
      pretrain_flags, eval_flags: extra command-line flags (e.g. --tpu=x).
  """
  known = {f.name for f in dataclasses.fields(StudySpec)}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    others = sorted(known - {"name", "tasks", "backbones", "widths"})
    raise ConfigError(f"study got unknown settings {unknown}: expected some "
                      f"of {others}.")
  return make_spec(name=name, tasks=tasks, backbones=backbones, widths=widths,
                   **kwargs)


def make_spec(**fields):
  """A checked `StudySpec`: every bad field is named with what is expected."""
  spec = StudySpec(**fields)
  if not isinstance(spec.name, str) or not spec.name.strip():
    raise ConfigError(f"study.name={spec.name!r} is not valid: expected a "
                      f"non-empty title.")
  for field in ("tasks", "backbones", "widths"):
    if not _seq(getattr(spec, field)):
      raise ConfigError(f"study.{field}={getattr(spec, field)!r} is not valid: "
                        f"expected a non-empty list.")
  for task in tuple(spec.tasks) + (spec.random_init_task,):
    _check_str("tasks", task)
    if not os.path.exists(os.path.join(GIN_DIR, f"{task}.gin")):
      raise ConfigError(f"task {task!r} has no gin file gin/{task}.gin: "
                        f"expected one of {_task_names()}.")
  for backbone in spec.backbones:
    _check_str("backbones", backbone)
  widths = list(spec.widths) + [w for ws in spec.task_widths.values()
                                for w in ws]
  for width in widths:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or (
        width <= 0):
      raise ConfigError(f"width {width!r} is not valid: expected a positive "
                        f"number.")
  for task in spec.task_widths:
    if task not in tuple(spec.tasks) + tuple(spec.baselines):
      raise ConfigError(f"study.task_widths names {task!r}, which is not in "
                        f"study.tasks={tuple(spec.tasks)} or study.baselines="
                        f"{tuple(spec.baselines)}.")
  for size in spec.representation_sizes:
    if size is not None and (not isinstance(size, int) or size <= 0):
      raise ConfigError(f"representation size {size!r} is not valid: expected "
                        f"None or a positive int.")
  if not isinstance(spec.backbone_options, dict) or not spec.backbone_options:
    raise ConfigError(f"study.backbone_options={spec.backbone_options!r} is "
                      f"not valid: expected a non-empty dict label -> kwargs.")
  for label, kwargs in spec.backbone_options.items():
    if label and not _NAME.match(label):
      raise ConfigError(f"backbone option label {label!r} is not valid: "
                        f"expected letters, digits, '_', '.', '-'.")
    if not isinstance(kwargs, dict):
      raise ConfigError(f"backbone option {label!r}: {kwargs!r} is not a dict.")
  for baseline in spec.baselines:
    if baseline not in BASELINES:
      raise ConfigError(f"baseline {baseline!r} is not valid: expected some "
                        f"of {BASELINES}.")
  for fraction in spec.fractions:
    if fraction is not None and not 0 < fraction <= 1:
      raise ConfigError(f"fraction {fraction!r} is not valid: expected None "
                        f"or a number in (0, 1].")
  for name in spec.evaluations:
    _eval_file(name)
  for field in ("gin_files", "params", "eval_params", "pretrain_flags",
                "eval_flags", "random_init_params"):
    value = getattr(spec, field)
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
      raise ConfigError(f"study.{field}={value!r} is not valid: expected a "
                        f"list of strings.")
  for label, schedule in (spec.sgd_schedules or {}).items():
    sgd_kwargs(label, schedule)
  return spec


def _seq(value):
  return isinstance(value, (list, tuple)) and len(value) > 0


def _check_str(field, value):
  if not isinstance(value, str) or not value or not _NAME.match(value):
    raise ConfigError(f"study.{field}: {value!r} is not valid: expected a "
                     f"non-empty name of letters, digits, '_', '.', '-'.")


def _task_names():
  return sorted(f[:-4] for f in os.listdir(GIN_DIR) if f.endswith(".gin")
                and f != "demo.gin")


def _eval_file(name):
  """gin/eval/<name>.gin, or `name` itself if it is a gin file path."""
  if name.endswith(".gin"):
    return name
  path = os.path.join(GIN_DIR, "eval", f"{name}.gin")
  if not os.path.exists(path):
    choices = sorted(f[:-4] for f in os.listdir(os.path.join(GIN_DIR, "eval")))
    raise ConfigError(f"evaluation {name!r} has no file gin/eval/{name}.gin: "
                     f"expected one of {choices} or a path ending in .gin.")
  return f"gin/eval/{name}.gin"


def sgd_kwargs(label, schedule):
  """A schedule as linear_eval.sgd_kwargs: an epoch is section 4.7's first
  decay (then 20 + 20 epochs with a second decay)."""
  if isinstance(schedule, dict):
    return dict(schedule)
  if isinstance(schedule, int) and not isinstance(schedule, bool) and (
      schedule > 0):
    return {"epochs": schedule + 40, "decay_epochs": (schedule,
                                                      schedule + 20)}
  raise ConfigError(f"SGD schedule {label!r}: {schedule!r} is not valid: "
                   f"expected a first-decay epoch (positive int) or a dict "
                   f"of sgd_kwargs.")


def lit(value):
  """`value` as a gin literal, strings double-quoted (readable in a shell)."""
  if isinstance(value, str):
    return json.dumps(value)
  if isinstance(value, tuple):
    return "(" + ", ".join(lit(v) for v in value) + ("," if len(value) == 1
                                                      else "") + ")"
  if isinstance(value, list):
    return "[" + ", ".join(lit(v) for v in value) + "]"
  if isinstance(value, dict):
    items = (f"{lit(k)}: {lit(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"
  return repr(value)


def fmt(value):
  """4.0 -> '4', 0.5 -> '0.5': numbers as they read in names and tables."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


@dataclasses.dataclass
class Cell:
  """One pretraining workdir and its evaluations."""
  name: str
  settings: dict
  pretrain: dict      # {"gin_files": [...], "params": [...]}
  evals: list         # [{"label", "settings", "gin_files", "params"}]


def cell_name(settings):
  """task-backbone-w<width>[-r<size>][-<option>][-s<seed>]."""
  parts = [settings["task"], settings["backbone"],
           f"w{fmt(settings['width'])}"]
  if settings.get("representation_size"):
    parts.append(f"r{settings['representation_size']}")
  if settings.get("option"):
    parts.append(settings["option"])
  if settings.get("seed") is not None:
    parts.append(f"s{settings['seed']}")
  return "-".join(parts)


def expand(spec):
  """The cells of `spec`, in a stable order (task, backbone, width, ...)."""
  cells = []
  kinds = [(t, "pretext") for t in spec.tasks] + [
      (b, b) for b in spec.baselines]
  for (task, kind), backbone in itertools.product(kinds, spec.backbones):
    widths = spec.task_widths.get(task, spec.widths)
    for width, size, (option, option_kwargs), seed in itertools.product(
        widths, spec.representation_sizes, spec.backbone_options.items(),
        spec.seeds):
      settings = {"task": task, "kind": kind, "backbone": backbone,
                  "width": width, "representation_size": size,
                  "option": option or None,
                  "option_kwargs": dict(option_kwargs), "seed": seed,
                  "source": spec.source, "study": spec.name}
      cells.append(Cell(cell_name(settings), settings,
                        _pretrain_args(spec, settings), _evals(spec)))
  names = [c.name for c in cells]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ConfigError(f"study {spec.name!r}: cells {duplicates} share a name: "
                     f"expected distinct axis values.")
  return cells


def _backbone_kwargs(kwargs):
  """The binding's dict: `kwargs`, keeping the task file's batch-norm group
  size (the BN_GROUP_SIZE macro of gin/common/pretraining.gin) unless
  `kwargs` sets one."""
  text = lit(kwargs)
  if "bn_group_size" in kwargs:
    return text
  return text[:-1] + (", " if kwargs else "") + (
      '"bn_group_size": %BN_GROUP_SIZE}')


def _pretrain_args(spec, settings):
  task, kind = settings["task"], settings["kind"]
  task_file = spec.random_init_task if kind == "random_init" else task
  params = list(spec.params) + list(spec.task_params.get(task, ()))
  if spec.source:
    params.append(f"build_source.name = {lit(spec.source)}")
  params += [f"build_task.backbone = {lit(settings['backbone'])}",
             f"build_task.width = {lit(settings['width'])}"]
  kwargs = dict(spec.backbone_kwargs or {}, **settings["option_kwargs"])
  if settings["representation_size"]:
    kwargs["representation_size"] = settings["representation_size"]
  if kwargs or spec.backbone_kwargs is not None:
    params.append(f"build_task.backbone_kwargs = {_backbone_kwargs(kwargs)}")
  if settings["seed"] is not None:
    params.append(f"TrainConfig.seed = {lit(settings['seed'])}")
  if kind == "random_init":
    params += list(spec.random_init_params)
  return {"gin_files": [f"gin/{task_file}.gin"] + list(spec.gin_files),
          "params": params}


def _evals(spec):
  evals = []
  for name, fraction, source in itertools.product(
      spec.evaluations, spec.fractions, spec.eval_sources):
    base = os.path.basename(name)[:-4] if name.endswith(".gin") else name
    schedules = ((spec.sgd_schedules or {None: None}) if base in
                 SGD_EVALUATIONS else {None: None})
    for schedule, value in schedules.items():
      label = "-".join([base] + ([f"f{fmt(fraction)}"] if fraction else [])
                        + ([source] if source else [])
                        + ([f"sgd{schedule}"] if schedule else []))
      params = list(spec.eval_params)
      if spec.layers:
        params.append(f"linear_eval.layers = {lit(tuple(spec.layers))}")
      if fraction:
        params.append(f"linear_eval.fraction = {lit(fraction)}")
      if source:
        params.append(f"build_source.name = {lit(source)}")
        params += list(spec.eval_source_params.get(source, ()))
      if schedule:
        params.append(
            f"linear_eval.sgd_kwargs = {lit(sgd_kwargs(schedule, value))}")
      evals.append({"label": label,
                    "settings": {"evaluation": base, "fraction": fraction,
                                 "eval_source": source,
                                 "sgd_schedule": schedule},
                    "gin_files": [_eval_file(name)], "params": params})
  return evals
