"""selfsup's backbones against the authors' own TF1 models.

`../shared/reference/revisiting_tf1/make_reference.py` runs the authors'
unchanged `models/` package under tf.compat.v1 (tf-keras, in a subprocess:
selfsup never imports it) and writes, for nine configurations, a TF1
checkpoint with the original variable names and every endpoint in inference
mode on a fixed input, with non-trivial batch-norm statistics. `load_tf1`
fills the selfsup backbone from that checkpoint, and every endpoint must agree
to 1e-4 relative (max abs error / max abs value). Two widths and two seeds.

The reference folder is part of the project's shared material, not of the
package: in a user's clone without it, the comparison is skipped (saying so);
the loader's own error tests below still run on checkpoints they write.
"""
import contextlib
import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import selfsup.models
from tests import tf1_reference_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference",
                         "revisiting_tf1")
SCRIPT = os.path.join(REFERENCE, "make_reference.py")
# (width, seed): the widths the reference script takes are integers.
SETTINGS = ((1, 0), (2, 1))
CONFIGS = ("resnet50_v1", "resnet50_v1_patch", "resnet50_v2",
           "resnet50_v2_minus", "resnet50_v2_patch", "revnet50",
           "revnet50_minus", "revnet50_patch", "vgg19")
RTOL = 1e-4

needs_reference = pytest.mark.skipif(
    not os.path.exists(SCRIPT),
    reason=f"the authors' reference models are not at {REFERENCE} (a clone "
           "without the project's shared/ folder): nothing to compare with")


@pytest.fixture(scope="module")
def references():
  """{(width, seed): folder} with the nine references each, made once per
  machine (tests/tf1_reference_data.py caches them)."""
  try:
    return tf1_reference_data.references(SETTINGS)
  except RuntimeError as err:
    pytest.fail(str(err))


def _expected(config, reference):
  """The reference endpoints under selfsup's names.

  VGG: the code's block(N+1) is selfsup's blockN (the paper's naming,
  docs/paper_vs_code.md); selfsup's after_root is the code's block1 after the
  first 2x2 max-pooling; pre_logits are flattened.
  """
  ends = {k: v for k, v in reference.items() if k != "input"}
  if not config.startswith("vgg"):
    return ends
  out = {f"block{i}": ends[f"block{i + 1}"] for i in range(1, 5)}
  n, h, w, c = ends["block1"].shape
  out["after_root"] = ends["block1"].reshape(n, h // 2, 2, w // 2, 2,
                                             c).max(axis=(2, 4))
  out["pre_logits"] = ends["pre_logits"].reshape(n, -1)
  out["logits"] = ends["logits"]
  out["fc6"] = ends["fc6"]
  return out


def _relative_error(actual, expected):
  return float(np.max(np.abs(actual - expected)) /
               max(float(np.max(np.abs(expected))), 1e-12))


def _load(folder, config, **overrides):
  with open(os.path.join(folder, "manifest.json")) as f:
    entry = json.load(f)[config]
  kwargs = dict(width=entry["width"], patch=entry["patch"],
                num_classes=entry["num_classes"])
  if entry["selfsup"].startswith("vgg"):
    kwargs["input_shape"] = (entry["size"], entry["size"], 3)
  kwargs.update(overrides)
  return selfsup.models.load_tf1(os.path.join(folder, config, "model.ckpt"),
                                 entry["selfsup"], **kwargs)


@needs_reference
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"k{s[0]}-seed{s[1]}")
@pytest.mark.parametrize("config", CONFIGS)
def test_every_endpoint_matches_the_authors_model(references, config,
                                                  setting):
  folder = references[setting]
  reference = dict(np.load(os.path.join(folder, config, "endpoints.npz")))
  model = _load(folder, config)
  ends = {k: np.asarray(v) for k, v in
          model(reference["input"], training=False).items()}
  expected = _expected(config, reference)
  if "fc6" in expected:  # VGG: the first fully connected layer too
    probe = keras.Model(model.input, model.get_layer("fc6_bn_relu").output)
    ends["fc6"] = np.asarray(probe(reference["input"], training=False))
  assert set(expected) <= set(ends), (sorted(expected), sorted(ends))
  errors = {k: _relative_error(ends[k], v) for k, v in expected.items()}
  assert max(errors.values()) <= RTOL, errors


# ---------------------------------------------------------------------------
# The loader's contract, on checkpoints written here.


