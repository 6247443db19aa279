"""The methods that came after the paper: SimCLR, BYOL and Barlow Twins.

Each sees two augmented views of every image (image [B, 2, H, W, 3] from the
`two_views` op), runs the backbone on both in one batch, maps its
`pre_logits` through heads (projector; BYOL also a predictor) and compares
the views. Only the backbone is exported, so evaluation treats them like the
paper's tasks. Their losses live in `tasks.losses`; the terms that couple
examples (NT-Xent's negatives, Barlow Twins' batch statistics) are computed
on the global batch (`distributed.gather_global`).

How they differ from the paper's four tasks: no pretext label, the views
come from strong colour and blur augmentation, heads are MLPs with batch
norm, and the papers train with LARS and a cosine schedule (TrainConfig
settings, see gin/simclr.gin).
"""
import math

import keras
import tensorflow as tf

from selfsup.core import checks
from selfsup.preprocess import specs as specs_lib
from selfsup.tasks import base, distributed, losses


def mlp(hidden, out, *, layers, weight_decay, name, sync_batch_norm=False,
        out_bn=False):
  """Projector/predictor: (Dense, BN, ReLU) x (layers - 1), then Dense(out).

  `hidden` None uses the input's size (SimCLR's projector: as wide as the
  representation). `out_bn` adds batch norm without a shift after the last
  layer (SimCLR's projector).
  """
  reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
  stack = []
  for i in range(layers - 1):
    size = hidden
    stack += [_LazyDense(size, reg, name=f"fc{i + 1}"),
              keras.layers.BatchNormalization(synchronized=sync_batch_norm,
                                              name=f"fc{i + 1}_bn"),
              keras.layers.ReLU(name=f"fc{i + 1}_relu")]
  stack.append(keras.layers.Dense(out, use_bias=not out_bn,
                                  kernel_regularizer=reg,
                                  name=f"fc{layers}"))
  if out_bn:
    stack.append(keras.layers.BatchNormalization(
        synchronized=sync_batch_norm, center=False, name=f"fc{layers}_bn"))
  return keras.Sequential(stack, name=name)


class _LazyDense(keras.layers.Dense):
  """A bias-free Dense whose width, if None, is its input's (known at build)."""

  def __init__(self, units, reg, name):
    self._same = units is None
    super().__init__(units or 1, use_bias=False, kernel_regularizer=reg,
                     name=name)

  def build(self, input_shape):
    if self._same:
      self.units = int(input_shape[-1])
    super().build(input_shape)


class TwoViewTask(base.Task):
  """Shared by the three methods: specs, backbone, views, embeddings."""

  def __init__(self, projector=(2048, 128), projector_layers=2, **kwargs):
    self.projector_sizes = _sizes("projector", projector)
    self.projector_layers = checks.integer(
        f"{self.name}.projector_layers", projector_layers, minimum=1)
    self.projector = None
    super().__init__(**kwargs)

  def dummy_batch(self, batch_size):
    s = self.image_size
    return {"image": tf.zeros([batch_size, 2, s, s, 3])}

  def _build(self, sync_batch_norm):
    self.backbone = self._backbone(None, sync_batch_norm)
    self.projector = self._projector("projector", sync_batch_norm)

  def _projector(self, name, sync_batch_norm, out_bn=False):
    hidden, out = self.projector_sizes
    return mlp(hidden, out, layers=self.projector_layers,
               weight_decay=self.weight_decay, name=name,
               sync_batch_norm=sync_batch_norm, out_bn=out_bn)

  @property
  def modules(self):
    return {"backbone": self.backbone, "projector": self.projector}

  def project(self, batch, training, backbone=None, projector=None):
    """Both views through backbone and projector: (z1, z2), float32."""
    images = batch["image"]
    n = tf.shape(images)[0]
    both = tf.concat([images[:, 0], images[:, 1]], axis=0)
    features = (backbone or self.backbone)(both, training=training)
    z = tf.cast((projector or self.projector)(features["pre_logits"],
                                              training=training), tf.float32)
    return z[:n], z[n:]


