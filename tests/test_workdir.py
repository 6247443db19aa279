"""A workdir's records: feature caches that never serve stale features,
results.json entries that never overwrite another setting, re-runs that
change nothing, scratch files inside the workdir, seeded initialisation,
the pretext evaluation's extent and the batch-norm switch."""
import contextlib
import json
import os
import random

import numpy as np
import pytest

from selfsup.evaluation import features as features_lib
from selfsup.evaluation import protocol
from selfsup.train import TrainConfig, Trainer
from selfsup.train import experiment
from selfsup.workdir import sources
from tests import training_runs as runs


def _source(**kwargs):
  record = sources.source_record(
      "digits", source_kwargs={"image_size": runs.IMAGE_SIZE}, **kwargs)
  return sources.make_source(record)


def _trainer(workdir, steps, seed=1, **cfg):
  cfg = dict(dict(steps_per_loop=2, checkpoint_steps=2, eval_split="val",
                  eval_batches=1), **cfg)
  config = runs.config(train_steps=steps, seed=seed, **cfg)
  return Trainer(runs.make_task("rotation"), _source(), str(workdir), config)


def _shards(out_dir):
  return {name: os.stat(os.path.join(out_dir, name)).st_mtime_ns
          for name in sorted(os.listdir(out_dir)) if name.endswith(".tfrecord")}


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _evaluate(workdir, **kwargs):
  kwargs.setdefault("max_iter", 5)
  return protocol.linear_eval(str(workdir), **kwargs)


def test_feature_cache_follows_the_export_and_results_keep_every_setting(
    tmp_path, caplog):
  workdir = tmp_path / "rotation"
  experiment.run(_trainer(workdir, 2))
  with open(workdir / "export" / "info.json") as f:
    first_hash = json.load(f)["weights_sha256"]
  [first] = _evaluate(workdir)
  out_dir = first["features"]
  meta = features_lib.load_metadata(out_dir, "train")
  assert meta["fingerprint"]["export"]["weights_sha256"] == first_hash
  assert meta["fingerprint"]["source"]["name"] == "digits"
  assert meta["fingerprint"]["split"] == "train"
  assert first["export"]["weights_sha256"] == first_hash
  assert first["source_args"] == _source().record
  assert first["settings"]["max_iter"] == 5 and first["task"] == "rotation"
  shards = _shards(out_dir)

  # The same settings again: the cache is read, the entry replaced.
  [again] = _evaluate(workdir)
  assert _shards(out_dir) == shards and again["key"] == first["key"]
  assert len(_results(workdir)) == 1
  # Another setting: the cache is read, a second entry kept beside the first.
  [other] = _evaluate(workdir, max_iter=3)
  assert _shards(out_dir) == shards and other["key"] != first["key"]
  assert [r["settings"]["max_iter"] for r in _results(workdir)] == [5, 3]

  # Retrained further: the cache is recomputed, never read, and says why.
  experiment.run(_trainer(workdir, 4))
  with open(workdir / "export" / "info.json") as f:
    second_hash = json.load(f)["weights_sha256"]
  assert second_hash != first_hash
  caplog.clear()
  with caplog.at_level("WARNING"):
    [retrained] = _evaluate(workdir)
  assert "Recomputing the features" in caplog.text
  assert "export.weights_sha256" in caplog.text
  meta = features_lib.load_metadata(out_dir, "train")
  assert meta["fingerprint"]["export"]["weights_sha256"] == second_hash
  assert meta["fingerprint"]["export"]["step"] == 4
  assert retrained["export"]["step"] == 4
  entries = _results(workdir)
  assert len(entries) == 3 and len({e["key"] for e in entries}) == 3

  # export_dir pointed at another model: recomputed from that model.
  elsewhere = tmp_path / "elsewhere"
  experiment.run(_trainer(elsewhere, 0, seed=2))
  [moved] = _evaluate(workdir, export_dir=str(elsewhere / "export"))
  meta = features_lib.load_metadata(out_dir, "train")
  assert meta["fingerprint"]["export"]["step"] == 0
  assert moved["export"]["dir"] == str(elsewhere / "export")
  assert moved["top1"] != retrained["top1"] or moved["objective"] != \
      retrained["objective"]
  assert len(_results(workdir)) == 4


def test_streamed_and_half_precision_evaluations(tmp_path):
  """linear_eval streaming both splits from a raw cache within a small
  memory budget fits the same objective as in memory; a float16 cache is
  another cache (its own fingerprint and results entry)."""
  workdir = tmp_path / "rotation"
  experiment.run(_trainer(workdir, 1))
  # Run to convergence: the two fits may take different paths (the
  # preconditioner's sample rows differ) to the same minimum.
  [whole] = _evaluate(workdir, max_iter=300)
  [streamed] = _evaluate(workdir, max_iter=300, feature_format="raw",
                         memory_budget_mb=0.05)
  assert whole["converged"] and streamed["converged"]
  assert streamed["objective"] == pytest.approx(whole["objective"], rel=1e-6)
  assert streamed["top1"] == pytest.approx(whole["top1"], abs=0.01)
  assert streamed["num_eval"] == whole["num_eval"]
  assert streamed["streamed_mb"] == 0.05
  meta = features_lib.load_metadata(streamed["features"], "train")
  assert meta["shard_format"] == "raw" and meta["dtype"] == "float32"
  [half] = _evaluate(workdir, max_iter=300, feature_dtype="float16")
  meta = features_lib.load_metadata(half["features"], "train")
  assert meta["dtype"] == "float16"
  assert meta["fingerprint"]["dtype"] == "float16"
  assert half["settings"]["feature_dtype"] == "float16"
  assert half["objective"] == pytest.approx(whole["objective"], rel=1e-2)
  assert half["key"] != whole["key"]
  with pytest.raises(ValueError, match="memory_budget_mb.*'mlp'"):
    _evaluate(workdir, protocol="mlp", memory_budget_mb=10)