def _write_checkpoint(prefix, tensors):
  """A TF1 (V2 format) checkpoint holding `tensors` ({name: array})."""
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])
  return prefix


def _tf1_tensors(model):
  """What the authors' code would have saved for `model` (a selfsup
  backbone), under their names: the inverse of load_tf1's mapping."""
  from selfsup.models import tf1  # pylint: disable=import-outside-toplevel
  convs, norms = tf1._layer_order(model)  # pylint: disable=protected-access
  out = {}
  for i, layer in enumerate(convs):
    out[f"conv2d{'_%d' % i if i else ''}/kernel"] = layer.kernel.numpy()
  for i, layer in enumerate(norms):
    for var in ("gamma", "beta", "moving_mean", "moving_variance"):
      out[f"batch_normalization{'_%d' % i if i else ''}/{var}"] = (
          getattr(layer, var).numpy())
  if "logits" in model.output:
    dense = model.get_layer("logits")
    kernel = dense.kernel.numpy()
    out[f"conv2d_{len(convs)}/kernel"] = kernel.reshape((1, 1) +
                                                        kernel.shape)
    out[f"conv2d_{len(convs)}/bias"] = dense.bias.numpy()
  return out


def _randomise(model, seed=0):
  rng = np.random.default_rng(seed)
  for var in model.variables:
    value = rng.normal(0, 0.1, var.shape)
    if "variance" in var.path or "gamma" in var.path:
      value = rng.uniform(0.5, 1.5, var.shape)
    var.assign(value.astype(np.float32))
  return model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """A randomised tiny resnet18_v2 with logits and its TF1 tensors."""
  model = _randomise(selfsup.models.get("resnet18_v2", width=0.25,
                                        num_classes=3))
  return model, _tf1_tensors(model)


@contextlib.contextmanager
def _absl_info():
  """The text load_tf1 logs at INFO, whatever earlier tests did to absl's
  verbosity or to the root logger (a handler on absl's own logger)."""
  logger = logging.getLogger("absl")
  lines = []
  handler = logging.Handler(logging.INFO)
  handler.emit = lambda record: lines.append(record.getMessage())
  level = logger.level
  logger.setLevel(logging.INFO)
  logger.addHandler(handler)
  try:
    yield lines
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def _same_outputs(a, b):
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  out_a, out_b = a(x, training=False), b(x, training=False)
  for key in out_a:
    np.testing.assert_allclose(out_a[key], out_b[key], rtol=1e-5, atol=1e-5)


def test_training_checkpoint_with_scope_slots_and_pretext_head(small,
                                                               tmp_path):
  """`module/` scope, Momentum slots, global_step and a Jigsaw-style head
  after the backbone: the backbone loads, the rest is listed as ignored."""
  model, tensors = small
  saved = {f"module/{k}": v for k, v in tensors.items()}
  saved.update({f"{k}/Momentum": np.zeros_like(v) for k, v in saved.items()})
  n_convs = sum(k.endswith("kernel") for k in tensors)
  n_norms = sum(k.endswith("gamma") for k in tensors)
  saved[f"module/conv2d_{n_convs}/kernel"] = np.ones((1, 1, 3, 8), np.float32)
  saved[f"module/conv2d_{n_convs}/bias"] = np.ones((8,), np.float32)
  for var in ("gamma", "beta", "moving_mean", "moving_variance"):
    saved[f"module/batch_normalization_{n_norms}/{var}"] = np.ones(
        (8,), np.float32)
  saved["global_step"] = np.array(7, np.int64)
  prefix = _write_checkpoint(str(tmp_path / "train" / "model.ckpt-7"), saved)
  with open(tmp_path / "train" / "checkpoint", "w") as f:
    f.write('model_checkpoint_path: "model.ckpt-7"\n')
  with _absl_info() as lines:
    loaded = selfsup.models.load_tf1(str(tmp_path / "train"), "resnet18_v2",
                                     width=0.25, num_classes=3)
  _same_outputs(loaded, model)
  assert prefix.endswith("model.ckpt-7")
  log = "\n".join(lines)
  assert f"module/conv2d_{n_convs}/kernel" in log  # the head
  assert "global_step" in log and "/Momentum" in log


