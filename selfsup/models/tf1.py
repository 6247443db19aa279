"""Loads the authors' TF1 checkpoints (and TF-Hub modules) into selfsup.

The authors built their backbones with `tf.layers`, which names variables by
layer kind and creation order: `conv2d/kernel`, `conv2d_1/kernel`, ...,
`batch_normalization_7/moving_mean`, the logits as one more `conv2d_N` (a 1x1
convolution with a bias). Convolutions and batch norms are numbered
independently, so a backbone is mapped by listing its convolutions and its
batch norms in the order the authors' code creates them, and pairing the i-th
of each kind with `conv2d_i` / `batch_normalization_i`.

Training checkpoints put the backbone under a scope (`module/`), with the
optimizer's slots (`.../Momentum`) and `global_step` beside it and, for
Jigsaw and Relative Patch Location, the pretext head after the backbone's
layers. A TF-Hub module exported by the authors holds the backbone alone in
`variables/variables.*`, without a scope.

    backbone = selfsup.models.load_tf1("rotation_revnet50_k16/", "revnet50",
                                       width=16, num_classes=4)
    backbone = selfsup.models.load_tf1("module/", "auto")  # name and width
                                                          # from the variables

`"auto"` tells the architecture from the number of convolutions and batch
norms and the width from the root convolution's filters (`infer`). Two
things the variables cannot tell: a (-) variant (`resnet50_v2_minus`,
`revnet50_minus`: no last ReLU, the same variables as its parent) and the
patch variant (other strides, the same variables): "auto" picks the parent,
takes `patch` as given, and says so at WARNING.
"""
import collections
import os
import re

from absl import logging

from selfsup.core import errors
from selfsup.models import registry

# `scope/kind_N/variable`: kinds and variables that tf.layers creates.
_LAYER_VARIABLE = re.compile(
    r"^(?P<scope>(?:[^/]+/)*?)(?P<kind>conv2d|batch_normalization|dense)"
    r"(?:_(?P<index>\d+))?/(?P<var>kernel|bias|gamma|beta|moving_mean|"
    r"moving_variance)$")
_BOOKKEEPING = ("global_step",)
_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


class TF1CheckpointError(errors.SelfsupError, ValueError):
  """A checkpoint that does not fit the requested backbone."""


