"""bin/linear_eval: evaluate a pretraining workdir's representation.

L-BFGS logistic regression on cached features is the paper's main protocol
(section 3.3, supplementary 2); SGD linear and MLP heads are the others. By
default the data source is the one the workdir was pretrained on (its
`config.gin` is read first), the representation `pre_logits`, the training
split "train" and the evaluation split "val" (the held-out split the paper
reports on; "official_val" for comparisons with the literature).
"""
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import time
from typing import Any, Mapping, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from selfsup import data as data_lib
from selfsup.evaluation import extract, lbfgs, sgd
from selfsup.evaluation import features as features_lib
from selfsup.core import checks, files
from selfsup.core import pooling as pooling_lib
from selfsup.core import lock as lock_lib
from selfsup.core.errors import NotFiniteError, WorkdirError
from selfsup.workdir import export as export_lib
from selfsup.workdir import sources

PROTOCOLS = ("lbfgs", "sgd_linear", "mlp")
RESULTS = "results.json"


@dataclasses.dataclass
class EvalSettings:
  """Every setting of one linear evaluation, checked when made.

  The fields are `linear_eval`'s arguments (see there); `recorded` gives
  the ones that determine a result, as results.json keeps them.
  """
  protocol: str = "lbfgs"
  layers: Sequence[str] = ("pre_logits",)
  train_split: str = "train"
  eval_split: str = "val"
  fraction: Optional[float] = None
  batch_size: int = 256
  max_iter: int = 800
  l2: Optional[float] = None
  max_features: int = extract.MAX_FEATURES
  pooling: str = pooling_lib.DEFAULT_RULE
  sgd_kwargs: Optional[Mapping[str, Any]] = None
  precondition: bool = True
  data_dir: Optional[str] = None
  export_dir: Optional[str] = None
  feature_dtype: str = "float32"
  feature_format: str = "tfrecord"
  memory_budget_mb: Optional[float] = None

  def __post_init__(self):
    name = lambda field: f"linear_eval.{field}"  # noqa: E731
    checks.string(name("protocol"), self.protocol, choices=PROTOCOLS)
    self.layers = tuple(checks.sequence(name("layers"), self.layers,
                                        checks.string, allow_empty=False))
    checks.string(name("train_split"), self.train_split)
    checks.string(name("eval_split"), self.eval_split)
    if self.fraction is not None:
      checks.number(name("fraction"), self.fraction, minimum=0, maximum=1)
      if self.fraction <= 0:
        raise checks.ConfigError(
            f"{name('fraction')}={self.fraction!r} is invalid: expected a "
            "number in (0, 1] or None.")
    checks.integer(name("batch_size"), self.batch_size, minimum=1)
    checks.integer(name("max_iter"), self.max_iter, minimum=1)
    checks.number(name("l2"), self.l2, minimum=0, optional=True)
    checks.integer(name("max_features"), self.max_features, minimum=1)
    pooling_lib.check_rule(self.pooling, name("pooling"))
    checks.mapping(name("sgd_kwargs"), self.sgd_kwargs)
    checks.boolean(name("precondition"), self.precondition)
    checks.string(name("data_dir"), self.data_dir, optional=True)
    checks.string(name("export_dir"), self.export_dir, optional=True)
    checks.string(name("feature_dtype"), self.feature_dtype,
                  choices=features_lib.DTYPES)
    checks.string(name("feature_format"), self.feature_format,
                  choices=features_lib.SHARD_FORMATS)
    checks.number(name("memory_budget_mb"), self.memory_budget_mb, minimum=0,
                  optional=True)
    if self.memory_budget_mb is not None and self.protocol != "lbfgs":
      raise checks.ConfigError(
          f"{name('memory_budget_mb')}={self.memory_budget_mb!r} is invalid "
          f"with protocol {self.protocol!r}: streaming from disk is for "
          "'lbfgs' (the SGD protocols always read the cache batch by batch).")

  @property
  def storage(self) -> dict:
    """How the feature cache stores values (part of its fingerprint)."""
    return {"dtype": self.feature_dtype, "shard_format": self.feature_format}

  @property
  def recorded(self) -> dict:
    """The settings that determine a result (results.json's `settings`)."""
    out = {"batch_size": self.batch_size, "max_features": self.max_features,
           "l2": self.l2}
    if self.pooling != pooling_lib.DEFAULT_RULE:
      out["pooling"] = self.pooling  # it changes the block features
    if self.feature_dtype != "float32":
      out["feature_dtype"] = self.feature_dtype  # it changes the features
    if self.protocol == "lbfgs":
      out.update(max_iter=self.max_iter, precondition=self.precondition)
    else:
      out["sgd_kwargs"] = dict(self.sgd_kwargs or {})
    return out


