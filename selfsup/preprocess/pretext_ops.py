"""Pretext ops: they make the self-supervised examples and their labels.

`rotate`, `jigsaw`, `relative_patch_location` and `exemplar` emit `image` with
a leading copies axis (and, except `exemplar`, `label` [copies], int32); the
task flattens that axis into the batch, so a batch size counts source images.
The incoming class `label`, when there is one, is kept as `class_label`.

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

CLASS_LABEL_KEY = "class_label"
NUM_ROTATIONS = 4
# Label l of relative_patch_location pairs cell NEIGHBOURS[l] of the 3x3 grid
# (row-major, 4 is the centre) with the centre; RELATIVE_POSITIONS[l] is that
# neighbour's (row, column) offset from the centre.
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
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
      raise ValueError(f"rotate needs a square image, got shape {image.shape}")
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
    raise ValueError(f"grid must be a positive int, got {grid!r}")
  if not isinstance(jitter, int) or jitter < 0:
    raise ValueError(f"jitter must be an int >= 0, got {jitter!r} (a negative"
                     " jitter would make the patch larger than its cell)")
  if patch is not None:
    if jitter:
      raise ValueError("give either jitter or patch, not both")
    patch = to_pair(patch, "patch")

  def crop_patches(features):
    image = get_image(features)
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None:
      raise ValueError(f"crop_patches needs a static image size, got "
                       f"{image.shape}; resize or crop to a fixed size first")
    cell = (height // grid, width // grid)
    size = patch or (cell[0] - jitter, cell[1] - jitter)
    if not 0 < size[0] <= cell[0] or not 0 < size[1] <= cell[1]:
      raise ValueError(f"patch {size[0]}x{size[1]} does not fit in a "
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
    raise ValueError(f"expected {num_patches} patches on axis {rank - 4}, "
                     f"got shape {patches.shape}; use crop_patches(3, ...) "
                     f"first")


def _jigsaw_setup(num_perms):
  perms = load_permutations()
  if not isinstance(num_perms, int) or not 1 <= num_perms <= len(perms):
    raise ValueError(f"num_perms must be an int in [1, {len(perms)}], got "
                     f"{num_perms!r}")
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
def get_jigsaw(num_perms=16, training=True):
  """Shuffles 9 patches [9, p, p, C] by `num_perms` of the 100 permutations.

  Output image [num_perms, 9, p, p, C] and label [num_perms]: copy j is the
  patches shuffled by permutation r = label[j] of `load_permutations()`, with
  output position i holding input patch perms[r][i] (`tf.gather(patches,
  perms[r])`); `tf.gather(copy, np.argsort(perms[r]))` puts them back.

  In training, each image draws its own `num_perms` distinct permutations
  (the paper: 16 per image, each a training example). In evaluation the
  choice is fixed, `num_perms` indices spread evenly over 0..99, so that a
  validation score does not depend on the seed.
  """
  perms, fixed = _jigsaw_setup(num_perms)
  perms_tensor = tf.constant(perms)

  def jigsaw(features):
    patches = get_image(features, ranks=(4,))
    _check_patches(patches, perms.shape[1], 4)
    features, index = _jigsaw_indices(features, perms, fixed, num_perms,
                                      training)
    out = tf.gather(patches, tf.gather(perms_tensor, index))
    return _with_pretext(features, out, index)

  return jigsaw


@register("jigsaw_shared")
def get_jigsaw_shared(num_perms=8, training=True):
  """Batch-level Jigsaw, as in the authors' code: one subset for the batch.

  Apply AFTER batching (in a pipeline's batch spec), to patches
  [B, 9, p, p, C]. It draws `num_perms` distinct permutations once for the
  whole batch and gives image [B, num_perms, 9, p, p, C] and label
  [B, num_perms], permutations applied as in `jigsaw`. In evaluation the
  subset is the same fixed one as `jigsaw`'s.
  """
  perms, fixed = _jigsaw_setup(num_perms)
  perms_tensor = tf.constant(perms)

  def jigsaw_shared(features):
    patches = get_image(features, ranks=(5,))
    _check_patches(patches, perms.shape[1], 5)
    features, index = _jigsaw_indices(features, perms, fixed, num_perms,
                                      training)
    out = tf.gather(patches, tf.gather(perms_tensor, index), axis=1)
    label = tf.tile(index[None], [tf.shape(patches)[0], 1])
    return _with_pretext(features, out, label)

  return jigsaw_shared


@register("relative_patch_location")
def get_relative_patch_location():
  """All 8 (neighbour, centre) pairs of a 3x3 grid of patches.

  Input [9, p, p, C] (row-major, from `crop_patches(3, ...)`). Output image
  [8, 2, p, p, C] where pair l is (patch NEIGHBOURS[l], centre patch 4), and
  label [8] = 0..7: the neighbours in row-major order skipping the centre,
  i.e. top-left, top, top-right, left, right, bottom-left, bottom,
  bottom-right (offsets in RELATIVE_POSITIONS).
  """

  def relative_patch_location(features):
    patches = get_image(features, ranks=(4,))
    _check_patches(patches, 9, 4)
    neighbours = tf.gather(patches, NEIGHBOURS)
    centre = tf.repeat(patches[4:5], len(NEIGHBOURS), axis=0)
    out = tf.stack([neighbours, centre], axis=1)
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
    raise ValueError(f"n must be a positive int, got {n!r}")
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
