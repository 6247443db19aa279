"""Feature extraction: adaptive pooling, patch averaging, export from a model."""
import os
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf

import selfsup
import selfsup.core
from selfsup.core import pooling
from selfsup.evaluation import extract, features


def _numpy_adaptive_max(x, r, s=None):
  s = r if s is None else s
  n, h, w, c = x.shape
  out = np.zeros((n, r, s, c), x.dtype)
  for i in range(r):
    for j in range(s):
      y0, y1 = (i * h) // r, -(-(i + 1) * h // r)
      x0, x1 = (j * w) // s, -(-(j + 1) * w // s)
      out[:, i, j] = x[:, y0:y1, x0:x1].max(axis=(1, 2))
  return out.reshape(n, -1)


@pytest.mark.parametrize("shape, max_features, grid", [
    ((2, 7, 7, 16), 9000, 7),     # 23x23 would fit: capped by the map
    ((2, 14, 14, 256), 9000, 5),  # floor(sqrt(9000 / 256)) = 5
    ((2, 9, 11, 1000), 9000, 3),
    ((1, 4, 4, 2048), 9000, 2),
    ((1, 3, 3, 10000), 9000, 1),  # more channels than the budget: global max
])
def test_floor_rule_matches_numpy(shape, max_features, grid):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = extract.adaptive_max_pool(tf.constant(x), max_features,
                                  rule="floor").numpy()
  assert got.shape == (shape[0], grid * grid * shape[-1])
  np.testing.assert_allclose(got, _numpy_adaptive_max(x, grid))
  if shape[-1] <= max_features:
    assert got.shape[1] <= max_features


@pytest.mark.parametrize("shape, grid", [
    ((2, 7, 7, 16), (7, 7)),       # 784 values fit: not pooled
    ((2, 9, 11, 16), (9, 11)),     # fits, and keeps its non-square shape
    ((2, 14, 14, 256), (6, 6)),    # sqrt(35.2): 6*6*256 = 9,216 is nearer
    ((2, 56, 56, 256), (6, 6)),    # k=4 block1: 9,216, not 6,400
    ((2, 9, 11, 1000), (3, 3)),
    ((1, 4, 4, 2048), (2, 2)),     # 8,192 is nearer than 18,432
    ((1, 3, 3, 10000), (1, 1)),    # more channels than the budget
    ((1, 2, 2, 4000), (1, 1)),     # 1x1: 4,000 is nearer than 16,000
])
def test_nearest_rule_is_the_authors(shape, grid):
  """The authors' utils.adaptive_pool picks floor or ceil of sqrt(9000/C),
  whichever gives a count nearer 9,000, and pools only maps above 9,000."""
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = extract.adaptive_max_pool(tf.constant(x), 9000).numpy()
  assert got.shape == (shape[0], grid[0] * grid[1] * shape[-1])
  np.testing.assert_allclose(got, _numpy_adaptive_max(x, *grid))


def test_unknown_grid_rule_is_refused():
  with pytest.raises(ValueError, match="rule='ceil'"):
    pooling.grid_size(4, 4, 16, rule="ceil")
  with pytest.raises(selfsup.core.ConfigError, match="pooling rule='ceil'"):
    extract.FeatureExtractor(None, "block1", rule="ceil")


# The output of `pooling.pool` for each version: a change of output must
# bump pooling.VERSION (it invalidates the feature caches) and add its row.
_GOLDEN = {1: {
    ("nearest", 7): [14, 15, 16, 14, 14, 16, 16, 14],
    ("nearest", 20): [10, 15, 16, 14, 15, 10, 14, 15, 16, 15, 16, 14, 14, 16,
                      13, 15, 16, 14],
    ("floor", 7): [16, 16],
    ("floor", 20): [10, 15, 16, 14, 15, 10, 14, 15, 16, 15, 16, 14, 14, 16,
                    13, 15, 16, 14],
    ("max", 7): [14, 15, 16, 14],
    ("max", 20): [10, 15, 16, 14, 15, 10, 14, 12, 13, 15, 16, 14],
}}