@dataclasses.dataclass
class _Context:
  """What every layer's evaluation of one workdir shares."""
  workdir: str
  export_dir: str
  info: dict
  export: dict
  source: Any
  settings: EvalSettings

  @property
  def splits(self):
    return (self.settings.train_split, self.settings.eval_split)

  def feature_dir(self, layer):
    return extract.feature_dir(self.workdir, layer, self.source.name,
                               self.settings.fraction)


@gin.configurable(module="selfsup")
def linear_eval(workdir, *, data_dir=None, protocol="lbfgs",
                layers=("pre_logits",), train_split="train", eval_split="val",
                fraction=None, batch_size=256, max_iter=800, l2=None,
                max_features=extract.MAX_FEATURES,
                pooling=pooling_lib.DEFAULT_RULE, sgd_kwargs=None,
                export_dir=None, precondition=True, feature_dtype="float32",
                feature_format="tfrecord", memory_budget_mb=None):
  """Exports (or reuses) features and fits the evaluation model.

  Args:
    workdir: a pretraining workdir (with export/) and where results go.
    data_dir: the data's location (the --data_dir flag); default the one the
      workdir recorded (`data.json`) when the source is the one it was
      pretrained on.
    protocol: one of PROTOCOLS.
    layers: endpoints to evaluate, e.g. ("block1", ..., "pre_logits") for the
      layer-wise study (Figure 5). Their features come from one pass of the
      backbone over the data.
    train_split, eval_split: splits of the source.
    fraction: low-data regime, e.g. 0.1 or 0.05 of each class of the training
      split (Figure 7).
    batch_size: for feature export.
    max_iter: L-BFGS iterations (800 in the paper).
    precondition: L-BFGS in whitened coordinates (`lbfgs.fit`): the same
      objective, minimised in several times fewer iterations; False runs
      plain L-BFGS as the paper.
    l2: L-BFGS/head penalty lambda; default 100 / (M * C).
    max_features: spatial endpoints are pooled to about this many.
    pooling: how: "nearest" (the authors' adaptive grid), "floor" or "max"
      (the authors' `--pool_mode max`; `selfsup.core.pooling`).
    sgd_kwargs: arguments of `selfsup.evaluation.sgd.train_head` for the SGD
      protocols.
    export_dir: the exported backbone; default workdir/export.
    feature_dtype: how the cache stores features: "float32", or "float16" /
      "bfloat16" for half the disk and memory (read back as float32; the
      objective is accumulated in float32 and float64 as always).
    feature_format: "tfrecord" (v1 caches) or "raw" (fixed-length records,
      read without parsing: what streaming wants).
    memory_budget_mb: L-BFGS only: None fits in memory; a number streams the
      training features from the cache once per objective evaluation in
      chunks that fit this many MiB (the evaluation split is scored chunk by
      chunk too), for features larger than memory (`lbfgs.fit`).

  Cached features carry a fingerprint of everything that determines them
  (the export's weights, the source and its arguments, split, layer,
  pooling, preprocessing): a cache made under another is recomputed, never
  read.

  Returns:
    The list of result entries added to workdir/results.json (see `entry`).
  """
  return run(workdir, EvalSettings(
      protocol=protocol, layers=layers, train_split=train_split,
      eval_split=eval_split, fraction=fraction, batch_size=batch_size,
      max_iter=max_iter, l2=l2, max_features=max_features, pooling=pooling,
      sgd_kwargs=sgd_kwargs, precondition=precondition, data_dir=data_dir,
      export_dir=export_dir, feature_dtype=feature_dtype,
      feature_format=feature_format, memory_budget_mb=memory_budget_mb))


