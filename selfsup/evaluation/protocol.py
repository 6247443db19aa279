"""bin/linear_eval: evaluate a pretraining workdir's representation.

L-BFGS logistic regression on cached features is the paper's main protocol
(section 3.3, supplementary 2); SGD linear and MLP heads are the others. By
default the data source is the one the workdir was pretrained on (its
`config.gin` is read first), the representation `pre_logits`, the training
split "train" and the evaluation split "val" (the held-out split the paper
reports on; "official_val" for comparisons with the literature).
"""
import json
import os
import time

import gin
import tensorflow as tf
from absl import logging

from selfsup import data as data_lib
from selfsup.evaluation import extract, lbfgs, sgd
from selfsup.evaluation import features as features_lib
from selfsup.train import export as export_lib
from selfsup.train.experiment import build_source

PROTOCOLS = ("lbfgs", "sgd_linear", "mlp")
RESULTS = "results.json"


@gin.configurable(module="selfsup")
def linear_eval(workdir, *, data_dir=None, protocol="lbfgs",
                layers=("pre_logits",), train_split="train", eval_split="val",
                fraction=None, batch_size=256, max_iter=800, l2=None,
                max_features=extract.MAX_FEATURES, sgd_kwargs=None,
                export_dir=None, precondition=True):
  """Exports (or reuses) features and fits the evaluation model.

  Args:
    workdir: a pretraining workdir (with export/) and where results go.
    data_dir: the data's location (the --data_dir flag).
    protocol: one of PROTOCOLS.
    layers: endpoints to evaluate, e.g. ("block1", ..., "pre_logits") for the
      layer-wise study (Figure 5).
    train_split, eval_split: splits of the source.
    fraction: low-data regime, e.g. 0.1 or 0.05 of each class of the training
      split (Figure 7).
    batch_size: for feature export.
    max_iter: L-BFGS iterations (800 in the paper).
    precondition: L-BFGS in whitened coordinates (`lbfgs.fit`): the same
      objective, minimised in several times fewer iterations; False runs
      plain L-BFGS as the paper.
    l2: L-BFGS/head penalty lambda; default 100 / (M * C).
    max_features: spatial endpoints are pooled to at most this many.
    sgd_kwargs: arguments of `selfsup.evaluation.sgd.train_head` for the SGD
      protocols.
    export_dir: the exported backbone; default workdir/export.

  Returns:
    The list of result dicts written to workdir/results.json.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is not valid: expected one of "
                     f"{PROTOCOLS}.")
  export_dir = export_dir or os.path.join(workdir, "export")
  info = export_lib.load_info(export_dir)
  for layer in layers:
    if layer not in info["endpoints"]:
      raise ValueError(f"layer {layer!r} is not an endpoint of the exported "
                       f"{info['backbone']}: expected one of "
                       f"{info['endpoints']}.")
  kwargs = {"data_dir": data_dir} if data_dir else {}
  source = build_source(fraction=fraction, **kwargs)
  for split in (train_split, eval_split):
    if split not in source.splits:
      raise ValueError(f"split {split!r} is not a split of {source.name!r}: "
                       f"expected one of {source.splits}.")
  num_classes = source.num_classes
  results = []
  for layer in layers:
    if protocol == "lbfgs":
      result = _lbfgs(export_dir, source, layer, train_split, eval_split,
                      num_classes, workdir, fraction, batch_size, max_iter, l2,
                      max_features, precondition)
    else:
      result = _sgd(protocol, export_dir, source, layer, train_split,
                    eval_split, num_classes, info, workdir, fraction,
                    batch_size, l2, max_features, dict(sgd_kwargs or {}))
    result.update(protocol=protocol, layer=layer, source=source.name,
                  train_split=train_split, eval_split=eval_split,
                  fraction=fraction, backbone=info["backbone"],
                  task=info["task"], pretext=_pretext_accuracy(workdir))
    results.append(result)
    print(f"{info['task']} {info['backbone']} {layer} {protocol} on "
          f"{source.name}:{eval_split}: top-1 {100 * result['top1']:.2f}% "
          f"top-5 {100 * result['top5']:.2f}%", flush=True)
  _record(workdir, results)
  return results


def _lbfgs(export_dir, source, layer, train_split, eval_split, num_classes,
           workdir, fraction, batch_size, max_iter, l2, max_features,
           precondition):
  out_dir = extract.feature_dir(workdir, layer, source.name, fraction)
  tic = time.time()
  extract.export_features(export_dir, source, (train_split, eval_split),
                          out_dir, endpoint=layer, batch_size=batch_size,
                          max_features=max_features)
  export_seconds = time.time() - tic
  train_x, train_y = extract.as_numpy(out_dir, train_split)
  eval_x, eval_y = extract.as_numpy(out_dir, eval_split)
  fit = lbfgs.fit(train_x, train_y, num_classes, l2=l2, max_iter=max_iter,
                  precondition=precondition)
  scores = lbfgs.evaluate(fit, eval_x, eval_y)
  return {"top1": scores["top1"], "top5": scores["top5"],
          "objective": fit.objective, "iterations": fit.iterations,
          "converged": fit.converged, "seconds": fit.seconds,
          "export_seconds": export_seconds, "l2": fit.l2,
          "dim": int(train_x.shape[1]), "num_train": int(train_x.shape[0]),
          "num_eval": int(eval_x.shape[0]), "features": out_dir}


def _sgd(protocol, export_dir, source, layer, train_split, eval_split,
         num_classes, info, workdir, fraction, batch_size, l2, max_features,
         kwargs):
  """SGD linear (on the fly, with the paper's augmentation) or MLP heads.

  `kwargs` go to `sgd.train_head` (epochs, decay_epochs, batch_size, ...)
  plus `augment`: train through the frozen backbone on augmented images
  (default for "sgd_linear", as in the supplementary) rather than on cached
  features (default for "mlp").
  """
  head = "linear" if protocol == "sgd_linear" else "mlp"
  augment = kwargs.pop("augment", head == "linear")
  config = sgd.paper_config(head, patch_based=info["patch_based"])
  config.update(kwargs)
  seed = config.pop("seed", 0)
  if augment:
    backbone = export_lib.load_backbone(export_dir)
    backbone.trainable = False
    specs = info["eval_specs"]
    train_data = data_lib.make_pipeline(
        source, train_split, specs["train"], batch_size=config["batch_size"],
        training=True, seed=seed, repeat=1)
    eval_data = data_lib.make_pipeline(
        source, eval_split, specs["eval"], batch_size=batch_size,
        training=False)
    result = sgd.train_head(head, train_data=train_data, eval_data=eval_data,
                            num_classes=num_classes, l2=l2, backbone=backbone,
                            endpoint=layer, seed=seed, **config)
  else:
    out_dir = extract.feature_dir(workdir, layer, source.name, fraction)
    extract.export_features(export_dir, source, (train_split, eval_split),
                            out_dir, endpoint=layer, batch_size=batch_size,
                            max_features=max_features)
    train_data = features_lib.dataset(out_dir, train_split,
                                      config["batch_size"],
                                      shuffle_buffer=10_000, seed=seed)
    eval_data = features_lib.dataset(out_dir, eval_split, batch_size)
    result = sgd.train_head(head, train_data=train_data, eval_data=eval_data,
                            num_classes=num_classes, l2=l2, seed=seed,
                            **config)
  result.pop("model", None)
  result["augment"] = bool(augment)
  return result


def _pretext_accuracy(workdir):
  """The pretext accuracy on the evaluation split at the end of pretraining."""
  path = os.path.join(workdir, "pretrain_results.json")
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    end = json.load(f).get("pretext_eval_end") or {}
  return end.get("accuracy")


def _record(workdir, results):
  """Merges `results` into workdir/results.json (one entry per setting)."""
  path = os.path.join(workdir, RESULTS)
  entries = []
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      entries = json.load(f)
  key = lambda r: (r["protocol"], r["layer"], r["source"], r["eval_split"],  # noqa: E731
                   r["fraction"])
  new = {key(r) for r in results}
  entries = [e for e in entries if key(e) not in new] + results
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    json.dump(entries, f, indent=2)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  logging.info("Results written to %s.", path)