def checkpoint_prefix(path):
  """The TF1 checkpoint prefix that `path` names.

  Args:
    path: a checkpoint prefix (`.../model.ckpt-1000`), a directory holding a
      `checkpoint` file (its latest checkpoint), or a TF-Hub module directory
      (`variables/variables.index` inside).

  Raises:
    FileNotFoundError: naming the path and what was expected there.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  if os.path.isdir(path):
    hub = os.path.join(path, "variables", "variables")
    if os.path.exists(hub + ".index"):
      return hub
    if os.path.exists(os.path.join(path, "checkpoint")):
      latest = tf.train.latest_checkpoint(path)
      if latest and os.path.exists(latest + ".index"):
        return latest
      raise FileNotFoundError(
          f"{path!r} has a 'checkpoint' file, but the checkpoint it names "
          f"({latest!r}) has no .index file beside it.")
  elif os.path.exists(path + ".index"):
    return path
  raise FileNotFoundError(
      f"No TF1 checkpoint at {path!r}: expected a checkpoint prefix (with "
      "PREFIX.index and PREFIX.data-* beside it), a directory holding a "
      "'checkpoint' file, or a TF-Hub module directory (variables/"
      "variables.index inside).")


def _layer_order(model):
  """(convolutions, batch norms) of `model` in the authors' creation order.

  Convolutions are Conv2D layers; the logits and representation layers are
  handled separately.
  """
  # pylint: disable=import-outside-toplevel
  from selfsup.models.resnet import ResNet
  from selfsup.models.revnet import RevNet
  from selfsup.models.vgg import VGG
  # pylint: enable=import-outside-toplevel
  names = {layer.name for layer in model.layers}
  convs, norms = [], []
  if isinstance(model, ResNet):
    v1 = model.get_config()["version"] == "v1"
    convs.append("root_conv")
    if v1:
      norms.append("root_bn")
    for block in range(1, 5):
      unit = 1
      while f"block{block}_unit{unit}_conv1" in names:
        name = f"block{block}_unit{unit}"
        n_convs = sum(f"{name}_conv{i}" in names for i in (1, 2, 3))
        has_proj = f"{name}_proj" in names
        if v1:  # projection (conv, bn), then (conv, bn) per convolution
          if has_proj:
            convs.append(f"{name}_proj")
            norms.append(f"{name}_proj_bn")
          for i in range(1, n_convs + 1):
            convs.append(f"{name}_conv{i}")
            norms.append(f"{name}_bn{i}")
        else:  # pre-activation bn, projection, then conv (bn conv)*
          norms.append(f"{name}_preact")
          if has_proj:
            convs.append(f"{name}_proj")
          for i in range(1, n_convs + 1):
            if i > 1:
              norms.append(f"{name}_bn{i - 1}")
            convs.append(f"{name}_conv{i}")
        unit += 1
    if not v1:
      norms.append("final_bn")
    get = model.get_layer
    return [get(n) for n in convs], [get(n) for n in norms]
  if isinstance(model, RevNet):
    conv_layers, norm_layers = [model.get_layer("root_conv")], []
    for block in range(1, 5):
      for unit in model.block_units(block):
        for bn, conv in ((unit.bn1, unit.conv1), (unit.bn2, unit.conv2),
                         (unit.bn3, unit.conv3)):
          norm_layers.append(bn)
          conv_layers.append(conv)
    norm_layers.append(model.get_layer("final_bn"))
    return conv_layers, norm_layers
  if isinstance(model, VGG):
    # conv1_1 .. conv5_4, then fc6, fc7: each convolution, then its bn.
    convs = sorted(n for n in names if re.fullmatch(r"conv\d_\d|fc[67]", n))
    norms = [f"{n}_bn" for n in convs]
    return ([model.get_layer(n) for n in convs],
            [model.get_layer(n) for n in norms])
  raise TF1CheckpointError(
      f"load_tf1 knows ResNet, RevNet and VGG backbones, not "
      f"{type(model).__name__}.")


def _read_layers(reader):
  """Groups a checkpoint's variables into tf.layers layers, by scope.

  Returns:
    (layers, ignored, unknown): layers[scope][kind] is a list of
    (index, {variable: full name}) sorted by creation index; `ignored` lists
    optimizer slots and bookkeeping; `unknown` everything else.
  """
  shapes = reader.get_variable_to_shape_map()
  layers = collections.defaultdict(
      lambda: collections.defaultdict(lambda: collections.defaultdict(dict)))
  ignored, unknown = [], []
  for name in sorted(shapes):
    parent = name.rsplit("/", 1)[0] if "/" in name else None
    if name in _BOOKKEEPING or parent in shapes:  # slots: kernel/Momentum
      ignored.append(name)
      continue
    match = _LAYER_VARIABLE.match(name)
    if not match:
      unknown.append(name)
      continue
    index = int(match["index"] or 0)
    layers[match["scope"]][match["kind"]][index][match["var"]] = name
  ordered = {
      scope: {kind: sorted(by_index.items()) for kind, by_index in kinds.items()}
      for scope, kinds in layers.items()}
  return ordered, ignored, unknown


# The parents "auto" chooses among, and the variants with their variables.
AUTO_CANDIDATES = ("resnet50_v1", "resnet50_v2", "revnet50", "vgg19_bn",
                   "resnet18_v1", "resnet18_v2")
SAME_VARIABLES = {"resnet50_v2": "resnet50_v2_minus",
                  "revnet50": "revnet50_minus"}
_PROBE_WIDTH = 1
_counts = {}


def _architecture_counts(name):
  """(convolutions, batch norms, root filters per unit of width) of backbone
  `name`, from a small copy built once per process."""
  if name not in _counts:
    builder = registry.BACKBONES.lookup(name)[0]
    kwargs = ({"input_shape": (32, 32, 3)}
              if getattr(builder, "fixed_input_size", False) else {})
    model = registry.get(name, width=_PROBE_WIDTH, **kwargs)
    convs, norms = _layer_order(model)
    _counts[name] = (len(convs), len(norms), convs[0].filters / _PROBE_WIDTH)
  return _counts[name]


def _backbone_scope(layers):
  return max(layers, key=lambda s: len(layers[s].get("conv2d", ())))


def _width_of(name, root_filters):
  per_width = _architecture_counts(name)[2]
  width = root_filters / per_width
  return int(width) if float(width).is_integer() else width


def infer(path):
  """What a TF1 checkpoint holds, read off its variables: a list of
  plausible `(name, width, extra kwargs)`, best first (exact counts of
  convolutions and batch norms, then those with a head after the trunk).

  Raises:
    TF1CheckpointError: no known backbone has that many layers, naming what
      was found.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prefix = checkpoint_prefix(path)
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  layers, _, _ = _read_layers(reader)
  if not any(kinds.get("conv2d") for kinds in layers.values()):
    raise TF1CheckpointError(
        f"{prefix!r} has no conv2d variables: it is not a checkpoint of the "
        "authors' backbones.")
  scope = _backbone_scope(layers)
  convs = layers[scope].get("conv2d", [])
  norms = layers[scope].get("batch_normalization", [])
  root = shapes[f"{_layer_name(scope, 'conv2d', convs[0][0])}/kernel"]
  ranked = []
  for name in AUTO_CANDIDATES:
    n_conv, n_norm, _ = _architecture_counts(name)
    if len(convs) < n_conv or len(norms) < n_norm:
      continue
    extra = (len(convs) - n_conv) + (len(norms) - n_norm)
    if len(norms) == n_norm and len(convs) in (n_conv, n_conv + 1):
      extra = 0  # the trunk, perhaps with its logits
    kwargs = {}
    if name.startswith("vgg"):  # fc6's kernel covers the map after 5 pools
      fc6 = shapes[f"{_layer_name(scope, 'conv2d', convs[n_conv - 2][0])}/"
                   "kernel"]
      kwargs["input_shape"] = (fc6[0] * 32, fc6[1] * 32, 3)
    ranked.append((extra, name, _width_of(name, root[-1]), kwargs))
  if not ranked:
    raise TF1CheckpointError(
        f"{prefix!r} fits no backbone that load_tf1 knows: found "
        f"{len(convs)} conv2d and {len(norms)} batch_normalization layers "
        f"(scope {scope!r}, root kernel {root}); known: "
        + ", ".join(f"{n} ({_architecture_counts(n)[0]} conv2d, "
                    f"{_architecture_counts(n)[1]} batch_normalization)"
                    for n in AUTO_CANDIDATES) + ".")
  return [(name, width, kwargs) for _, name, width, kwargs in sorted(
      ranked, key=lambda r: r[0])]