def test_pooling_output_is_pinned_per_version():
  i, j, k = np.meshgrid(np.arange(5), np.arange(6), np.arange(2),
                        indexing="ij")
  x = ((i * 7 + j * 3 + k * 5) % 17).astype(np.float32)[None]  # exact values
  assert pooling.VERSION in _GOLDEN, "pin the new version's outputs here"
  golden = _GOLDEN[pooling.VERSION]
  assert {rule for rule, _ in golden} == set(pooling.RULES)
  for (rule, max_features), want in golden.items():
    got = pooling.pool(tf.constant(x), max_features, rule).numpy()
    np.testing.assert_array_equal(got, [want], err_msg=str(rule))


def test_max_rule_gives_the_authors_feature_counts():
  """ResNet50 v2 at k=4 on 224x224 images under the authors' --pool_mode
  max (utils.adaptive_pool): 6,400 / 8,192 / 4,096 / 2,048 features."""
  backbone = selfsup.models.get("resnet50_v2", width=4)
  maps = {"block1": 56, "block2": 28, "block3": 14, "block4": 7}
  counts = {}
  for endpoint, hw in maps.items():
    channels = backbone.output[endpoint].shape[-1]
    counts[endpoint] = pooling.num_features(hw, hw, channels, rule="max")
    x = tf.zeros([1, hw, hw, channels])
    assert pooling.pool(x, rule="max").shape == (1, counts[endpoint])
  assert counts == {"block1": 6_400, "block2": 8_192, "block3": 4_096,
                    "block4": 2_048}


def test_max_rule_matches_numpy_strided_max():
  x = np.random.default_rng(3).normal(size=(2, 11, 9, 4)).astype(np.float32)
  # 396 values to 20: stride ceil(sqrt(19.8)) = 5, 2 x 1 cells, rest dropped.
  got = pooling.pool(tf.constant(x), 20, "max").numpy()
  want = np.stack([x[:, 0:5, 0:5].max(axis=(1, 2)),
                   x[:, 5:10, 0:5].max(axis=(1, 2))], axis=1)
  np.testing.assert_array_equal(got, want.reshape(2, -1))
  small = x[:, :2, :2]  # 16 values fit: not pooled
  np.testing.assert_array_equal(
      pooling.pool(tf.constant(small), 20, "max").numpy(),
      small.reshape(2, -1))


def test_representation_averages_patches_and_pools_blocks():
  backbone = selfsup.models.get("resnet50_v2", width=0.25, patch=True)
  patches = np.random.default_rng(1).normal(size=(2, 9, 12, 12, 3)).astype(
      np.float32)
  rep = extract.representation(backbone, tf.constant(patches), "pre_logits")
  singles = backbone(patches.reshape(18, 12, 12, 3), training=False)
  want = singles["pre_logits"].numpy().reshape(2, 9, -1).mean(axis=1)
  np.testing.assert_allclose(rep.numpy(), want, rtol=1e-5, atol=1e-5)
  block = extract.representation(backbone, tf.constant(patches), "block2")
  pooled = extract.adaptive_max_pool(singles["block2"]).numpy()
  np.testing.assert_allclose(block.numpy(),
                             pooled.reshape(2, 9, -1).mean(axis=1), rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match="endpoint='logits'"):
    extract.representation(backbone, tf.constant(patches), "logits")


def test_extractor_traces_once_for_every_batch_size():
  backbone = selfsup.models.get("resnet50_v2", width=0.25)
  images = np.random.default_rng(2).normal(size=(5, 16, 16, 3)).astype(
      np.float32)
  extractor = extract.FeatureExtractor(backbone, "block3")
  for batch in (images, images[:2], images[:1]):
    want = extract.representation(backbone, tf.constant(batch), "block3")
    np.testing.assert_allclose(extractor(batch).numpy(), want.numpy(),
                               rtol=1e-5, atol=1e-5)
  # pylint: disable-next=protected-access
  [traced] = extractor._traced.values()
  assert traced.experimental_get_tracing_count() == 1


def test_in_background_keeps_order_and_raises_errors_in_the_consumer():
  assert list(extract.in_background(range(10), 2)) == list(range(10))
  assert not list(extract.in_background([], 2))

  def failing():
    yield 1
    raise RuntimeError("producer failed")

  got = []
  with pytest.raises(RuntimeError, match="producer failed"):
    for item in extract.in_background(failing(), 2):
      got.append(item)
  assert got == [1]