def _sizes(name, value):
  if (not isinstance(value, (tuple, list)) or len(value) != 2
      or not all(v is None or (isinstance(v, int) and v > 0)
                 for v in value) or value[1] is None):
    raise checks.ConfigError(
        f"{name}={value!r} is invalid: expected (hidden, output) sizes, "
        "positive ints (hidden may be None: the representation's size).")
  return tuple(value)


class SimCLR(TwoViewTask):
  """SimCLR (Chen et al. 2020): NT-Xent between the projections of 2 views.

  Args:
    temperature: NT-Xent's t (0.1 with SimCLR's large batches).
    projector: (hidden, output) sizes; hidden None is the representation's
      size (v1: 2048 for ResNet50, output 128).
    projector_layers: 2 (SimCLR v1) or 3 (v2).
    jitter_strength: colour jitter strength s (1.0 on ImageNet, 0.5 on
      CIFAR-10).
  """

  name = "simclr"

  @classmethod
  def pretext_specs(cls, size=224, jitter_strength=1.0, blur_p=0.5):
    """Both views: crop, flip, jitter (0.8), grayscale (0.2), blur (0.5)."""
    return specs_lib.two_view_specs(specs_lib.view(
        size, strength=jitter_strength, blur_p=blur_p))

  def __init__(self, temperature=0.1, projector=(None, 128),
               jitter_strength=1.0, **kwargs):
    self.temperature = checks.positive("simclr.temperature", temperature)
    self.jitter_strength = jitter_strength
    super().__init__(projector=projector, **kwargs)

  def _spec_kwargs(self, kwargs):
    kwargs.setdefault("jitter_strength", self.jitter_strength)
    return super()._spec_kwargs(kwargs)

  def _projector(self, name, sync_batch_norm, out_bn=True):
    return super()._projector(name, sync_batch_norm, out_bn=out_bn)

  def step(self, batch, training):
    z1, z2 = self.project(batch, training)
    z1, z2 = distributed.gather_global(z1), distributed.gather_global(z2)
    loss = losses.nt_xent_loss(z1, z2, self.temperature)
    accuracy = losses.nt_xent_accuracy(z1, z2, self.temperature)
    return loss, {"accuracy": accuracy}


class BarlowTwins(TwoViewTask):
  """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two
  views' projections, normalised over the global batch, pushed to identity.

  Args:
    lambda_: weight of the off-diagonal terms (0.0051).
    projector: (hidden, output) sizes (8192, 8192), with 3 layers.
    loss_scale: multiplies the loss (the authors' first code release had
      `--scale-loss 0.024`; the paper's loss is 1). The loss is a sum over
      the output's dimensions, so its gradients grow with them.
  """

  name = "barlow_twins"

  @classmethod
  def pretext_specs(cls, size=224):
    """BYOL's views: blur 1.0 / 0.1, solarization 0 / 0.2."""
    return _byol_views(size)

  def __init__(self, lambda_=0.0051, projector=(8192, 8192),
               projector_layers=3, loss_scale=1.0, **kwargs):
    self.lambda_ = checks.number("barlow_twins.lambda_", lambda_, minimum=0)
    self.loss_scale = checks.positive("barlow_twins.loss_scale", loss_scale)
    super().__init__(projector=projector, projector_layers=projector_layers,
                     **kwargs)

  def step(self, batch, training):
    z1, z2 = self.project(batch, training)
    z1, z2 = distributed.gather_global(z1), distributed.gather_global(z2)
    loss = losses.barlow_twins_loss(z1, z2, self.lambda_)
    return self.loss_scale * loss, {}