def run(workdir, settings: EvalSettings):
  """`linear_eval` with its settings as one `EvalSettings`."""
  export_dir = settings.export_dir or os.path.join(workdir, "export")
  info = export_lib.load_info(export_dir)
  _read_results(workdir)  # a damaged results.json fails before any work
  pretext = _pretext_accuracy(workdir)  # so does pretrain_results.json
  for layer in settings.layers:
    if layer not in info["endpoints"]:
      raise checks.ConfigError(
          f"linear_eval.layers contains {layer!r}, which is invalid: expected "
          f"endpoints of the exported {info['backbone']}, from "
          f"{info['endpoints']}.")
  source = eval_source(workdir, settings.data_dir, settings.fraction)
  for field in ("train_split", "eval_split"):
    split = getattr(settings, field)
    if split not in source.splits:
      raise checks.ConfigError(
          f"linear_eval.{field}={split!r} is invalid: expected a split of "
          f"{source.name!r}, one of {tuple(source.splits)}.")
  ctx = _Context(workdir=workdir, export_dir=export_dir, info=info,
                 export=dict(export_lib.fingerprint(export_dir),
                             dir=export_dir),
                 source=source, settings=settings)
  augment = settings.protocol != "lbfgs" and _augments(settings)
  prints, export_seconds = {}, 0.0
  if not augment:  # every layer's features from one pass over the data
    tic = time.time()
    prints = cached_features(ctx, settings.layers)
    export_seconds = time.time() - tic
  results = []
  for layer in settings.layers:
    if settings.protocol == "lbfgs":
      result = _lbfgs(ctx, layer, prints[layer])
    else:
      result = _sgd(ctx, layer, prints.get(layer))
    if prints:
      result["export_seconds"] = export_seconds
    _check_export_unchanged(ctx)
    results.append(entry(result, info=info, export=ctx.export,
                         source=source, protocol=settings.protocol,
                         layer=layer, train_split=settings.train_split,
                         eval_split=settings.eval_split,
                         fraction=settings.fraction,
                         settings=settings.recorded,
                         pretext=pretext))
    print(f"{info['task']} {info['backbone']} {layer} {settings.protocol} on "
          f"{source.name}:{settings.eval_split}: top-1 "
          f"{100 * result['top1']:.2f}% top-5 {100 * result['top5']:.2f}%",
          flush=True)
  _record(workdir, results)
  return results


def _augments(settings):
  """Whether an SGD protocol trains through the backbone on augmented
  images (default for "sgd_linear", as the supplementary) rather than on
  cached features (default for "mlp")."""
  return bool((settings.sgd_kwargs or {}).get(
      "augment", settings.protocol == "sgd_linear"))


def _bound(parameter):
  try:
    return gin.query_parameter(parameter)
  except ValueError:
    return None


def eval_source(workdir, data_dir=None, fraction=None):
  """The evaluation source: the gin-bound `build_source` (the workdir's
  config.gin, then the evaluation's gin files), or the one the workdir
  recorded in data.json. The data location is `data_dir` if given, else the
  recorded one when the source is the one pretrained on."""
  recorded = sources.load_data_record(workdir)
  name = _bound("build_source.name")
  if name is None or name is gin.REQUIRED:
    if recorded is None:
      raise checks.ConfigError(
          f"build_source.name is not bound and {workdir} records no data "
          f"source ({sources.DATA_RECORD}): expected a binding, e.g. "
          "--gin_param=\"build_source.name='imagenet2012'\".")
    record = dict(recorded, fraction=fraction, data_dir=data_dir or
                  recorded.get("data_dir"))
    return sources.make_source(sources.source_record(**record))
  if (not data_dir and recorded and recorded.get("name") == name
      and not _bound("build_source.data_dir")):
    data_dir = recorded.get("data_dir")
  kwargs = {"data_dir": data_dir} if data_dir else {}
  return sources.build_source(fraction=fraction, **kwargs)


