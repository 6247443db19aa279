"""Pretext ops: they make the self-supervised examples and their labels.

`rotate`, `exemplar`, and `jigsaw` and `relative_patch_location` in their
materialised format, emit `image` with a leading copies axis (and, except
`exemplar`, `label` [copies], int32); the task flattens that axis into the
batch, so a batch size counts source images.
The incoming class `label`, when there is one, is kept as `class_label`.

`jigsaw` and `relative_patch_location` also have an efficient format
(`permute=False`, `pairs=False`): the image stays the 9 patches [9, p, p, C]
and only the labels say which copies to make; the model then runs the
backbone once per patch and builds the copies from the 9 embeddings with
`permute_patches` or `pair_patches` (what the authors' code did). For Jigsaw
this is exactly the same training at a fraction of the memory and compute:
every permutation holds each patch once, so batch norm sees each patch
num_perms times in the copies, the same statistics as once. For Relative
Patch Location it is not quite: in the pairs the centre patch appears 8
times, so batch-norm statistics weight it 8x; with `pairs=False` (the
authors' code) all 9 patches weigh the same.

`crop_patches` cuts the grid of patches the patch-based ops start from.
`jigsaw_shared` is the one batch-level op: it runs after batching.
"""
import numpy as np
import tensorflow as tf

from selfsup.preprocess import randomness
from selfsup.preprocess.image_ops import crop_window, get_image, to_pair
from selfsup.preprocess.permutations import load_permutations
from selfsup.preprocess.registry import get as get_spec
from selfsup.preprocess.registry import register
from selfsup.core.checks import ConfigError

CLASS_LABEL_KEY = "class_label"
NUM_ROTATIONS = 4
# Label l of relative_patch_location pairs cell NEIGHBOURS[l] of the 3x3 grid
# (row-major, 4 is the centre) with the centre; RELATIVE_POSITIONS[l] is that
# neighbour's (row, column) offset from the centre.
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
CENTRE = 4
RELATIVE_POSITIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1),
                      (1, 0), (1, 1))
DEFAULT_EXEMPLAR_SPEC = "inception_crop(224)|flip_lr|color_distort"


def _with_pretext(features, image, label=None):
  """Sets the pretext image (and label), keeping the class label aside."""
  features = dict(features)
  if "label" in features and CLASS_LABEL_KEY not in features:
    features[CLASS_LABEL_KEY] = features["label"]
  features.pop("label", None)
  features["image"] = image
  if label is not None:
    features["label"] = label
  return features


@register("rotate")
def get_rotate():
  """Four copies of a square image rotated by 0, 90, 180, 270 degrees.

  Output image [4, H, W, C] where copy k equals `np.rot90(image, k)` (k quarter
  turns counter-clockwise), and label [4] = [0, 1, 2, 3].
  """

  def rotate(features):
    image = get_image(features)
    h, w = image.shape[0], image.shape[1]
    if h is not None and w is not None and h != w:
      raise ConfigError(f"rotate needs a square image, got shape {image.shape}")
    shape = tf.shape(image)
    checks = [tf.debugging.assert_equal(
        shape[0], shape[1], message="rotate needs a square image")]
    with tf.control_dependencies(checks):
      out = tf.stack([tf.image.rot90(image, k) for k in range(NUM_ROTATIONS)])
    return _with_pretext(features, out, tf.range(NUM_ROTATIONS, dtype=tf.int32))

  return rotate