def _byol_views(size):
  first = specs_lib.view(size, jitter=specs_lib.BYOL_JITTER, blur_p=1.0)
  second = specs_lib.view(size, jitter=specs_lib.BYOL_JITTER, blur_p=0.1,
                          solarize_p=0.2)
  return specs_lib.two_view_specs(first, second)


def tau_schedule(step, total_steps, base_tau=0.996):
  """BYOL's target decay: 1 - (1 - base_tau) (cos(pi k / K) + 1) / 2 at the
  k-th update of K, from base_tau to 1 (Grill et al. 2020, section 3.2)."""
  k = tf.cast(step, tf.float32)
  total = tf.cast(tf.maximum(total_steps, 1), tf.float32)
  return 1.0 - (1.0 - base_tau) * (tf.cos(math.pi * k / total) + 1.0) / 2.0


class BYOL(TwoViewTask):
  """BYOL (Grill et al. 2020): an online network (backbone, projector,
  predictor) predicts a target network's projection of the other view; the
  target is an exponential moving average of the online backbone and
  projector, updated after every optimizer step with tau from `base_tau`
  to 1 on a cosine. The loss is symmetric, with no gradient to the target.

  Args:
    projector: (hidden, output) of projector and predictor (4096, 256).
    base_tau: the target's decay at the first step (0.996).
  """

  name = "byol"

  @classmethod
  def pretext_specs(cls, size=224):
    """View 1: blur always; view 2: blur 0.1, solarization 0.2."""
    return _byol_views(size)

  def __init__(self, projector=(4096, 256), base_tau=0.996, **kwargs):
    self.base_tau = checks.number("byol.base_tau", base_tau, minimum=0,
                                  maximum=1)
    self.predictor = self.target_backbone = self.target_projector = None
    super().__init__(projector=projector, **kwargs)

  def _build(self, sync_batch_norm):
    super()._build(sync_batch_norm)
    hidden, out = self.projector_sizes
    self.predictor = mlp(hidden, out, layers=2, weight_decay=self.weight_decay,
                         name="predictor", sync_batch_norm=sync_batch_norm)
    self.target_backbone = self._backbone(None, sync_batch_norm)
    self.target_projector = self._projector("target_projector",
                                            sync_batch_norm)

  def build(self, sync_batch_norm=False):
    super().build(sync_batch_norm)
    # The target starts as a copy of the online network.
    distributed.ema_update(self._target_variables(all_=True),
                           self._online_variables(all_=True), 0.0)
    return self

  @property
  def modules(self):
    return {"backbone": self.backbone, "projector": self.projector,
            "predictor": self.predictor,
            "target_backbone": self.target_backbone,
            "target_projector": self.target_projector}

  @property
  def _online(self):
    return (self.backbone, self.projector, self.predictor)

  @property
  def trainable_variables(self):
    return [v for m in self._online for v in m.trainable_variables]

  @property
  def regularization_losses(self):
    return [l for m in self._online for l in m.losses]

  def _online_variables(self, all_=False):
    mods = (self.backbone, self.projector)
    return [v for m in mods
            for v in (m.variables if all_ else m.trainable_variables)]

  def _target_variables(self, all_=False):
    mods = (self.target_backbone, self.target_projector)
    return [v for m in mods
            for v in (m.variables if all_ else m.trainable_variables)]

  def step(self, batch, training):
    z1, z2 = self.project(batch, training)
    p1 = tf.cast(self.predictor(z1, training=training), tf.float32)
    p2 = tf.cast(self.predictor(z2, training=training), tf.float32)
    t1, t2 = self.project(batch, training, self.target_backbone,
                          self.target_projector)
    loss = losses.byol_loss(p1, t2) + losses.byol_loss(p2, t1)
    return loss, {}

  def after_update(self, step, total_steps):
    """The target's EMA update, tau from `tau_schedule`."""
    tau = tau_schedule(step, total_steps, self.base_tau)
    distributed.ema_update(self._target_variables(),
                           self._online_variables(), tau)