def test_hub_module_directory_and_logits_left_out(small, tmp_path):
  model, tensors = small
  _write_checkpoint(str(tmp_path / "hub" / "variables" / "variables"),
                    tensors)
  with _absl_info() as lines:
    loaded = selfsup.models.load_tf1(str(tmp_path / "hub"), "resnet18_v2",
                                     width=0.25)
  assert "logits" not in loaded.output
  _same_outputs(loaded, model)
  n_convs = sum(k.endswith("kernel") for k in tensors) - 1
  assert any("ignored" in line and f"conv2d_{n_convs}/kernel" in line
             for line in lines), lines


@pytest.mark.parametrize("name,kwargs,message", [
    ("resnet18_v1", dict(width=0.25), "does not fit 'resnet18_v1'"),
    ("resnet18_v2", dict(width=0.5), "has shape"),
    ("resnet18_v2", dict(width=0.25, num_classes=5), "has shape"),
    ("resnet50_v2", dict(width=0.25), "expected for resnet50_v2"),
])
def test_a_checkpoint_that_does_not_fit_is_refused(small, tmp_path, name,
                                                   kwargs, message):
  _, tensors = small
  prefix = _write_checkpoint(str(tmp_path / "model.ckpt"), tensors)
  with pytest.raises(selfsup.models.TF1CheckpointError, match=message):
    selfsup.models.load_tf1(prefix, name, **kwargs)


def test_missing_and_unknown_variables_are_named(small, tmp_path):
  _, tensors = small
  broken = dict(tensors)
  del broken["batch_normalization_3/moving_variance"]
  prefix = _write_checkpoint(str(tmp_path / "a" / "model.ckpt"), broken)
  with pytest.raises(selfsup.models.TF1CheckpointError,
                     match="batch_normalization_3/moving_variance missing"):
    selfsup.models.load_tf1(prefix, "resnet18_v2", width=0.25)
  odd = dict(tensors, **{"my_layer/weights": np.zeros(3, np.float32)})
  prefix = _write_checkpoint(str(tmp_path / "b" / "model.ckpt"), odd)
  with pytest.raises(selfsup.models.TF1CheckpointError, match="my_layer"):
    selfsup.models.load_tf1(prefix, "resnet18_v2", width=0.25)


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="No TF1 checkpoint at"):
    selfsup.models.load_tf1(str(tmp_path / "nothing"), "resnet50_v1",
                            width=1)


@needs_reference
def test_import_then_linear_eval_end_to_end(references, tmp_path):
  """bin/import_tf1 turns the authors' ResNet50 v1 into a workdir export;
  bin/linear_eval evaluates it with selfsup's protocol, unchanged."""
  folder = references[SETTINGS[0]]
  workdir = str(tmp_path / "imported")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")

  def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)

  done = run("bin/import_tf1",
             f"--checkpoint={os.path.join(folder, 'resnet50_v1')}/model.ckpt",
             "--backbone=resnet50_v1", "--width=1", "--task=rotation",
             "--image_size=32", "--source=digits", f"--workdir={workdir}")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "export", "info.json")) as f:
    info = json.load(f)
  assert info["task"] == "rotation" and info["backbone"] == "resnet50_v1"
  assert info["imported_format"] == "tf1"
  assert "logits" not in info["endpoints"]  # the pretext head stays out
  # The export computes what the authors' model computes.
  reference = dict(np.load(os.path.join(folder, "resnet50_v1",
                                        "endpoints.npz")))
  exported = keras.saving.load_model(os.path.join(workdir, "export",
                                                  "backbone.keras"))
  got = exported(reference["input"], training=False)["pre_logits"]
  assert _relative_error(np.asarray(got), reference["pre_logits"]) <= RTOL

  again = run("bin/import_tf1", f"--checkpoint={folder}/resnet50_v1/model.ckpt",
              "--backbone=resnet50_v1", "--width=1", f"--workdir={workdir}")
  assert again.returncode != 0 and "already holds an export" in again.stderr
  wrong = run("bin/import_tf1", f"--checkpoint={folder}/resnet50_v1/model.ckpt",
              "--backbone=resnet50_v2", "--width=1",
              f"--workdir={tmp_path / 'wrong'}")
  assert wrong.returncode != 0
  assert "error:" in wrong.stderr and "does not fit" in wrong.stderr

  done = run("bin/linear_eval", f"--workdir={workdir}",
             "--gin_param=build_source.source_kwargs={'image_size': 32}",
             "--gin_param=linear_eval.max_iter=100")
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    entries = json.load(f)
  [result] = [e for e in entries if e["layer"] == "pre_logits"]
  assert result["task"] == "rotation" and result["source"] == "digits"
  assert result["export"]["weights_sha256"] == info["weights_sha256"]
  # The reference's random weights still give digit features far above
  # chance (10%).
  assert 0.3 < result["top1"] <= 1.0, result