def feature_fingerprint(export, source, split, layer, max_features, spec,
                        dtype="float32", rule=pooling_lib.DEFAULT_RULE):
  """Everything that determines the cached features of one split."""
  return {
      "format": features_lib.FORMAT,
      "export": {k: export[k] for k in ("weights_sha256", "step", "task",
                                        "backbone")},
      "source": getattr(source, "record", {"name": source.name}),
      "split": split,
      "layer": layer,
      # The pooling's explicit version, not a hash of the code: a comment
      # or a refactor keeps every cache; a change of output bumps it.
      "pooling": {"max_features": int(max_features), "rule": rule,
                  "version": pooling_lib.VERSION},
      "preprocessing": spec,
      "dtype": dtype,
  }


def cached_features(ctx, layers):
  """Exports (or reuses) the features of both splits for every layer, all
  layers from one pass of the backbone; {layer: {split: fingerprint}}.

  A split cached under another fingerprint is replaced (the log says which
  entries differ); one cached under this fingerprint is kept or resumed.
  """
  spec = ctx.info["eval_specs"]["eval"]
  settings = ctx.settings
  prints = {layer: {split: feature_fingerprint(
      ctx.export, ctx.source, split, layer, settings.max_features, spec,
      settings.feature_dtype, settings.pooling) for split in ctx.splits}
            for layer in layers}
  for layer in layers:
    for split in ctx.splits:
      features_lib.claim(ctx.feature_dir(layer), split, prints[layer][split],
                         layer=layer, **settings.storage)
  extract.export_features(
      ctx.export_dir, ctx.source, ctx.splits,
      {layer: ctx.feature_dir(layer) for layer in layers},
      endpoint=tuple(layers), batch_size=settings.batch_size,
      max_features=settings.max_features, spec=spec,
      pooling_rule=settings.pooling, **settings.storage)
  return prints


def _cache_record(ctx, layer, prints):
  return {"features": ctx.feature_dir(layer),
          "features_sha256": {k: features_lib.fingerprint_sha256(v)
                              for k, v in prints.items()}}


def _lbfgs(ctx, layer, prints):
  settings = ctx.settings
  out_dir = ctx.feature_dir(layer)
  train_split, eval_split = ctx.splits
  if settings.memory_budget_mb is None:
    train_x, train_y = features_lib.read_split(
        out_dir, train_split, fingerprint=prints[train_split])
    eval_x, eval_y = features_lib.read_split(
        out_dir, eval_split, fingerprint=prints[eval_split])
    eval_y = np.asarray(eval_y, np.int64)
  else:  # both splits stay on disk
    train_x, train_y = features_lib.ShardedFeatures(
        out_dir, train_split, fingerprint=prints[train_split]), None
    eval_x, eval_y = features_lib.ShardedFeatures(
        out_dir, eval_split, fingerprint=prints[eval_split]), None
  fit = lbfgs.fit(train_x, train_y, ctx.source.num_classes, l2=settings.l2,
                  max_iter=settings.max_iter,
                  precondition=settings.precondition,
                  memory_budget_mb=settings.memory_budget_mb)
  _check_finite(layer, "L-BFGS", objective=fit.objective,
                weights=fit.weights, bias=fit.bias)
  if settings.memory_budget_mb is None:
    scores = lbfgs.evaluate(fit, eval_x, eval_y)
  else:
    scores = _evaluate_streamed(fit, eval_x, settings.memory_budget_mb)
  (num_train, dim), num_eval = train_x.shape, eval_x.shape[0]
  return {"top1": scores["top1"], "top5": scores["top5"],
          "objective": fit.objective, "iterations": fit.iterations,
          "converged": fit.converged, "seconds": fit.seconds, "l2": fit.l2,
          "dim": int(dim), "num_train": int(num_train),
          "num_eval": int(num_eval),
          "streamed_mb": settings.memory_budget_mb,
          **_cache_record(ctx, layer, prints)}