def load_inferred(path, width=None, patch=False, num_classes=None,
                  **backbone_kwargs):
  """load_tf1(path, "auto") that also says what it chose: (backbone, its
  registered name, its width). Raises TF1CheckpointError as load_tf1."""
  errors_seen = []
  for name, found_width, kwargs in infer(path):
    if width is not None and abs(width - found_width) > 1e-9:
      errors_seen.append(f"{name} at width {found_width:g} (width={width:g} "
                         "was given)")
      continue
    kwargs = dict(kwargs, **backbone_kwargs)
    try:
      model = load_tf1(path, name, width=found_width, patch=patch,
                       num_classes=num_classes, **kwargs)
    except TF1CheckpointError as err:
      errors_seen.append(str(err))
      continue
    twin = SAME_VARIABLES.get(name)
    logging.warning(
        "load_tf1(%r, 'auto'): %s at width %g%s; %sthe patch variant has the "
        "same variables too (patch=%s as given).", os.fspath(path), name,
        found_width, f", input {kwargs['input_shape']}"
        if "input_shape" in kwargs else "",
        f"{twin} has the same variables (pass it by name for a (-) model); "
        if twin else "", patch)
    return model, name, found_width
  raise TF1CheckpointError(
      f"{os.fspath(path)!r} fits none of the backbones its variables suggest: "
      + " | ".join(errors_seen))


def _layer_name(scope, kind, index):
  return f"{scope}{kind}" + (f"_{index}" if index else "")