def test_a_cache_of_other_settings_is_never_read(tmp_path):
  out_dir = str(tmp_path)
  x = np.arange(12, dtype=np.float32).reshape(6, 2)
  y = np.arange(6) % 2
  old = {"export": {"weights_sha256": "aaa"}, "split": "train"}
  new = {"export": {"weights_sha256": "bbb"}, "split": "train"}
  features_lib.write_split(out_dir, "train", [(x, y)], layer="pre_logits",
                           fingerprint=old)
  with pytest.raises(features_lib.FeatureCacheError,
                     match=r"export.weights_sha256: 'aaa' -> 'bbb'"):
    features_lib.read_split(out_dir, "train", fingerprint=new)
  with pytest.raises(features_lib.FeatureCacheError, match="other settings"):
    features_lib.dataset(out_dir, "train", 2, fingerprint=new)
  assert features_lib.read_split(out_dir, "train", fingerprint=old)[0].shape \
      == (6, 2)
  # claim: kept when it matches, replaced (metadata first) when not.
  assert features_lib.claim(out_dir, "train", old, layer="pre_logits")
  assert not features_lib.claim(out_dir, "train", new, layer="pre_logits")
  meta = features_lib.load_metadata(out_dir, "train")
  assert not meta["complete"] and meta["shards"] == []
  assert meta["fingerprint"] == new
  assert not [f for f in os.listdir(out_dir) if f.endswith(".tfrecord")]
  # write_split resumes the claimed split and keeps its fingerprint.
  features_lib.write_split(out_dir, "train", [(x * 2, y)],
                           layer="pre_logits")
  got, _ = features_lib.read_split(out_dir, "train", fingerprint=new)
  np.testing.assert_array_equal(got, x * 2)


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
  workdir = tmp_path / "run"
  first = experiment.run(_trainer(workdir, 2))
  assert not first.get("already_finished")
  assert first["pretext_eval_end"]["images"] > 0
  snapshot = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        snapshot[path] = f.read()
  again = experiment.run(_trainer(workdir, 2))
  assert again["already_finished"]
  assert again["final_train_logs"] == first["final_train_logs"]
  after = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        after[path] = f.read()
  assert after == snapshot


def test_data_record_is_written(tmp_path):
  workdir = tmp_path / "run"
  experiment.run(_trainer(workdir, 0))
  assert sources.load_data_record(str(workdir)) == _source().record
  assert protocol.eval_source(str(workdir)).record == _source().record


def test_interrupted_saves_and_exports_are_cleaned_at_the_next_start(
    tmp_path):
  leftovers = [tmp_path / "checkpoints" / "ckpt-9_temp",
               tmp_path / "tmp" / "export-123-abcdef01"]
  for path in leftovers:
    os.makedirs(path)
    (path / "part").write_bytes(b"x" * 1000)
  trainer = _trainer(tmp_path, 2)
  assert not any(os.path.exists(p) for p in leftovers)
  trainer.train()
  trainer.export()
  # The export went through the workdir's scratch folder and left nothing.
  assert not os.listdir(tmp_path / "tmp")


def test_seed_fixes_the_initial_weights(tmp_path):
  state = random.getstate()
  one = runs.weights(_trainer(tmp_path / "a", 0, seed=3).task.modules)
  assert random.getstate() == state  # the caller's stream is left alone
  random.random()  # whatever the caller drew in between
  two = runs.weights(_trainer(tmp_path / "b", 0, seed=3).task.modules)
  other = runs.weights(_trainer(tmp_path / "c", 0, seed=4).task.modules)
  assert sorted(one) == sorted(two)
  for key in one:
    np.testing.assert_array_equal(one[key], two[key], err_msg=key)
  assert any(not np.array_equal(one[k], other[k]) for k in one
             if "kernel" in k)


def test_seeded_runs_end_with_identical_weights(tmp_path):
  ends = []
  for name in ("a", "b"):
    trainer = _trainer(tmp_path / name, 4, seed=5)
    trainer.train()
    ends.append(runs.weights(trainer.task.modules))
  for key in ends[0]:
    np.testing.assert_array_equal(ends[0][key], ends[1][key], err_msg=key)


def test_pretext_evaluation_covers_the_split_by_default(tmp_path):
  trainer = _trainer(tmp_path, 0, eval_batches=None, batch_size=7)
  whole = trainer.evaluate("val")
  assert whole["images"] == trainer.source.num_examples("val")
  two = trainer.evaluate("val", num_batches=2)
  assert two["images"] == 14
  bounded = _trainer(tmp_path / "b", 0, eval_batches=3, batch_size=7)
  assert bounded.evaluate("val")["images"] == 21


class _TwoReplicas:
  num_replicas_in_sync = 2
  cluster_resolver = None

  def scope(self):
    return contextlib.nullcontext()


class _Stop(Exception):
  pass


def test_batch_norm_is_per_replica_by_default():
  assert TrainConfig().sync_batch_norm is False


@pytest.mark.parametrize("sync", [False, True])
def test_sync_batch_norm_switch(tmp_path, sync):
  """What the trainer asks the task for with two replicas (the mirrored runs
  themselves are in test_distributed.py)."""
  task = runs.make_task("rotation")
  asked = []

  def build(sync_batch_norm=False):
    asked.append(sync_batch_norm)
    raise _Stop

  task.build = build
  config = runs.config(sync_batch_norm=sync)
  with pytest.raises(_Stop):
    Trainer(task, _source(), str(tmp_path), config, strategy=_TwoReplicas())
  assert asked == [sync]
