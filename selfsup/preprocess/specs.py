"""Ready-made preprocessing specs for the paper's settings, at any size.

Each task's specs are a dict with three spec strings:
  "train": per example, parsed with `get(spec, training=True)`;
  "eval":  per example, parsed with `get(spec, training=False)`;
  "batch": applied after batching (with the same `training` flag); empty
           except for the authors'-code Jigsaw variant (`shared_perms`).

Paper settings (supplementary, sections 1-2):
* Rotation, Exemplar: the Inception augmentation of Szegedy et al. at 224
  (random area/aspect crop, flip, slim's brightness and saturation jitter),
  values in [-1, 1]. Exemplar makes 8 augmented copies per image.
* Jigsaw, Relative Patch Location: resize to 292x292, random 255x255 crop,
  grayscale with probability p, 3x3 cells of 85x85 with a random 64x64 patch
  in each, each patch standardised. p defaults to 1/3 as in the
  supplementary; the main text says 2/3 and the authors' configs used 0.66.
  The supplementary converts the crop before cutting patches (as did the
  authors' code); `gray_per_patch=True` converts each patch on its own, as
  the main text's wording suggests.
  By default the pretext op keeps the 9 patches and emits only the labels
  (`jigsaw(16, permute=False)`, `relative_patch_location(pairs=False)`): the
  model runs the backbone once per patch and makes the copies from the
  embeddings, as the authors' code did. `permute_images=True` (Jigsaw) and
  `pair_images=True` (RPL) materialise the copies in the input pipeline.
* Linear evaluation, Rotation/Exemplar/supervised: smaller side to 256, 224
  crop (random for training, central for evaluation), values in [-1, 1].
* Patch representation (Jigsaw/RelPatchLoc): scale to 255x255, central
  192x192, 3x3 grid of 64x64 patches, each standardised; the representation
  is the average over the 9 patches. For L-BFGS on precomputed features use
  "eval" for every split; "train" adds a random 192 crop for SGD training.

Small sizes (the offline demo) use the same functions, e.g.
`task_specs("jigsaw", crop=48, patch=12)` gives cells of 16 with 12x12
patches and `task_specs("rotation", size=32)`.
"""
from selfsup.preprocess.registry import get as _get_spec

TASKS = ("rotation", "exemplar", "jigsaw", "relative_patch_location",
         "supervised")
PATCH_TASKS = ("jigsaw", "relative_patch_location")
GRID = 3
GRAY_P = 1 / 3  # Supplementary; main text 2/3; authors' configs 0.66.
_TO_RANGE = "value_range(-1, 1)"


def _num(value):
  """A short literal for a float in a spec (1/3 -> 0.333333)."""
  return repr(round(float(value), 6))


def _eval_resize(size):
  # 256 for 224, the usual ratio between the resize and the central crop.
  return int(round(size * 256 / 224))


def _join(*ops):
  return "|".join(op for op in ops if op)


def rotation_specs(size=224):
  """Rotation: Inception augmentation at `size`, then 4 rotated copies."""
  return {
      "train": _join("decode", f"inception_crop({size})", "flip_lr",
                     "color_distort", _TO_RANGE, "rotate"),
      "eval": _join("decode", f"resize_small({_eval_resize(size)})",
                    f"central_crop({size})", _TO_RANGE, "rotate"),
      "batch": "",
  }


def exemplar_specs(size=224, copies=8, gray_p=0.0):
  """Exemplar: `copies` Inception-augmented views of each image.

  Args:
    size: output side.
    copies: views per image (8 in the paper).
    gray_p: probability of turning the image grayscale before the copies are
      made (the authors' code used 0.66; the paper mentions none).
  """
  augment = _join(f"inception_crop({size})", "flip_lr", "color_distort",
                  _TO_RANGE)
  gray = f"to_gray({_num(gray_p)})" if gray_p else ""
  # The pretext is only a task with distinct views: evaluation keeps the
  # augmentation (training=True), made repeatable by the pipeline's seed.
  return {
      "train": _join("decode", gray, f'exemplar({copies}, spec="{augment}")'),
      "eval": _join("decode",
                    f'exemplar({copies}, spec="{augment}", training=True)'),
      "batch": "",
  }


def supervised_specs(size=224):
  """Supervised baseline: random area crop and flip; central crop to eval."""
  return {
      "train": _join("decode", f"inception_crop({size})", "flip_lr",
                     _TO_RANGE),
      "eval": _join("decode", f"resize_small({_eval_resize(size)})",
                    f"central_crop({size})", _TO_RANGE),
      "batch": "",
  }