def _evaluate_streamed(fit, sharded, memory_budget_mb):
  """`lbfgs.evaluate` over a split left on disk, chunk by chunk within
  `memory_budget_mb` MiB."""
  rows = max(1, int(memory_budget_mb * 2**20) // sharded.chunk_bytes(1))
  correct, n = {"top1": 0, "top5": 0}, 0
  for x, y in sharded.chunks(rows):
    scores = lbfgs.evaluate(fit, x, y)
    for k in correct:
      correct[k] += round(scores[k] * scores["num_examples"])
    n += scores["num_examples"]
  return dict(top1=correct["top1"] / n, top5=correct["top5"] / n,
              num_examples=n)


def _sgd(ctx, layer, prints):
  """SGD linear (on the fly, with the paper's augmentation) or MLP heads
  (on the cached features: `prints` is their fingerprints).

  `sgd_kwargs` go to `sgd.train_head` (epochs, decay_epochs, batch_size,
  ...) plus `augment` (see `_augments`).
  """
  settings = ctx.settings
  head = "linear" if settings.protocol == "sgd_linear" else "mlp"
  kwargs = dict(settings.sgd_kwargs or {})
  kwargs.pop("augment", None)
  config = sgd.paper_config(head, patch_based=ctx.info["patch_based"])
  config.update(kwargs)
  seed = config.pop("seed", 0)
  train_split, eval_split = ctx.splits
  common = dict(num_classes=ctx.source.num_classes, l2=settings.l2, seed=seed,
                **config)
  if prints is None:
    backbone = export_lib.load_backbone(ctx.export_dir)
    backbone.trainable = False
    specs = ctx.info["eval_specs"]
    train_data = data_lib.make_pipeline(
        ctx.source, train_split, specs["train"],
        batch_size=config["batch_size"], training=True, seed=seed, repeat=1)
    eval_data = data_lib.make_pipeline(
        ctx.source, eval_split, specs["eval"], batch_size=settings.batch_size,
        training=False)
    with _not_finite_as_error(layer, head):
      result = sgd.train_head(head, train_data=train_data,
                              eval_data=eval_data, backbone=backbone,
                              endpoint=layer,
                              max_features=settings.max_features,
                              pooling_rule=settings.pooling, **common)
    extra = {}
  else:
    out_dir = ctx.feature_dir(layer)
    train_data = features_lib.dataset(
        out_dir, train_split, config["batch_size"], shuffle_buffer=10_000,
        seed=seed, fingerprint=prints[train_split])
    eval_data = features_lib.dataset(out_dir, eval_split, settings.batch_size,
                                     fingerprint=prints[eval_split])
    with _not_finite_as_error(layer, head):
      result = sgd.train_head(head, train_data=train_data,
                              eval_data=eval_data, **common)
    extra = _cache_record(ctx, layer, prints)
  model = result.pop("model", None)
  _check_finite(layer, f"SGD {head}", train_loss=result.get("train_loss", 0),
                weights=model.get_weights() if model is not None else [])
  result["augment"] = prints is None
  result.update(extra)
  return result


def _check_finite(layer, fit, **values):
  """Refuses a fit whose objective or weights are NaN or infinite: its
  scores would be meaningless (a NaN model ties every class)."""
  bad = [name for name, value in values.items()
         if not all(np.all(np.isfinite(np.asarray(v, np.float64)))
                    for v in (value if isinstance(value, list) else [value]))]
  if bad:
    shown = {k: float(v) for k, v in values.items()
             if not isinstance(v, list) and np.ndim(v) == 0}
    raise NotFiniteError(
        f"The {fit} fit on layer {layer!r} gave non-finite {', '.join(bad)} "
        f"({shown}): no score is recorded. Lower linear_eval.l2 or check the "
        "features (a diverged or collapsed backbone).")


@contextlib.contextmanager
def _not_finite_as_error(layer, head):
  try:
    yield
  except FloatingPointError as err:
    raise NotFiniteError(f"The SGD {head} fit on layer {layer!r} diverged: "
                         f"{err}; no score is recorded. Lower the learning "
                         "rate or linear_eval.l2.") from err


def _check_export_unchanged(ctx):
  """Refuses to score features of weights other than the ones recorded:
  the export was rewritten (a pretraining re-exported) while they were
  computed. The export's info.json is removed before its files are
  replaced and written after, so an unchanged hash means unchanged
  weights."""
  try:  # info.json alone: cheap, even for exports without weights_sha256
    now = export_lib.load_info(ctx.export_dir)
  except FileNotFoundError:
    now = None
  if now is None or any(now.get(k) != ctx.info.get(k)
                        for k in ("weights_sha256", "step")):
    raise WorkdirError(
        f"The export {ctx.export_dir} changed during the evaluation (now: "
        f"{'incomplete' if now is None else 'step %s' % now.get('step')}; it "
        f"started at step {ctx.export['step']}): its features may mix two "
        "models. Run linear_eval again once the pretraining ends.")


def entry(result, *, info, export, source, protocol, layer, train_split,
          eval_split, fraction, settings, pretext):
  """A self-describing results.json entry: what was evaluated (task,
  backbone, the export's fingerprint), how (protocol, layer, the source
  and its arguments, splits, fraction, every other setting), the scores,
  and `key`, a hash of the what and how: entries with another key never
  replace each other."""
  what = {
      "task": info["task"], "backbone": info["backbone"],
      "width": (info.get("backbone_config") or {}).get("width"),
      "export": dict(export),
      "protocol": protocol, "layer": layer, "source": source.name,
      "source_args": getattr(source, "record", None),
      "train_split": train_split, "eval_split": eval_split,
      "fraction": fraction, "settings": dict(settings),
  }
  identity = dict(what, export={k: v for k, v in export.items()
                                if k != "dir"})
  key = hashlib.sha256(json.dumps(identity, sort_keys=True,
                                  default=str).encode()).hexdigest()[:16]
  return dict(what, **result, key=key, pretext=pretext,
              time=datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"))


def _pretext_accuracy(workdir):
  """The pretext accuracy on the evaluation split at the end of pretraining."""
  path = os.path.join(workdir, "pretrain_results.json")
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      end = json.load(f).get("pretext_eval_end") or {}
    return end.get("accuracy")
  except (ValueError, AttributeError, UnicodeDecodeError) as err:
    raise WorkdirError(f"{path} is not a pretraining record (a JSON object "
                       f"with pretext_eval_end): {err}. Run bin/pretrain "
                       "again to rewrite it.") from err


def _read_results(workdir):
  """The entries of workdir/results.json ([] if none); a file that is not a
  JSON list of entries raises WorkdirError naming it."""
  path = os.path.join(workdir, RESULTS)
  if not tf.io.gfile.exists(path):
    return []
  return files.read_record(
      path, list, damaged="move it away or repair it; its entries would be "
      "lost.", wrong="is not a list of result entries: move it away or "
      "repair it.")


def _record(workdir, results):
  """Merges `results` into workdir/results.json: an entry with the same
  `key` (same export, same settings) is replaced, any other kept. The read,
  merge and write hold a lock, so evaluations running together keep every
  entry."""
  path = os.path.join(workdir, RESULTS)
  with lock_lib.file_lock(path):
    entries = _read_results(workdir)
    new = {r["key"] for r in results}
    entries = [e for e in entries if e.get("key") not in new] + results
    files.atomic_write(path, json.dumps(entries, indent=2, default=str))
  logging.info("Results written to %s.", path)