# ---------------------------------------------------------------------------
# load_tf1(path, "auto"): the architecture read off the variables.


def _manifest(folder):
  with open(os.path.join(folder, "manifest.json")) as f:
    return json.load(f)


@needs_reference
def test_auto_infers_architecture_and_width_at_two_widths(references):
  """Every reference configuration at both widths: the (-) and patch
  variants share their parent's variables, so "auto" names the parent."""
  from selfsup.models import tf1  # pylint: disable=import-outside-toplevel
  for setting in SETTINGS:
    folder = references[setting]
    for config, entry in _manifest(folder).items():
      name, width, kwargs = tf1.infer(os.path.join(folder, config,
                                                   "model.ckpt"))[0]
      parent = {"resnet50_v2_minus": "resnet50_v2",
                "revnet50_minus": "revnet50"}.get(entry["selfsup"],
                                                  entry["selfsup"])
      assert (name, width) == (parent, entry["width"]), (config, setting)
      if name.startswith("vgg"):
        assert kwargs["input_shape"] == (entry["size"], entry["size"], 3)


@needs_reference
@pytest.mark.parametrize("config,setting", [
    ("resnet50_v2_patch", SETTINGS[1]), ("vgg19", SETTINGS[0]),
    ("revnet50_minus", SETTINGS[0])])
def test_auto_loads_what_the_authors_model_computes(references, config,
                                                    setting):
  folder = references[setting]
  entry = _manifest(folder)[config]
  reference = dict(np.load(os.path.join(folder, config, "endpoints.npz")))
  with _absl_info() as lines:
    model = selfsup.models.load_tf1(
        os.path.join(folder, config, "model.ckpt"), "auto",
        patch=entry["patch"], num_classes=entry["num_classes"])
  ends = {k: np.asarray(v) for k, v in
          model(reference["input"], training=False).items()}
  expected = _expected(config, reference)
  expected.pop("fc6", None)
  log = "\n".join(lines)
  assert "auto" in log and "patch variant" in log
  if config.endswith("_minus"):  # the parent: the same up to the last ReLU
    assert model.name.startswith("revnet50") and "revnet50_minus" in log
    np.testing.assert_allclose(ends["block4"], expected["block4"],
                               rtol=RTOL, atol=RTOL)
    assert not np.allclose(ends["pre_logits"], expected["pre_logits"],
                           atol=1e-3)
    return
  errors = {k: _relative_error(ends[k], v) for k, v in expected.items()}
  assert max(errors.values()) <= RTOL, errors


def test_auto_on_a_checkpoint_that_fits_nothing_says_what_it_found(
    small, tmp_path):
  _, tensors = small
  cut = {k: v for k, v in tensors.items()
         if not k.startswith("batch_normalization")}
  prefix = _write_checkpoint(str(tmp_path / "model.ckpt"), cut)
  with pytest.raises(selfsup.models.TF1CheckpointError,
                     match=r"fits no backbone.*found \d+ conv2d and 0 "
                           "batch_normalization"):
    selfsup.models.load_tf1(prefix, "auto")


@pytest.mark.slow  # a subprocess importing TensorFlow (~30 s on 2 cores)
@needs_reference
def test_import_tf1_reads_backbone_width_and_size_by_default(references,
                                                             tmp_path):
  """bin/import_tf1 without --backbone and --width: VGG19 at width 2, its
  64-pixel input read off fc6's kernel."""
  folder = references[SETTINGS[1]]
  workdir = str(tmp_path / "auto")
  done = subprocess.run(
      [sys.executable, "bin/import_tf1",
       f"--checkpoint={os.path.join(folder, 'vgg19', 'model.ckpt')}",
       "--source=digits", f"--workdir={workdir}"],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                         CUDA_VISIBLE_DEVICES=""),
      capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "imported vgg19_bn (width 2, rotation)" in done.stdout
  with open(os.path.join(workdir, "export", "info.json")) as f:
    info = json.load(f)
  assert info["backbone"] == "vgg19_bn" and info["image_size"] == 64
  assert info["backbone_config"]["width"] == 2
