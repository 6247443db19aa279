"""Building blocks of preprocessing specs for the paper's settings, any size.

A specs dict holds three spec strings:
  "train": per example, parsed with `get(spec, training=True)`;
  "eval":  per example, parsed with `get(spec, training=False)`;
  "batch": applied after batching (with the same `training` flag).

This module knows ops, not tasks: each task (`selfsup.tasks`) builds its
own pretext specs from these blocks (`Task.pretext_specs`) and says which
downstream specs its representation needs (`Task.evaluation_specs`).

* `inception_train`: the Inception augmentation of Szegedy et al. (random
  area/aspect crop, flip, slim's brightness and saturation jitter), values
  in [-1, 1]; `central_eval`: smaller side to 256/224 of the crop, central
  crop, [-1, 1].
* `patch_specs`: resize to 292x292, random 255x255 crop, grayscale with
  probability p, 3x3 cells of 85x85 with a random 64x64 patch in each, each
  patch standardised, then a pretext op on the 9 patches. p defaults to 1/3
  as in the supplementary; the main text says 2/3 and the authors' configs
  used 0.66. The supplementary converts the crop before cutting patches (as
  did the authors' code); `gray_per_patch=True` converts each patch on its
  own, as the main text's wording suggests.
* `linear_eval_specs`: downstream specs of whole-image representations:
  smaller side to 256, 224 crop (random for training, central for
  evaluation), values in [-1, 1].
* `patch_representation_specs`: downstream specs of patch representations:
  scale to 255x255, central 192x192, 3x3 grid of 64x64 patches, each
  standardised; the representation is the average over the 9 patches. For
  L-BFGS on precomputed features use "eval" for every split; "train" adds a
  random 192 crop for SGD training.
"""
from selfsup.preprocess.registry import get as _get_spec

GRID = 3
GRAY_P = 1 / 3  # Supplementary; main text 2/3; authors' configs 0.66.
_TO_RANGE = "value_range(-1, 1)"


def num(value):
  """A short literal for a float in a spec (1/3 -> 0.333333)."""
  return repr(round(float(value), 6))


def _eval_resize(size):
  # 256 for 224, the usual ratio between the resize and the central crop.
  return int(round(size * 256 / 224))


def join(*ops):
  """One spec string of the non-empty `ops`."""
  return "|".join(op for op in ops if op)


def inception_train(size, *, color=True):
  """The Inception augmentation at `size` (with slim's colour jitter unless
  `color=False`), values in [-1, 1]; no decode."""
  return join(f"inception_crop({size})", "flip_lr",
              "color_distort" if color else "", _TO_RANGE)


def central_eval(size):
  """Decode, smaller side to 256/224 of `size`, central crop, [-1, 1]."""
  return join("decode", f"resize_small({_eval_resize(size)})",
              f"central_crop({size})", _TO_RANGE)


def patch_specs(pretext, *, batch="", crop=255, patch=64, resize=None,
                gray_p=GRAY_P, gray_per_patch=False):
  """Specs that cut a 3x3 grid of patches and end with the op `pretext`.

  Args:
    pretext: the op string applied to the 9 standardised patches (train and
      eval), the task's pretext op; may be empty.
    batch: the "batch" spec (e.g. an op drawing per-batch permutations).
    crop: side of the random square crop, split into 3x3 cells.
    patch: side of the patch cut at a random place in each cell.
    resize: side the image is first resized to; by default crop * 292/255
      (292 for 255).
    gray_p: grayscale probability (see the module docstring).
    gray_per_patch: convert each patch independently instead of the crop.

  Raises:
    ValueError: a patch larger than its cell.
  """
  cell = crop // GRID
  if not 0 < patch <= cell:
    raise ValueError(f"patch {patch} does not fit in the {cell}x{cell} cells "
                     f"of a {crop} crop split {GRID}x{GRID}")
  resize = resize or int(round(crop * 292 / 255))
  patches = f"crop_patches({GRID}, {cell - patch})"
  gray = f"to_gray({num(gray_p)})" if gray_p else ""
  return {
      "train": join("decode", f"resize({resize})", f"crop({crop})",
                    "" if gray_per_patch else gray, patches,
                    gray if gray_per_patch else "", "standardize", pretext),
      "eval": join("decode", f"resize({resize})", f"central_crop({crop})",
                   patches, "standardize", pretext),
      "batch": batch,
  }


def linear_eval_specs(size=224, resize_small=None):
  """Downstream specs for whole-image representations."""
  resize_small = resize_small or _eval_resize(size)
  return {
      "train": join("decode", f"resize_small({resize_small})", f"crop({size})",
                     _TO_RANGE),
      "eval": join("decode", f"resize_small({resize_small})",
                    f"central_crop({size})", _TO_RANGE),
      "batch": "",
  }


def patch_representation_specs(size=255, patch=64):
  """Downstream specs for patch representations (a 3x3 grid of patches).

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
      "train": join("decode", f"resize({size})", f"crop({crop})", *tail),
      "eval": join("decode", f"resize({size})", f"central_crop({crop})",
                    *tail),
      "batch": "",
  }


SIMCLR_JITTER = (0.8, 0.8, 0.8, 0.2)  # x strength s (SimCLR appendix A)
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # BYOL table 6, Barlow Twins section 4


def view(size, *, jitter=SIMCLR_JITTER, strength=1.0, jitter_p=0.8,
         gray_p=0.2, blur_p=0.5, solarize_p=0.0, area_min=0.08):
  """One view of the contrastive methods, values in [-1, 1]; no decode.

  Random resized crop (area in [area_min, 1]), flip, colour jitter
  (brightness, contrast, saturation, hue amounts `jitter`, times `strength`)
  with probability `jitter_p`, grayscale with `gray_p`, Gaussian blur with
  `blur_p`, solarization with `solarize_p`. The defaults are SimCLR's.
  """
  b, c, s, h = jitter
  return join(
      f"random_resized_crop({size}, area=({num(area_min)}, 1.0))", "flip_lr",
      f"color_jitter({num(strength)}, p={num(jitter_p)}, brightness={num(b)}"
      f", contrast={num(c)}, saturation={num(s)}, hue={num(h)})"
      if jitter_p else "",
      f"random_grayscale({num(gray_p)})" if gray_p else "",
      f"gaussian_blur({num(blur_p)})" if blur_p else "",
      f"solarize({num(solarize_p)})" if solarize_p else "", _TO_RANGE)


def two_view_specs(first, second=None):
  """Specs of a two-view method from its view specs (`view`): image
  [2, H, W, 3].

  Evaluation uses the training augmentations too: the pretext metrics (the
  NT-Xent top-1, the losses) mean something only on two different views,
  and two identical central crops make SimCLR's top-1 1.0 even at random
  initialisation. The evaluation pipelines are seeded (per example, by
  position), so every evaluation sees the same pairs of views; without a
  `_seed` the views are drawn from TensorFlow's global random state.
  """
  second = second or first
  pair = f'two_views("{first}", "{second}"'
  # The evaluation spec says training=True itself: it is parsed with
  # training=False, which would make both views the same central crop.
  return {"train": join("decode", pair + ")"),
          "eval": join("decode", pair + ", training=True)"), "batch": ""}


def check(specs):
  """Parses every spec of a specs dict (raises ValueError if one is bad)."""
  for key, spec in specs.items():
    _get_spec(spec, training=(key == "train"))


LINEAR_EVAL = linear_eval_specs()
PATCH_REPRESENTATION_EVAL = patch_representation_specs()
