"""Backbones: endpoints, parameter counts, RevNet inverse, gradients, saving."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import selfsup
from tests import backbone_checks as checks

# Every registered backbone: a new one is tested for free, and must be added
# to PINNED_K4 (test_every_backbone_has_a_pinned_count).
ALL = tuple(selfsup.models.BACKBONES.names())
TINY = 0.25  # 4 root channels: every check runs in a second or two.


def _images(n, size, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(
      np.float32)


def expected_shapes(name, width, size, patch):
  """Endpoint shapes from the paper's definitions (section 3.1)."""
  r = int(16 * width)
  if name.startswith("vgg"):
    c = r // 2
    s = size
    return {"after_root": (s // 2, s // 2, c), "block1": (s // 2, s // 2, 2 * c),
            "block2": (s // 4, s // 4, 4 * c), "block3": (s // 8, s // 8, 8 * c),
            "block4": (s // 16, s // 16, 8 * c), "pre_logits": (64 * c,)}
  s = size // 2 if patch else size // 4          # root conv and max-pool
  strides = (2, 2, 1) if patch else (2, 2, 2)
  expansion = 1 if name.startswith("resnet18") else 4
  root_channels = 4 * r if name.startswith("revnet") else r
  shapes = {"after_root": (s, s, root_channels)}
  channels = expansion * r
  for b in range(1, 5):
    if b > 1:
      s = -(-s // strides[b - 2])
      channels *= 2
    shapes[f"block{b}"] = (s, s, channels)
  shapes["pre_logits"] = (channels,)
  return shapes


def test_names():
  assert selfsup.models.names() == sorted(ALL) == list(selfsup.models.BACKBONES)
  assert "revnet50" in selfsup.models.BACKBONES


@pytest.mark.parametrize("patch", [False, True], ids=["standard", "patch"])
@pytest.mark.parametrize("name", ALL)
def test_endpoint_shapes(name, patch):
  size = 32 if patch else 64
  model = selfsup.models.get(name, width=TINY, patch=patch, num_classes=7,
                             input_shape=(size, size, 3))
  out = model(_images(2, size), training=False)
  want = expected_shapes(name, TINY, size, patch)
  want["logits"] = (7,)
  assert list(out) == ["after_root", "block1", "block2", "block3", "block4",
                       "pre_logits", "logits"]
  assert {k: tuple(v.shape[1:]) for k, v in out.items()} == want


def test_no_head_and_representation_size():
  model = selfsup.models.get("revnet50", width=TINY, representation_size=24)
  out = model(_images(2, 64), training=False)
  assert "logits" not in out
  assert out["pre_logits"].shape == (2, 24)


def test_patch_variant_keeps_more_resolution():
  std = selfsup.models.get("resnet50_v2", width=TINY)(_images(1, 64))
  patch = selfsup.models.get("resnet50_v2", width=TINY, patch=True)(
      _images(1, 64))
  assert std["block4"].shape[1] == 2 and patch["block4"].shape[1] == 8


def _analytic_params(name, width, size, num_classes):
  """Trainable parameters derived from the definitions, layer by layer."""
  r = int(16 * width)
  bn = lambda c: 2 * c  # noqa: E731  scale and offset
  if name.startswith("vgg"):
    c, total, c_in = r // 2, 0, 3
    for convs, mult in zip((2, 2, 4, 4, 4), (1, 2, 4, 8, 8)):
      for _ in range(convs):
        total += 9 * c_in * c * mult + bn(c * mult)
        c_in = c * mult
    fc, s = 64 * c, size // 32  # 512k channels
    total += s * s * c_in * fc + bn(fc) + fc * fc + bn(fc)
    return total + fc * num_classes + num_classes
  if name.startswith("revnet"):
    total, channels = 49 * 3 * 4 * r, 4 * r  # root: no BN
    for units in (3, 4, 6, 3):
      h, i = channels // 2, channels // 8
      total += units * (bn(h) + h * i + bn(i) + 9 * i * i + bn(i) + i * h)
      channels *= 2
    channels //= 2
    return total + bn(channels) + channels * num_classes + num_classes
  v1 = name.endswith("v1")
  deep = name.startswith("resnet50")
  total = 49 * 3 * r + (bn(r) if v1 else 0)
  c_in, f = r, (4 if deep else 1) * r
  for units in ((3, 4, 6, 3) if deep else (2, 2, 2, 2)):
    for u in range(units):
      if deep:
        convs = [(c_in, f // 4, 1), (f // 4, f // 4, 3), (f // 4, f, 1)]
      else:
        convs = [(c_in, f, 3), (f, f, 3)]
      for a, b, k in convs:
        total += k * k * a * b
      if v1:
        total += sum(bn(b) for _, b, _ in convs)
      else:  # pre-activation BNs read each conv's input
        total += sum(bn(a) for a, _, _ in convs)
      if u == 0 and (c_in != f or f != (4 if deep else 1) * r):
        total += c_in * f + (bn(f) if v1 else 0)  # projection shortcut
      c_in = f
    f *= 2
  if not v1:
    total += bn(c_in)
  return total + c_in * num_classes + num_classes


@pytest.mark.parametrize("width", [0.5, 1])
@pytest.mark.parametrize("name", ALL)
def test_param_count_matches_definition(name, width):
  model = selfsup.models.get(name, width=width, num_classes=10,
                             input_shape=(64, 64, 3))
  assert checks.count_trainable(model) == _analytic_params(name, width, 64, 10)


# Pinned at the paper's default width with a 1000-way head at 224x224. The
# first is the trusted anchor: exactly torchvision/Keras ResNet-50's count.
PINNED_K4 = {
    "resnet50_v1": 25_557_032,
    "resnet50_v2": 25_549_352,
    "resnet50_v2_minus": 25_549_352,
    "revnet50": 7_457_640,
    "revnet50_minus": 7_457_640,
    "vgg19_bn": 36_952_264,
    "resnet18_v1": 11_689_512,  # also torchvision's resnet18
    "resnet18_v2": 11_687_720,
}


def test_every_backbone_has_a_pinned_count():
  assert set(PINNED_K4) == set(ALL), (
      "PINNED_K4 must pin every registered backbone")


@pytest.mark.parametrize("name", ALL)
def test_param_count_pinned_k4(name):
  model = selfsup.models.get(name, width=4, num_classes=1000,
                             input_shape=(224, 224, 3))
  assert checks.count_trainable(model) == PINNED_K4[name]
  assert checks.count_trainable(model) == _analytic_params(name, 4, 224, 1000)


PINNED_PATH = os.path.join(os.path.dirname(__file__), "data",
                           "param_counts.json")


@pytest.mark.slow
@pytest.mark.parametrize("width", [8, 12, 16])
@pytest.mark.parametrize("name", ALL)
def test_param_count_pinned_wide(name, width):
  with open(PINNED_PATH) as f:
    pinned = json.load(f)
  model = selfsup.models.get(name, width=width, num_classes=1000,
                             input_shape=(224, 224, 3))
  assert checks.count_trainable(model) == pinned[f"{name} k={width}"]


def test_vgg_k8_is_vgg19():
  # k = 8 is the original VGG19 (143,667,240 parameters with biases). With
  # batch norm every bias becomes a scale and an offset: one extra parameter
  # per channel of the 16 convolutions (5,504) and of fc6/fc7 (2 x 4,096).
  model = selfsup.models.get("vgg19_bn", width=8, num_classes=1000,
                             input_shape=(224, 224, 3))
  assert model.get_layer("conv1_1").filters == 64
  assert model.get_layer("fc7").filters == 4096
  assert checks.count_trainable(model) == 143_667_240 + 5_504 + 2 * 4_096


@pytest.mark.parametrize("name", ["revnet50", "revnet50_minus"])
def test_revnet_inverse_reconstructs_input(name):
  model = selfsup.models.get(name, width=TINY, input_shape=(32, 32, 3))
  rng = np.random.default_rng(1)
  # Non-trivial batch-norm statistics so that F is far from the identity.
  for b in range(1, 5):
    for unit in model.block_units(b):
      for norm in (unit.bn1, unit.bn2, unit.bn3):
        for var in norm.variables:
          var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
  out = model(_images(2, 32), training=False)
  block_input = out["after_root"]
  for b in range(1, 5):
    units = model.block_units(b)
    if b > 1:  # the block's input: pooled, channel-padded previous output
      pooled = model.get_layer(f"transition{b}_pool")(out[f"block{b - 1}"])
      block_input = model.get_layer(f"transition{b}_pad")(pooled)
    forward = block_input
    for unit in units:
      forward = unit(forward, training=False)
    np.testing.assert_allclose(forward.numpy(), out[f"block{b}"].numpy(),
                               atol=1e-5)
    restored = model.inverse_block(b, out[f"block{b}"])
    err = np.max(np.abs(restored.numpy() - block_input.numpy()))
    assert err < 1e-4, (b, err)
    assert np.max(np.abs(out[f"block{b}"].numpy() - block_input.numpy())) > 1e-2


@pytest.mark.parametrize("name", ALL)
def test_gradients_and_no_nan(name):
  model = selfsup.models.get(name, width=TINY, num_classes=5,
                             representation_size=16, input_shape=(32, 32, 3))
  checks.check_gradients(model, _images(4, 32))


@pytest.mark.parametrize("name", ALL)
def test_config_save_load_predict(name, tmp_path):
  model = selfsup.models.get(name, width=TINY, num_classes=3,
                             input_shape=(32, 32, 3))
  images = _images(3, 32)
  checks.check_config_round_trip(model)
  checks.check_predict_on_dataset(model, images)
  checks.check_save_load(model, images, str(tmp_path / f"{name}.keras"))


def test_no_skip_connections_switch():
  plain = selfsup.models.get("resnet18_v2", width=TINY, skip_connections=False)
  skip = selfsup.models.get("resnet18_v2", width=TINY)
  assert not any("add" in l.name for l in plain.layers)
  assert any("add" in l.name for l in skip.layers)
  # Without shortcuts there is nothing to project.
  assert checks.count_trainable(plain) < checks.count_trainable(skip)


@pytest.mark.parametrize("kwargs, quoted", [
    (dict(name="resnet51"), "resnet51"),
    (dict(name="resnet50_v2", width=0), "width=0"),
    (dict(name="resnet50_v2", width=-4), "width=-4"),
    (dict(name="resnet50_v2", width="4"), "width='4'"),
    (dict(name="revnet50", width=1 / 16), "width=0.0625"),
    (dict(name="resnet50_v2", input_shape=(224, 224)), "(224, 224)"),
    (dict(name="resnet50_v2", input_shape=(3, 224, 224)), "(3, 224, 224)"),
    (dict(name="vgg19_bn", input_shape=(None, None, 3)), "(None, None, 3)"),
    (dict(name="resnet50_v1", version="v2"), "version"),
    (dict(name="revnet50", last_relu=False), "last_relu=True"),
    (dict(name="resnet50_v2", batch_norm="cudnn"), "batch_norm='cudnn'"),
    (dict(name="resnet50_v1", dropout=0.5), "dropout"),
    (dict(name="resnet50_v2", num_classes=0), "num_classes=0"),
])
def test_bad_arguments_are_quoted(kwargs, quoted):
  with pytest.raises(ValueError) as err:
    selfsup.models.get(**kwargs)
  assert quoted in str(err.value)
  if kwargs["name"] == "resnet51":
    assert "resnet50_v2" in str(err.value)  # the choices


def test_v1_refuses_minus_variant():
  with pytest.raises(ValueError, match="last_relu"):
    selfsup.models.ResNet(version="v1", last_relu=False, width=TINY)


def test_weight_decay_is_collected():
  model = selfsup.models.get("resnet18_v1", width=TINY, num_classes=3,
                             weight_decay=1e-4)
  model(_images(1, 32))
  kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
  expected = sum(0.5e-4 * float(tf.reduce_sum(tf.square(v))) for v in kernels)
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)
  none = selfsup.models.get("resnet18_v1", width=TINY, weight_decay=0.0)
  none(_images(1, 32))
  assert not none.losses


def test_bn_momentum_reaches_every_batch_norm_and_round_trips():
  model = selfsup.models.get("revnet50", width=TINY, bn_momentum=0.9)
  norms = _norms(model)
  assert len(norms) == 3 * 16 + 1  # 3 per reversible unit + the final one
  assert all(l.momentum == 0.9 for l in norms)
  copy = type(model).from_config(model.get_config())
  assert copy.get_config()["bn_momentum"] == 0.9
  assert all(l.momentum == 0.9 for l in _norms(copy))
  with pytest.raises(ValueError, match="bn_momentum=1.5"):
    selfsup.models.get("resnet50_v2", width=TINY, bn_momentum=1.5)


@pytest.mark.parametrize("name", ["resnet18_v2", "revnet50", "vgg19_bn"])
def test_kernel_initializer_defaults_to_the_authors_and_round_trips(name):
  """tf.layers' glorot_uniform by default (the authors' code); he_normal on
  request, for every convolution (RevNet's units and VGG's fc6 included)."""
  import keras  # pylint: disable=import-outside-toplevel
  kwargs = dict(input_shape=(32, 32, 3)) if name.startswith("vgg") else {}
  for init, cls in (("glorot_uniform", keras.initializers.GlorotUniform),
                    ("he_normal", keras.initializers.HeNormal)):
    extra = {} if init == "glorot_uniform" else {"kernel_initializer": init}
    model = selfsup.models.get(name, width=TINY if name != "vgg19_bn" else 0.5,
                               **kwargs, **extra)
    convs = [l for l in model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(isinstance(l.kernel_initializer, cls)
                         for l in convs), init
    config = model.get_config()
    assert config["kernel_initializer"] == init
    assert type(model).from_config(config).get_config()[
        "kernel_initializer"] == init
  with pytest.raises(ValueError, match="kernel_initializer='nope'"):
    selfsup.models.get(name, width=0.5, kernel_initializer="nope", **kwargs)


def test_v2_identity_shortcut_carries_the_input():
  """With the residual branch zeroed (conv3 kernels 0), a non-projecting v2
  unit is the identity: its output equals its input, not ReLU(BN(input))."""
  import keras  # pylint: disable=import-outside-toplevel
  model = selfsup.models.get("resnet50_v2", width=TINY)
  for layer in model.layers:
    if layer.name.endswith("_conv3"):
      layer.kernel.assign(tf.zeros_like(layer.kernel))
  probe = keras.Model(model.input, [model.get_layer("block1_unit1_add").output,
                                    model.get_layer("block1_unit3_add").output])
  x = _images(2, 32)
  first, third = probe(x, training=False)
  np.testing.assert_allclose(third.numpy(), first.numpy(), atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 5, 5, 8), (16, 2, 2, 4), (1, 3, 3, 2)])
def test_fused_batch_norm_matches_keras_in_training(shape):
  """Output, input/scale/offset gradients and moving statistics (biased
  variance, as Keras averages) agree with keras.layers.BatchNormalization."""
  import keras  # pylint: disable=import-outside-toplevel
  from selfsup.models.norm import BatchNormalization  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
  upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
  gamma = rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32)
  beta = rng.normal(size=shape[-1]).astype(np.float32)
  results = []
  for layer in (keras.layers.BatchNormalization(momentum=0.9),
                BatchNormalization(momentum=0.9)):
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    results.append([y] + grads + [layer.moving_mean, layer.moving_variance])
  names = ["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"]
  for name, keras_value, fused_value in zip(names, *results):
    np.testing.assert_allclose(np.asarray(fused_value),
                               np.asarray(keras_value), rtol=1e-4, atol=2e-5,
                               err_msg=name)
  # The statistics moved, so the comparison above is not of initial values.
  assert not np.allclose(np.asarray(results[1][-2]), 0.0)


def _norms(model):
  import keras  # pylint: disable=import-outside-toplevel
  return [l for l in model._flatten_layers()  # pylint: disable=protected-access
          if isinstance(l, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("name", ["resnet18_v2", "revnet50"])
def test_fused_batch_norm_is_used_by_default_and_falls_back_in_inference(
    name):
  """Every batch norm (RevNet's units included) is the fused layer unless
  `batch_norm="keras"`; in inference both compute the same; the kind is in
  the config; sync_batch_norm gives Keras' synchronised layer."""
  from selfsup.models import norm  # pylint: disable=g-import-not-at-top
  model = selfsup.models.get(name, width=TINY)
  assert model.get_config()["batch_norm"] == "fused"
  norms = _norms(model)
  assert norms and all(isinstance(l, norm.BatchNormalization) for l in norms)
  images = _images(2, 32)
  model(images, training=True)  # moves the statistics away from 0 / 1
  plain = selfsup.models.get(name, width=TINY, batch_norm="keras")
  assert len(_norms(plain)) == len(norms)
  assert not any(isinstance(l, norm.BatchNormalization) for l in _norms(plain))
  config = plain.get_config()
  assert config["batch_norm"] == "keras"
  assert not any(isinstance(l, norm.BatchNormalization)
                 for l in _norms(type(plain).from_config(config)))
  plain.set_weights(model.get_weights())
  for key, value in model(images, training=False).items():
    np.testing.assert_allclose(plain(images, training=False)[key], value,
                               rtol=1e-5, atol=1e-5, err_msg=key)
  sync = selfsup.models.get(name, width=TINY, sync_batch_norm=True)
  assert all(l.synchronized for l in _norms(sync))


def test_batch_norm_kind_is_checked():
  with pytest.raises(ValueError, match=r"batch_norm='cudnn'.*'fused', 'keras'"):
    selfsup.models.get("resnet18_v1", width=TINY, batch_norm="cudnn")


# --------------------------------------------------------------------------
# Batch-norm groups ("ghost" batch norm, `bn_group_size`).


def _by_hand(x, groups, eps):
  """Each of `groups` consecutive slices normalised with its own biased
  moments over every axis but the last."""
  out = []
  for part in np.split(x, groups):
    axes = tuple(range(part.ndim - 1))
    out.append((part - part.mean(axes)) / np.sqrt(part.var(axes) + eps))
  return np.concatenate(out)


@pytest.mark.parametrize("shape", [(8, 3, 3, 5), (6, 7)])
def test_grouped_batch_norm_equals_per_group_batch_norm_by_hand(shape):
  from selfsup.models import norm  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).normal(2.0, 3.0, size=shape).astype("float32")
  groups, momentum = 2, 0.9
  layer = norm.make("bn", group_size=shape[0] // groups, momentum=momentum)
  y = layer(x, training=True)
  assert y.shape == shape
  np.testing.assert_allclose(y, _by_hand(x, groups, layer.epsilon),
                             rtol=1e-4, atol=1e-4)
  # Moving statistics: the mean over the groups of their means / variances.
  axes = tuple(range(x.ndim - 1))
  parts = np.split(x, groups)
  mean = np.mean([p.mean(axes) for p in parts], 0)
  var = np.mean([p.var(axes) for p in parts], 0)
  np.testing.assert_allclose(layer.moving_mean, (1 - momentum) * mean,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(layer.moving_variance,
                             momentum + (1 - momentum) * var, rtol=1e-5)
  # Not the whole batch's statistics: the groups differ from one another.
  whole = _by_hand(x, 1, layer.epsilon)
  assert np.max(np.abs(np.asarray(y) - whole)) > 1e-2
  # A batch smaller than one group is one group; inference is plain BN.
  small = norm.make("bn", group_size=100)
  np.testing.assert_allclose(small(x, training=True), whole, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(
      layer(x, training=False),
      (x - layer.moving_mean) / np.sqrt(layer.moving_variance
                                        + layer.epsilon), rtol=1e-4,
      atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3), (4, 2, 2, 3)])
def test_grouped_batch_norm_under_tf_function_with_unknown_batch(shape):
  from selfsup.models import norm  # pylint: disable=g-import-not-at-top
  layer = norm.make("bn", group_size=2)
  x = np.random.default_rng(1).normal(size=shape).astype("float32")
  fn = tf.function(lambda t: layer(t, training=True),
                   input_signature=[tf.TensorSpec((None,) + shape[1:])])
  np.testing.assert_allclose(fn(x), _by_hand(x, 2, layer.epsilon),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(tf.errors.InvalidArgumentError, match="bn_group_size"):
    fn(x[:3])


@pytest.mark.parametrize("name", ["resnet18_v1", "resnet50_v2", "revnet50",
                                  "vgg19_bn"])
def test_bn_group_size_reaches_every_batch_norm_and_round_trips(name):
  """Every batch norm (RevNet's units included) normalises per group; the
  size is in the config; parameters are those of the ungrouped model."""
  from selfsup.models import norm  # pylint: disable=g-import-not-at-top
  kwargs = dict(input_shape=(32, 32, 3)) if name.startswith("vgg") else {}
  model = selfsup.models.get(name, width=TINY, bn_group_size=2, **kwargs)
  norms = _norms(model)
  assert norms and all(isinstance(l, norm.GroupedBatchNormalization)
                       and l.group_size == 2 for l in norms)
  assert model.get_config()["bn_group_size"] == 2
  copy = type(model).from_config(model.get_config())
  assert all(l.group_size == 2 for l in _norms(copy))
  plain = selfsup.models.get(name, width=TINY, **kwargs)
  assert plain.get_config()["bn_group_size"] is None
  assert plain.count_params() == model.count_params()
  assert not any(isinstance(l, norm.GroupedBatchNormalization)
                 for l in _norms(plain))


def test_grouped_backbone_trains_per_group_and_infers_as_usual():
  """Two groups of a grouped ResNet give what the ungrouped one gives on
  each group alone; inference does not depend on the group size."""
  model = selfsup.models.get("resnet18_v2", width=TINY, bn_group_size=2)
  plain = selfsup.models.get("resnet18_v2", width=TINY, batch_norm="keras")
  plain.set_weights(model.get_weights())
  images = _images(4, 32)
  grouped = model(images, training=True)["pre_logits"]
  halves = np.concatenate([plain(images[:2], training=True)["pre_logits"],
                           plain(images[2:], training=True)["pre_logits"]])
  whole = plain(images, training=True)["pre_logits"]
  np.testing.assert_allclose(grouped, halves, rtol=1e-3, atol=1e-3)
  assert np.max(np.abs(np.asarray(grouped) - whole)) > 1e-2
  plain.set_weights(model.get_weights())  # the same moving statistics
  np.testing.assert_allclose(model(images, training=False)["pre_logits"],
                             plain(images, training=False)["pre_logits"],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, quoted", [
    (dict(bn_group_size=0), "bn_group_size=0"),
    (dict(bn_group_size=2.5), "bn_group_size=2.5"),
    (dict(bn_group_size=4, sync_batch_norm=True), "sync_batch_norm"),
])
def test_bad_bn_group_size_is_refused(kwargs, quoted):
  from selfsup.core.checks import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=quoted):
    selfsup.models.get("resnet18_v2", width=TINY, **kwargs)


def test_batch_not_a_multiple_of_the_group_is_refused():
  from selfsup.core.checks import ConfigError  # pylint: disable=g-import-not-at-top
  model = selfsup.models.get("resnet18_v1", width=TINY, bn_group_size=2)
  with pytest.raises(ConfigError, match="bn_group_size=2 .* batch of 3"):
    model(_images(3, 32), training=True)