def load_tf1(path, name="auto", *, width=None, patch=False, num_classes=None,
             **backbone_kwargs):
  """Builds selfsup backbone `name` and fills it from a TF1 checkpoint.

  Args:
    path: TF1 checkpoint prefix, a directory with a `checkpoint` file, or a
      TF-Hub module directory (see `checkpoint_prefix`).
    name: a registered backbone (`selfsup.models.names()`), as for
      `selfsup.models.get`, or "auto": inferred from the variables (see the
      module docstring).
    width: widening factor k the checkpoint was trained with; None: read
      off the root convolution.
    patch: the patch variant (stride-1 root, block strides (2, 2, 1)).
    num_classes: None leaves the checkpoint's logits out (listed at INFO as
      ignored); a number loads them into the backbone's `logits` layer.
    **backbone_kwargs: passed to the backbone (e.g. `input_shape` for VGG).

  Returns:
    The backbone, every trunk variable set from the checkpoint.

  Raises:
    FileNotFoundError: no checkpoint at `path`.
    TF1CheckpointError: variables missing, of the wrong shape, or unknown,
      naming them.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == "auto":
    return load_inferred(path, width, patch, num_classes,
                         **backbone_kwargs)[0]
  prefix = checkpoint_prefix(path)
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  layers, ignored, unknown = _read_layers(reader)
  if unknown:
    raise TF1CheckpointError(
        f"{prefix!r} holds variables that are not tf.layers conv2d/"
        f"batch_normalization/dense variables, optimizer slots or "
        f"global_step: {unknown[:20]}{' ...' if len(unknown) > 20 else ''}.")
  if not any(kinds.get("conv2d") for kinds in layers.values()):
    raise TF1CheckpointError(
        f"{prefix!r} has no conv2d variables: it is not a checkpoint of the "
        "authors' backbones.")
  # The backbone is the scope with the most convolutions; layers in other
  # scopes (an evaluation head, say) are outside it.
  scope = _backbone_scope(layers)
  if width is None:
    first = layers[scope]["conv2d"][0][0]
    width = _width_of(name, shapes[f"{_layer_name(scope, 'conv2d', first)}"
                                   "/kernel"][-1])
  outside = sorted(v for s, kinds in layers.items() if s != scope
                   for by_index in kinds.values()
                   for _, variables in by_index for v in variables.values())

  model = registry.get(name, width=width, patch=patch,
                       num_classes=num_classes, **backbone_kwargs)
  conv_layers, norm_layers = _layer_order(model)
  found = layers[scope]
  convs, norms = found.get("conv2d", []), found.get("batch_normalization", [])
  denses = found.get("dense", [])
  n_head_convs = 1 if num_classes else 0
  n_dense = 1 if model.get_config().get("representation_size") else 0
  problems = []
  for kind, have, need in (("conv2d", convs, len(conv_layers) + n_head_convs),
                           ("batch_normalization", norms, len(norm_layers)),
                           ("dense", denses, n_dense)):
    if len(have) < need:
      problems.append(
          f"{need} {kind} layers expected for {name} at width {width}"
          f"{' (patch)' if patch else ''}, found {len(have)}")
  if problems:
    raise TF1CheckpointError(
        f"{prefix!r} does not fit {name!r}: {'; '.join(problems)}. Check the "
        "backbone name, width and patch variant the checkpoint was trained "
        "with.")

  assignments = []  # (keras variable, value, checkpoint name)

  def take(keras_variable, scope_kind_index, var, reshape=None):
    full = f"{_layer_name(*scope_kind_index)}/{var}"
    if full not in shapes:
      problems.append(f"{full} missing (for {keras_variable.path})")
      return
    value = reader.get_tensor(full)
    if reshape is not None and value.size == int(np.prod(reshape)):
      value = value.reshape(reshape)
    if tuple(value.shape) != tuple(keras_variable.shape):
      problems.append(f"{full} has shape {tuple(shapes[full])}, "
                      f"{keras_variable.path} needs "
                      f"{tuple(keras_variable.shape)}")
      return
    assignments.append((keras_variable, value, full))

  for layer, (index, _) in zip(conv_layers, convs):
    take(layer.kernel, (scope, "conv2d", index), "kernel")
    if layer.use_bias:
      take(layer.bias, (scope, "conv2d", index), "bias")
  for layer, (index, _) in zip(norm_layers, norms):
    for var in _BN_VARIABLES:
      take(getattr(layer, var), (scope, "batch_normalization", index), var)
  used_convs, used_dense = len(conv_layers), 0
  if n_dense:
    layer = model.get_layer("representation")
    index = denses[0][0]
    take(layer.kernel, (scope, "dense", index), "kernel")
    take(layer.bias, (scope, "dense", index), "bias")
    used_dense = 1
  if num_classes:
    layer = model.get_layer("logits")
    index = convs[used_convs][0]
    take(layer.kernel, (scope, "conv2d", index), "kernel",
         reshape=tuple(layer.kernel.shape))
    take(layer.bias, (scope, "conv2d", index), "bias")
    used_convs += 1
  if problems:
    raise TF1CheckpointError(
        f"{prefix!r} does not fit {name!r} at width {width}"
        f"{' (patch)' if patch else ''}: {'; '.join(problems[:10])}"
        f"{' ...' if len(problems) > 10 else ''}.")

  for variable, value, _ in assignments:
    variable.assign(value)
  head = sorted(
      v for kind, rest in (("conv2d", convs[used_convs:]),
                           ("batch_normalization", norms[len(norm_layers):]),
                           ("dense", denses[used_dense:]))
      for _, variables in rest for v in variables.values())
  logging.info("load_tf1: %d variables from %s into %s (scope %r).",
               len(assignments), prefix, model.name, scope)
  if head or outside:
    logging.info("load_tf1: ignored, outside the backbone (logits not "
                 "requested, pretext or evaluation heads): %s",
                 head + outside)
  if ignored:
    logging.info("load_tf1: ignored optimizer slots and bookkeeping: %s",
                 ignored)
  return model