@register("crop_patches")
def get_crop_patches(grid=3, jitter=0, patch=None, training=True):
  """Cuts a grid x grid array of patches out of [H, W, C]: [grid**2, p, p, C].

  The image is split into cells of (H // grid) x (W // grid) from the top-left
  corner; each cell yields one patch of size `patch`, or cell - `jitter` if no
  patch size is given. The patch sits at a random place in its cell in
  training (a random gap between patches, so that the network cannot match
  edges) and in the centre in evaluation. Patches are ordered row-major.
  The image must have a static size (resize or crop it first).
  """
  if not isinstance(grid, int) or grid < 1:
    raise ConfigError(f"grid must be a positive int, got {grid!r}")
  if not isinstance(jitter, int) or jitter < 0:
    raise ConfigError(f"jitter must be an int >= 0, got {jitter!r} (a negative"
                      " jitter would make the patch larger than its cell)")
  if patch is not None:
    if jitter:
      raise ConfigError("give either jitter or patch, not both")
    patch = to_pair(patch, "patch")

  def crop_patches(features):
    image = get_image(features)
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None:
      raise ConfigError(f"crop_patches needs a static image size, got "
                        f"{image.shape}; resize or crop to a fixed size first")
    cell = (height // grid, width // grid)
    size = patch or (cell[0] - jitter, cell[1] - jitter)
    if not 0 < size[0] <= cell[0] or not 0 < size[1] <= cell[1]:
      raise ConfigError(f"patch {size[0]}x{size[1]} does not fit in a "
                        f"{cell[0]}x{cell[1]} cell (image {height}x{width} "
                        f"split {grid}x{grid}): the patch is larger than its "
                        f"cell")
    room = (cell[0] - size[0], cell[1] - size[1])
    if training:
      features, seeds = randomness.take_seeds(features, 1)
      offsets = randomness.uniform_int(seeds[0], room, shape=[grid * grid, 2])
      offsets = [tf.unstack(o) for o in tf.unstack(offsets)]
    else:
      offsets = [(room[0] // 2, room[1] // 2)] * (grid * grid)
    patches = []
    for index, (dy, dx) in enumerate(offsets):
      row, col = divmod(index, grid)
      patches.append(crop_window(image, row * cell[0] + dy,
                                 col * cell[1] + dx, *size))
    return dict(features, image=tf.stack(patches))

  return crop_patches


def _check_patches(patches, num_patches, rank):
  if patches.shape[rank - 4] != num_patches:
    raise ConfigError(f"expected {num_patches} patches on axis {rank - 4}, "
                      f"got shape {patches.shape}; use crop_patches(3, ...) "
                      f"first")


def _check_flag(name, value):
  # A spec typo such as permute=0 or permute="False" must not pass silently.
  if not isinstance(value, bool):
    raise ConfigError(f"{name} must be True or False, got {value!r}")


def permute_patches(x, label, perms=None):
  """Applies Jigsaw permutations to 9 patches or to their embeddings.

  The model side of `jigsaw(permute=False)`: `permute_patches(x, label)` of
  that op's image and label equals the image of `jigsaw(permute=True)` for
  the same seed, and the same call on the backbone's 9 embeddings gives the
  embeddings of the permuted copies.

  Args:
    x: [9, ...] with `label` [k], or [B, 9, ...] with `label` [B, k] (one
      batch axis; the per-example and the batch-level formats).
    label: int permutation indices, rows of `perms`.
    perms: [num_perms, 9] permutations; default `load_permutations()`.

  Returns:
    [k, 9, ...] (or [B, k, 9, ...]) where copy j is
    `tf.gather(x, perms[label[j]])`: position i holds entry perms[label[j]][i].
  """
  perms = tf.convert_to_tensor(
      load_permutations() if perms is None else perms, tf.int32)
  label = tf.convert_to_tensor(label)
  batch_dims = label.shape.rank - 1
  if batch_dims not in (0, 1):
    raise ConfigError(f"label must have shape [k] or [B, k], got {label.shape}")
  return tf.gather(x, tf.gather(perms, label), axis=batch_dims,
                   batch_dims=batch_dims)


def pair_patches(x, axis=0):
  """The 8 (neighbour, centre) pairs of 9 patches or of their embeddings.

  The model side of `relative_patch_location(pairs=False)`: the 9 entries on
  `axis` (row-major grid) become [8, 2] there, pair l being (entry
  NEIGHBOURS[l], entry CENTRE), so that on the op's image it equals the image
  of `relative_patch_location(pairs=True)`. Use axis=1 for a batch [B, 9, D].
  """
  pairs = [[neighbour, CENTRE] for neighbour in NEIGHBOURS]
  return tf.gather(x, pairs, axis=axis)


def _jigsaw_setup(num_perms, permute):
  perms = load_permutations()
  if not isinstance(num_perms, int) or not 1 <= num_perms <= len(perms):
    raise ConfigError(f"num_perms must be an int in [1, {len(perms)}], got "
                      f"{num_perms!r}")
  _check_flag("permute", permute)
  # Evenly spread over the set, so that jigsaw(100) in evaluation uses all.
  fixed = np.round(np.linspace(0, len(perms) - 1, num_perms)).astype(np.int32)
  return perms, fixed


def _jigsaw_indices(features, perms, fixed, num_perms, training):
  if not training:
    return features, tf.constant(fixed)
  features, seeds = randomness.take_seeds(features, 1)
  return features, randomness.sample_without_replacement(
      seeds[0], len(perms), num_perms)


@register("jigsaw")
def get_jigsaw(num_perms=16, permute=True, training=True):
  """Jigsaw labels for 9 patches [9, p, p, C], and optionally the copies.

  label [num_perms] (int32) holds indices r into `load_permutations()`.
  With `permute=True` the image is [num_perms, 9, p, p, C]: copy j is the
  patches shuffled by permutation r = label[j], output position i holding
  input patch perms[r][i] (`tf.gather(patches, perms[r])`);
  `tf.gather(copy, np.argsort(perms[r]))` puts them back.
  With `permute=False` the image is the input [9, p, p, C], untouched (the
  row-major grid order of `crop_patches`), and the model makes the copies
  from the patch embeddings with `permute_patches(embeddings, label)`.
  Both formats draw the same labels and pass on the same `_seed`, so for a
  given seed they describe exactly the same examples.

  In training, each image draws its own `num_perms` distinct permutations
  (the paper: 16 per image, each a training example). In evaluation the
  choice is fixed, `num_perms` indices spread evenly over 0..99, so that a
  validation score does not depend on the seed.
  """
  perms, fixed = _jigsaw_setup(num_perms, permute)

  def jigsaw(features):
    patches = get_image(features, ranks=(4,))
    _check_patches(patches, perms.shape[1], 4)
    features, index = _jigsaw_indices(features, perms, fixed, num_perms,
                                      training)
    out = permute_patches(patches, index, perms) if permute else patches
    return _with_pretext(features, out, index)

  return jigsaw


@register("jigsaw_shared")
def get_jigsaw_shared(num_perms=8, permute=True, training=True):
  """Batch-level Jigsaw, as in the authors' code: one subset for the batch.

  Apply AFTER batching (in a pipeline's batch spec), to patches
  [B, 9, p, p, C]. It draws `num_perms` distinct permutations once for the
  whole batch; label [B, num_perms] repeats them for every example. With
  `permute=True` the image is [B, num_perms, 9, p, p, C], permutations
  applied as in `jigsaw`; with `permute=False` it stays [B, 9, p, p, C] and
  `permute_patches(embeddings [B, 9, ...], label)` makes the copies. Labels
  and the passed-on `_seed` do not depend on `permute`. In evaluation the
  subset is the same fixed one as `jigsaw`'s.
  """
  perms, fixed = _jigsaw_setup(num_perms, permute)

  def jigsaw_shared(features):
    patches = get_image(features, ranks=(5,))
    _check_patches(patches, perms.shape[1], 5)
    features, index = _jigsaw_indices(features, perms, fixed, num_perms,
                                      training)
    label = tf.tile(index[None], [tf.shape(patches)[0], 1])
    out = permute_patches(patches, label, perms) if permute else patches
    return _with_pretext(features, out, label)

  return jigsaw_shared


@register("relative_patch_location")
def get_relative_patch_location(pairs=True):
  """Relative Patch Location: the 8 (neighbour, centre) pairs of 9 patches.

  Input [9, p, p, C] (row-major, from `crop_patches(3, ...)`). label [8] =
  0..7: the neighbours in row-major order skipping the centre, i.e.
  top-left, top, top-right, left, right, bottom-left, bottom, bottom-right
  (offsets in RELATIVE_POSITIONS). With `pairs=True` the image is
  [8, 2, p, p, C], pair l being (patch NEIGHBOURS[l], centre patch 4). With
  `pairs=False` the image is the input [9, p, p, C], untouched, and the model
  pairs the embeddings with `pair_patches(embeddings)`, as the authors' code
  did: each patch goes through the backbone once, where the pairs send the
  centre 8 times (which also gives it 8x the weight in batch-norm statistics;
  the labels and pairs are otherwise the same).
  """
  _check_flag("pairs", pairs)

  def relative_patch_location(features):
    patches = get_image(features, ranks=(4,))
    _check_patches(patches, 9, 4)
    out = pair_patches(patches) if pairs else patches
    return _with_pretext(features, out,
                         tf.range(len(NEIGHBOURS), dtype=tf.int32))

  return relative_patch_location


@register("exemplar")
def get_exemplar(n=8, spec=DEFAULT_EXEMPLAR_SPEC, training=True):
  """`n` copies of the image, each through the augmentation spec `spec`.

  Output image [n, ...] (the spec must give a fixed shape). There is no
  `label`: an example's class is its source image, which the task reads off
  the batch position; the incoming class label is kept as `class_label`.
  With a per-example seed, every copy gets its own seed split from it.
  `training` is passed on to `spec` (in evaluation the copies are the same
  deterministic view).
  """
  if not isinstance(n, int) or n < 1:
    raise ConfigError(f"n must be a positive int, got {n!r}")
  augment = get_spec(spec, training)

  def exemplar(features):
    get_image(features, ranks=(0, 3))  # encoded bytes if `spec` decodes
    seeds = None
    if randomness.SEED_KEY in features:
      features, seeds = randomness.take_seeds(features, n)
    copies = []
    for i in range(n):
      view = dict(features)
      if seeds is not None:
        view[randomness.SEED_KEY] = seeds[i]
      copies.append(augment(view)["image"])
    return _with_pretext(features, tf.stack(copies))

  return exemplar
