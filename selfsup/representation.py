"""`selfsup.Representation`: a pretrained backbone as one Keras layer.

    layer = selfsup.Representation.from_workdir("workdir")   # frozen
    model = keras.Sequential([layer, keras.layers.Dense(10)])
    model(uint8_images)   # [B, H, W, 3], any H and W

The layer holds the backbone and the preprocessing its representation was
evaluated with (the export's `eval_specs["eval"]`): it takes images as people
have them (uint8, or float in [0, 255]; 1, 3 or 4 channels, as `decode`),
resizes and crops them, maps them to the backbone's value range (Rotation,
Exemplar, supervised: [-1, 1]; Jigsaw, Relative Patch Location: the central
square as a 3x3 grid of standardised patches) and returns one tensor: the
endpoint pooled as the linear evaluation pools it (`pooling="evaluation"`:
block endpoints max-pooled on the adaptive grid of
`selfsup.core.pooling`, patch models averaged over their 9 patches),
`"avg"`/`"max"` (global pooling of a block endpoint) or None (the map
itself; [B, 9, h, w, C] for patch models).

Batch norm and fine-tuning (as in Keras' transfer-learning guide): by default
(`batch_norm="frozen"`) the backbone always runs in inference mode, so its
batch norms use and keep their moving statistics even with `trainable=True`
(only the weights learn); `batch_norm="train"` lets them use batch statistics
and update their moving averages in training, as in pretraining.

Weight decay: the backbone's kernels carry the pretraining's L2 penalty
(`weight_decay` x sum(w**2) / 2, 1e-4 by default), which Keras adds to the
loss through `model.losses` whenever the layer is trainable.
`weight_decay=False` removes it (a frozen layer adds none either way).
"""
import os

import keras
import tensorflow as tf

import selfsup.models  # noqa: F401  (registers the backbones' classes)
from selfsup.core import pooling as pooling_lib
from selfsup import preprocessor as preprocessor_lib
from selfsup.core.checks import ConfigError

# This module is imported when Keras is (see selfsup/__init__.py), possibly
# while another selfsup module is half imported: the evaluation and export
# modules are imported where they are used.
# pylint: disable=g-import-not-at-top

