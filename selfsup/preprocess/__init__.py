"""Preprocessing: small registered ops composed from a spec string.

    fn = selfsup.preprocess.get("decode|resize(292)|crop(255)|to_gray(0.33)"
                                "|crop_patches(3, 21)|standardize|jigsaw(16)",
                                training=True)
    dataset = dataset.map(fn)

Features are dicts: `image` (uint8 [H, W, 3], or a scalar string of encoded
bytes that only `decode` accepts), optionally `label` (int64 class) and
`_seed` (int64 [2], see `randomness`). Every op returns a new dict. Images
stay uint8 in [0, 255] until `value_range` or `standardize` make them
float32. Pretext ops (`rotate`, `jigsaw`, `relative_patch_location`,
`exemplar`) emit int32 pretext labels and move the class label to
`class_label`. `rotate` and `exemplar` add a leading copies axis; `jigsaw` and
`relative_patch_location` either materialise their examples (a copies axis)
or, in the efficient format the ready-made specs use, keep the 9 patches and
leave the permuting/pairing of their embeddings to the model
(`permute_patches`, `pair_patches`). `specs` has the paper's pipelines.
`augment_ops` has the augmentations of SimCLR, BYOL and Barlow Twins
(`random_resized_crop`, `color_jitter`, `random_grayscale`, `gaussian_blur`,
`solarize`) and `two_views`, which makes their pair of views.

Random ops use stateless randomness: with a per-example `_seed` in the
features the output is a deterministic function of the input; without one
the seeds come from `tf.random.uniform`.
"""
from selfsup.preprocess import augment_ops  # noqa: F401  (registers ops)
from selfsup.preprocess import color_ops  # noqa: F401  (registers ops)
from selfsup.preprocess import image_ops  # noqa: F401  (registers ops)
from selfsup.preprocess import pretext_ops  # noqa: F401  (registers ops)
from selfsup.preprocess import randomness
from selfsup.preprocess import specs
from selfsup.preprocess.permutations import load_permutations
from selfsup.preprocess.pretext_ops import CLASS_LABEL_KEY
from selfsup.preprocess.pretext_ops import CENTRE
from selfsup.preprocess.pretext_ops import NEIGHBOURS
from selfsup.preprocess.pretext_ops import pair_patches
from selfsup.preprocess.pretext_ops import permute_patches
from selfsup.preprocess.pretext_ops import RELATIVE_POSITIONS
from selfsup.preprocess.randomness import SEED_KEY
from selfsup.preprocess.registry import get
from selfsup.preprocess.registry import list_ops
from selfsup.preprocess.registry import OPS
from selfsup.preprocess.registry import register

__all__ = [
    "CENTRE", "CLASS_LABEL_KEY", "NEIGHBOURS", "OPS", "RELATIVE_POSITIONS",
    "SEED_KEY", "get", "list_ops", "load_permutations", "pair_patches",
    "permute_patches", "randomness", "register", "specs",
]