def patch_task_specs(task="jigsaw", crop=255, patch=64, resize=None,
                     gray_p=GRAY_P, gray_per_patch=False, num_perms=16,
                     shared_perms=None, permute_images=False,
                     pair_images=False):
  """Jigsaw or Relative Patch Location preprocessing.

  Args:
    task: "jigsaw" or "relative_patch_location".
    crop: side of the random square crop, split into 3x3 cells.
    patch: side of the patch cut at a random place in each cell.
    resize: side the image is first resized to; by default crop * 292/255
      (292 for 255).
    gray_p: grayscale probability (see the module docstring).
    gray_per_patch: convert each patch independently instead of the crop.
    num_perms: Jigsaw permutations per image (16 in the paper).
    shared_perms: if set, reproduce the authors' code instead: no per-image
      permutations; the "batch" spec draws this many (8 in the code) for the
      whole batch.
    permute_images: Jigsaw only. False: image [9, p, p, C] (batched
      [B, 9, p, p, C]) and label [num_perms] (batched [B, num_perms]); the
      model permutes the patch embeddings with
      `pretext_ops.permute_patches`. True: image [num_perms, 9, p, p, C], the
      permuted copies (16x the memory and backbone work).
    pair_images: Relative Patch Location only. False: image [9, p, p, C] and
      label [8] = 0..7; the model pairs embeddings with
      `pretext_ops.pair_patches`. True: image [8, 2, p, p, C], the pairs.

  Returns:
    dict with "train", "eval" and "batch" specs.

  Raises:
    ValueError: for an unknown task, a patch larger than its cell, or an
      option of the other patch task.
  """
  if task not in PATCH_TASKS:
    raise ValueError(f"task must be one of {PATCH_TASKS}, got {task!r}")
  cell = crop // GRID
  if not 0 < patch <= cell:
    raise ValueError(f"patch {patch} does not fit in the {cell}x{cell} cells "
                     f"of a {crop} crop split {GRID}x{GRID}")
  # Silently ignoring an option of the other task would hide a config error.
  if task != "jigsaw" and (shared_perms is not None or permute_images):
    raise ValueError(f"shared_perms and permute_images only apply to jigsaw, "
                     f"got task {task!r} with shared_perms={shared_perms!r}, "
                     f"permute_images={permute_images!r}")
  if task != "relative_patch_location" and pair_images:
    raise ValueError(f"pair_images only applies to relative_patch_location, "
                     f"got task {task!r}")
  resize = resize or int(round(crop * 292 / 255))
  patches = f"crop_patches({GRID}, {cell - patch})"
  gray = f"to_gray({_num(gray_p)})" if gray_p else ""
  permute = "" if permute_images else ", permute=False"
  if task == "relative_patch_location":
    pretext = ("relative_patch_location" if pair_images else
               "relative_patch_location(pairs=False)")
    batch = ""
  elif shared_perms is None:
    pretext, batch = f"jigsaw({num_perms}{permute})", ""
  else:
    pretext, batch = "", f"jigsaw_shared({shared_perms}{permute})"
  return {
      "train": _join("decode", f"resize({resize})", f"crop({crop})",
                     "" if gray_per_patch else gray, patches,
                     gray if gray_per_patch else "", "standardize", pretext),
      "eval": _join("decode", f"resize({resize})", f"central_crop({crop})",
                    patches, "standardize", pretext),
      "batch": batch,
  }


def linear_eval_specs(size=224, resize_small=None):
  """Downstream specs for whole-image representations (Rotation, Exemplar)."""
  resize_small = resize_small or _eval_resize(size)
  return {
      "train": _join("decode", f"resize_small({resize_small})", f"crop({size})",
                     _TO_RANGE),
      "eval": _join("decode", f"resize_small({resize_small})",
                    f"central_crop({size})", _TO_RANGE),
      "batch": "",
  }


def patch_representation_specs(size=255, patch=64):
  """Downstream specs for patch representations (Jigsaw, RelPatchLoc).

  The image is scaled to `size` x `size`; a 3*patch square (central for
  "eval", random for "train") is split into a 3x3 grid of patch x patch
  patches without gaps, each standardised: image [9, patch, patch, 3].
  """
  crop = GRID * patch
  if crop > size:
    raise ValueError(f"{GRID}x{GRID} patches of {patch} need {crop} pixels, "
                     f"more than the image side {size}")
  tail = (f"crop_patches({GRID})", "standardize")
  return {
      "train": _join("decode", f"resize({size})", f"crop({crop})", *tail),
      "eval": _join("decode", f"resize({size})", f"central_crop({crop})",
                    *tail),
      "batch": "",
  }


def task_specs(task, **kwargs):
  """Pretext-training specs of `task`; kwargs go to that task's function.

  rotation/supervised: size. exemplar: size, copies, gray_p. jigsaw and
  relative_patch_location: see `patch_task_specs`.
  """
  if task in PATCH_TASKS:
    return patch_task_specs(task, **kwargs)
  makers = {"rotation": rotation_specs, "exemplar": exemplar_specs,
            "supervised": supervised_specs}
  if task not in makers:
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
  return makers[task](**kwargs)


def evaluation_specs(task, **kwargs):
  """Downstream (representation extraction) specs for a model of `task`.

  kwargs: size (and resize_small) for whole-image tasks; size and patch for
  patch tasks.
  """
  if task in PATCH_TASKS:
    return patch_representation_specs(**kwargs)
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
  return linear_eval_specs(**kwargs)


def check(specs):
  """Parses every spec of a specs dict (raises ValueError if one is bad)."""
  for key, spec in specs.items():
    _get_spec(spec, training=(key == "train"))


TASK_SPECS = {task: task_specs(task) for task in TASKS}
LINEAR_EVAL = linear_eval_specs()
PATCH_REPRESENTATION_EVAL = patch_representation_specs()
EVAL_SPECS = {task: evaluation_specs(task) for task in TASKS}