MAX_FEATURES = pooling_lib.MAX_FEATURES
GRID_RULES = pooling_lib.RULES
POOLINGS = ("evaluation", "avg", "max", None)
BATCH_NORM = ("frozen", "train")
@keras.saving.register_keras_serializable(package="selfsup")
class Representation(keras.layers.Layer):
  """A pretrained backbone and its evaluation preprocessing, as one layer.

  Args:
    backbone: a selfsup backbone (a model whose output is a dict of
      endpoints), or its serialized config.
    spec: the preprocessing spec the representation is evaluated with
      (info.json's `eval_specs["eval"]`, or the whole `eval_specs` dict).
    endpoint: which endpoint to return ("pre_logits", "block1".."block4",
      "after_root"; "logits" where the backbone has one).
    pooling: "evaluation" (as the linear evaluation: block maps max-pooled on
      the adaptive grid to about `max_features` values), "avg", "max" (global
      pooling of a block map) or None (the map). Vectors are never pooled;
      patch models average the 9 patches unless `pooling` is None.
    batch_norm: "frozen" (inference mode always, the Keras transfer-learning
      guide's advice) or "train" (batch statistics in training).
    weight_decay: keep the backbone's L2 penalties (added to `model.losses`
      while trainable) or drop them (False).
    max_features: the evaluation's pooling target (9,000).
    grid_rule: the evaluation's pooling rule, "nearest", "floor" or "max"
      (see `selfsup.core.pooling`).
    trainable: False freezes the backbone (weights and batch norm).
    portable: preprocess with built-in ops only, for TFLite and XLA
      (`jit_compile=True`), at a fixed input size (see
      `selfsup.preprocessor.ImagePreprocessor`).
  """

  def __init__(self, backbone, spec, endpoint="pre_logits",
               pooling="evaluation", batch_norm="frozen", weight_decay=True,
               max_features=MAX_FEATURES, grid_rule="nearest",
               trainable=False, portable=False, **kwargs):
    # The layer casts images itself: a mixed-precision policy must not round
    # [0, 255] pixels to bfloat16 before the preprocessing.
    kwargs.setdefault("autocast", False)
    super().__init__(trainable=trainable, **kwargs)
    if isinstance(backbone, dict):
      backbone = keras.saving.deserialize_keras_object(backbone)
    if not (isinstance(backbone, keras.Model)
            and isinstance(backbone.output, dict)):
      raise ConfigError(f"backbone={backbone!r} is not valid: expected a "
                        "selfsup backbone (a keras.Model whose output is a dict "
                        "of endpoints), e.g. selfsup.models.get(...) or an "
                        "export's backbone.keras.")
    endpoints = list(backbone.output)
    if endpoint not in endpoints:
      raise ConfigError(f"endpoint={endpoint!r} is not valid: expected one of "
                        f"the backbone's endpoints {endpoints}.")
    if pooling not in POOLINGS:
      raise ConfigError(f"pooling={pooling!r} is not valid: expected one of "
                        f"{POOLINGS}.")
    if batch_norm not in BATCH_NORM:
      raise ConfigError(f"batch_norm={batch_norm!r} is not valid: expected one "
                        f"of {BATCH_NORM}.")
    if not isinstance(weight_decay, bool):
      raise ConfigError(f"weight_decay={weight_decay!r} is not valid: expected "
                        "True (keep the backbone's L2 penalties) or False.")
    if (not isinstance(max_features, int) or isinstance(max_features, bool)
        or max_features < 1):
      raise ConfigError(f"max_features={max_features!r} is not valid: expected "
                        "a positive integer.")
    if grid_rule not in GRID_RULES:
      raise ConfigError(f"grid_rule={grid_rule!r} is not valid: expected one "
                        f"of {GRID_RULES}.")
    self.preprocessor = preprocessor_lib.ImagePreprocessor(
        spec, portable=portable, name="preprocessor")
    self.spec = self.preprocessor.spec
    self.portable = portable
    self.patch_based = self.preprocessor.patch_based
    self.endpoint = endpoint
    self.pooling = pooling
    self.batch_norm = batch_norm
    self.weight_decay = weight_decay
    self.max_features = max_features
    self.grid_rule = grid_rule
    self.backbone = backbone
    if not weight_decay:
      for variable in backbone.weights:
        variable.regularizer = None
    # Down to every layer of the backbone. (`self.trainable = trainable`
    # would stop at once: TF's attribute tracking skips assigning the value
    # an attribute already has.)
    keras.layers.Layer.trainable.fset(self, trainable)
    self.input_spec = keras.InputSpec(ndim=4)
    # tf.map_fn and the antialiased resize have no XLA kernels; the portable
    # path has none of them.
    self.supports_jit = portable

  # -- constructors ---------------------------------------------------------

  @classmethod
  def from_workdir(cls, path, endpoint="pre_logits", trainable=False,
                   pooling="evaluation", **kwargs):
    """The exported backbone of a pretraining workdir (or its export folder)
    with the preprocessing its info.json names."""
    from selfsup.workdir import export as export_lib
    export_dir = path
    if not tf.io.gfile.exists(os.path.join(path, export_lib.INFO)):
      export_dir = os.path.join(path, "export")
    if not tf.io.gfile.exists(os.path.join(export_dir, export_lib.INFO)):
      raise FileNotFoundError(
          f"path={path!r} holds no complete export: expected a workdir with "
          f"export/{export_lib.INFO} or an export folder with "
          f"{export_lib.INFO} (bin/pretrain writes it when training ends).")
    info = export_lib.load_info(export_dir)
    backbone = export_lib.load_backbone(export_dir)
    if endpoint != "logits":  # exports written before the head was separate
      backbone = export_lib.headless(backbone)
    return cls(backbone, info["eval_specs"]["eval"], endpoint=endpoint,
               trainable=trainable, pooling=pooling, **kwargs)

  @classmethod
  def from_keras(cls, path, spec, endpoint="pre_logits", trainable=False,
                 pooling="evaluation", **kwargs):
    """A `.keras` backbone file (or a loaded backbone) with `spec`."""
    backbone = path
    if isinstance(path, (str, os.PathLike)):
      backbone = keras.saving.load_model(os.fspath(path))
    return cls(backbone, spec, endpoint=endpoint, trainable=trainable,
               pooling=pooling, **kwargs)

  @classmethod
  def from_tf1(cls, path, name="auto", *, width=None, task="rotation",
               image_size=None, endpoint="pre_logits", trainable=False,
               pooling="evaluation", backbone_kwargs=None, **kwargs):
    """One of the authors' TF1 checkpoints or TF-Hub modules (see
    `selfsup.models.load_tf1`; name "auto" and width None read them off the
    variables), with the evaluation preprocessing of `task` at `image_size`
    (default 224; 64, the patch side, for patch tasks)."""
    import selfsup.tasks
    if task not in selfsup.tasks.TASKS:
      raise ConfigError(f"task={task!r} is not valid: expected one of "
                        f"{selfsup.tasks.TASKS.names()}.")
    task_class = selfsup.tasks.TASKS.lookup(task)[0]
    size = image_size or (64 if task_class.patch_based else 224)
    backbone_kwargs = dict(backbone_kwargs or {})
    builder = (selfsup.models.BACKBONES.lookup(name)[0] if name != "auto"
               else None)  # "auto" reads VGG's input size off its fc6
    if getattr(builder, "fixed_input_size", False):
      backbone_kwargs.setdefault("input_shape", (size, size, 3))
    backbone = selfsup.models.load_tf1(
        path, name, width=width, patch=task_class.patch_based,
        **backbone_kwargs)
    spec = task_class.evaluation_specs(size)["eval"]
    return cls(backbone, spec, endpoint=endpoint, trainable=trainable,
               pooling=pooling, **kwargs)

  @classmethod
  def from_preset(cls, name, *, source=None, download=None, image_size=None,
                  endpoint="pre_logits", trainable=False, pooling="evaluation",
                  **kwargs):
    """A pretrained preset (`selfsup presets` lists them) with the
    evaluation preprocessing of its task: downloaded on first use into
    `SELFSUP_HOME` and checked (`selfsup.presets`), or read from `source`,
    a local module folder or tarball."""
    from selfsup import presets
    folder, entry = presets.resolve(name, source=source, download=download)
    return cls.from_tf1(folder, "auto", width=entry["width"],
                        task=entry["task"], image_size=image_size,
                        endpoint=endpoint, trainable=trainable,
                        pooling=pooling, **kwargs)

  # -- computation ----------------------------------------------------------

  def preprocess(self, images):
    """Images [B, H, W, C] (uint8 or float in [0, 255]) -> the backbone's
    inputs: [B, S, S, 3], or [B, 9, p, p, 3] for patch models."""
    x = tf.convert_to_tensor(images)
    if x.shape.rank != 4:
      raise ConfigError(f"Representation expects a batch of images [batch, "
                        f"height, width, channels], got shape {x.shape}.")
    return self.preprocessor(x)

  def build(self, input_shape=None):
    # The backbone is built (a functional model); the preprocessor has no
    # weights. Saying so keeps Keras from warning about unbuilt state.
    self.preprocessor.build(input_shape)
    self.built = True

  def _pool(self, value):
    if value.shape.rank != 4 or self.pooling is None:
      return value
    if self.pooling == "avg":
      return tf.reduce_mean(value, axis=[1, 2])
    if self.pooling == "max":
      return tf.reduce_max(value, axis=[1, 2])
    return pooling_lib.pool(value, self.max_features, rule=self.grid_rule)

  def call(self, images, training=None):
    x = self.preprocess(images)
    patches = x.shape.rank == 5
    if patches:
      num = x.shape[1]
      x = tf.reshape(x, [-1] + x.shape[2:].as_list())
    bn_training = training if self.batch_norm == "train" else False
    value = self.backbone(x, training=bn_training)[self.endpoint]
    value = self._pool(tf.cast(value, tf.float32))
    if patches:
      value = tf.reshape(value, [-1, num] + value.shape[1:].as_list())
      if self.pooling is not None or value.shape.rank == 3:
        value = tf.reduce_mean(value, axis=1)
    return value

  def get_config(self):
    config = super().get_config()
    config.update(
        backbone=keras.saving.serialize_keras_object(self.backbone),
        spec=self.spec, endpoint=self.endpoint, pooling=self.pooling,
        batch_norm=self.batch_norm, weight_decay=self.weight_decay,
        max_features=self.max_features, grid_rule=self.grid_rule,
        portable=self.portable)
    return config

  def compute_output_spec(self, images, training=None):
    # Keras' default would trust compute_output_shape and the layer's compute
    # dtype; the output is float32 whatever the policy: trace the call.
    del training
    from keras.src import backend as keras_backend
    return keras_backend.compute_output_spec(self.call, images)

  def compute_output_shape(self, input_shape):
    """The spec fixes the backbone's input size, so the output shape
    follows from the input's rank and channels alone."""
    spec = keras.KerasTensor(tuple(input_shape), dtype="uint8")
    return tuple(self.compute_output_spec(spec).shape)

  @property
  def layers(self):
    """The preprocessing and the backbone, so that `summary(expand_nested=
    True)` and `plot_model(expand_nested=True)` show what is inside."""
    return [self.preprocessor, self.backbone]

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
    return cls(backbone, **config)