def test_in_background_stops_the_producer_when_closed_early():
  produced, closed = [], []

  def endless():
    try:
      for i in range(1000):
        produced.append(i)
        yield i
    finally:
      closed.append(True)

  batches = extract.in_background(endless(), 2)
  assert next(batches) == 0
  batches.close()  # what an error in the writer does
  assert closed == [True]
  assert len(produced) <= 4  # the item taken, the queue's 2, one in hand


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny Rotation backbone exported by the trainer, without training."""
  workdir = str(tmp_path_factory.mktemp("workdir"))
  task = selfsup.tasks.get("rotation", backbone="resnet50_v2", width=0.25,
                           image_size=16)
  source = selfsup.data.get("digits", image_size=16)
  config = selfsup.train.TrainConfig(batch_size=32, train_steps=0, seed=0)
  trainer = selfsup.train.Trainer(task, source, workdir, config)
  return trainer.export(), trainer.task.backbone, source


def test_export_features_round_trip_and_resume(exported, tmp_path):
  export_dir, backbone, source = exported
  out = str(tmp_path / "feats")
  metas = extract.export_features(export_dir, source, ("val",), out,
                                  endpoint="pre_logits", batch_size=64,
                                  shard_size=100)
  assert metas["val"]["num_examples"] == source.num_examples("val")
  x, y = extract.as_numpy(out, "val")
  assert x.shape == (359, 128) and y.shape == (359,)
  # The features are the exported backbone's, on the evaluation spec.
  info = selfsup.train.load_info(export_dir)
  fn = selfsup.preprocess.get(info["eval_specs"]["eval"], training=False)
  first = [fn(e) for e in source.dataset("val", shuffle=False).take(3)]
  images = tf.stack([f["image"] for f in first])
  want = backbone(images, training=False)["pre_logits"].numpy()
  np.testing.assert_allclose(x[:3], want, rtol=1e-4, atol=1e-4)
  labels = [int(e["label"]) for e in source.dataset("val", shuffle=False)]
  np.testing.assert_array_equal(y, labels)
  # Running again reuses the complete split instead of recomputing it.
  again = extract.export_features(export_dir, source, ("val",), out,
                                  endpoint="pre_logits", batch_size=64,
                                  shard_size=100)
  assert again["val"]["shards"] == metas["val"]["shards"]


def test_export_features_rejects_unknown_endpoint(exported, tmp_path):
  export_dir, _, source = exported
  with pytest.raises(ValueError, match="block7"):
    extract.export_features(export_dir, source, ("val",), str(tmp_path),
                            endpoint="block7")


def test_corrupt_shard_is_named(exported, tmp_path):
  export_dir, _, source = exported
  out = str(tmp_path / "feats")
  meta = extract.export_features(export_dir, source, ("val",), out,
                                 endpoint="block4", shard_size=200)["val"]
  shard = tmp_path / "feats" / meta["shards"][1]["file"]
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) // 2])
  with pytest.raises(features.FeatureCacheError, match=shard.name):
    extract.as_numpy(out, "val")


def test_layers_in_one_pass_match_single_layer_exports(exported, tmp_path,
                                                       monkeypatch):
  """Every requested layer from one forward pass: the same features as one
  export per layer, one backbone pass over the data, and each layer's cache
  resumes on its own."""
  export_dir, _, source = exported
  layers = ("block2", "block4", "pre_logits")
  single = {}
  for layer in layers:
    out = str(tmp_path / "single" / layer)
    extract.export_features(export_dir, source, ("val",), out,
                            endpoint=layer, batch_size=64, shard_size=100)
    single[layer] = extract.as_numpy(out, "val")
  passes = []
  computed = extract.FeatureExtractor._computed

  def counting(self, *args):
    passes.append(self.endpoints)
    return computed(self, *args)

  monkeypatch.setattr(extract.FeatureExtractor, "_computed", counting)
  dirs = {layer: str(tmp_path / "multi" / layer) for layer in layers}
  metas = extract.export_features(export_dir, source, ("val",), dirs,
                                  endpoint=layers, batch_size=64,
                                  shard_size=100)
  assert passes == [layers]  # one pass computing all three
  for layer in layers:
    assert metas["val"][layer]["complete"]
    x, y = extract.as_numpy(dirs[layer], "val")
    np.testing.assert_allclose(x, single[layer][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, single[layer][1])
  # block4 loses its last shards (a killed export), pre_logits its metadata
  # entirely; block2 stays complete and is not computed again.
  meta = features.load_metadata(dirs["block4"], "val")
  for entry in meta["shards"][2:]:
    os.remove(os.path.join(dirs["block4"], entry["file"]))
  meta.update(complete=False, shards=meta["shards"][:2])
  selfsup.core.write_json(features.metadata_path(dirs["block4"], "val"),
                          meta)
  shutil.rmtree(dirs["pre_logits"])
  passes.clear()
  extract.export_features(export_dir, source, ("val",), dirs,
                          endpoint=layers, batch_size=64, shard_size=100)
  assert passes == [layers]
  for layer in layers:
    x, y = extract.as_numpy(dirs[layer], "val")
    np.testing.assert_allclose(x, single[layer][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, single[layer][1])
  # All complete: nothing is computed.
  passes.clear()
  extract.export_features(export_dir, source, ("val",), dirs,
                          endpoint=layers, batch_size=64, shard_size=100)
  assert not passes


def test_a_failing_writer_stops_the_layer_export_without_hanging(
    tmp_path, monkeypatch):
  """One endpoint's writer fails (a full disk): the export raises that
  error and the other writers stop instead of waiting for batches."""
  write_split = features.write_split

  def failing(out_dir, split, batches, **kwargs):
    def full_disk(start):
      for i, batch in enumerate(batches(start)):
        if i == 1:
          raise OSError(28, "No space left on device")
        yield batch
    return write_split(out_dir, split, full_disk if out_dir.endswith(
        "block2") else batches, **kwargs)

  monkeypatch.setattr(features, "write_split", failing)
  rng = np.random.default_rng(0)

  def compute(start):
    for _ in range(start, 40):
      yield {k: rng.normal(size=(4, 3)).astype(np.float32)
             for k in ("block1", "block2", "block3")}, np.arange(4)

  dirs = {k: str(tmp_path / k) for k in ("block1", "block2", "block3")}
  outcome = []

  def run():
    try:
      # pylint: disable-next=protected-access
      extract._write_endpoints(dirs, "train", compute, 8, {})
      outcome.append(None)
    except BaseException as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout=60)
  assert not thread.is_alive(), "the export hangs after a writer failed"
  assert isinstance(outcome[0], OSError) and "No space" in str(outcome[0])
  for layer in ("block1", "block3"):  # stopped, never marked complete
    assert not features.load_metadata(dirs[layer], "train")["complete"]


def test_cache_fingerprint_follows_the_pooling_version_not_the_code(
    monkeypatch):
  """An edit of the extraction code's text keeps every cache; a change of
  the pooling's output (a version bump) or of its rule does not."""
  from selfsup.evaluation import protocol  # pylint: disable=g-import-not-at-top
  export = {"weights_sha256": "w", "step": 1, "task": "t", "backbone": "b"}
  source = selfsup.data.get("digits", image_size=16)

  def sha(**kwargs):
    return features.fingerprint_sha256(protocol.feature_fingerprint(
        export, source, "train", "block1", 9000, "spec", **kwargs))

  before = sha()
  assert not any("code" in str(k) for k in features._flatten(  # pylint: disable=protected-access
      protocol.feature_fingerprint(export, source, "train", "block1", 9000,
                                   "spec")))
  monkeypatch.setattr(extract, "__doc__", extract.__doc__ + " edited")
  assert sha() == before
  assert sha(rule="max") != before
  monkeypatch.setattr(pooling, "VERSION", pooling.VERSION + 1)
  assert sha() != before


def test_paper_layers_study_evaluates_with_the_authors_max_rule():
  import gin  # pylint: disable=g-import-not-at-top
  from selfsup.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from selfsup.study import spec as spec_lib  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  gin.clear_config()
  try:
    gin.parse_config_file(os.path.join(repo, "gin", "study",
                                       "paper_layers.gin"))
    cells = spec_lib.expand(spec_lib.study())
    params = {p for cell in cells for e in cell.evals for p in e["params"]}
    assert 'linear_eval.pooling = "max"' in params
    gin.parse_config(list(params))
    assert gin.query_parameter("selfsup.linear_eval.pooling") == "max"
  finally:
    gin.clear_config()
  assert protocol.EvalSettings(pooling="max").recorded["pooling"] == "max"
  with pytest.raises(selfsup.core.ConfigError,
                     match="linear_eval.pooling='mean'"):
    protocol.EvalSettings(pooling="mean")
