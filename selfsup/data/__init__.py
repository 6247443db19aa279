"""Named image sources, their splits, low-data subsets and the input pipeline.

    source = selfsup.data.get("imagenet2012", data_dir="/data/tfds")
    source = selfsup.data.get("tfds", dataset="cifar10", data_dir="/data/tfds")
    source = selfsup.data.get("fashion_mnist", image_size=32)
    ds = selfsup.data.make_pipeline(source, "train", "resize(256)|rotate",
                                    batch_size=1024, training=True, seed=0)

Sources: see `names()` (`SOURCES` is their registry); each yields
unbatched `{"image": uint8 [H, W, 3] RGB, "label": int64}`. docs/data.md
describes the splits, the layouts of the folder sources, the bad-file policy
and sharding.
"""
from selfsup.core.registry import Registry
from selfsup.data import digits as _digits
from selfsup.data import fashion_mnist as _fashion_mnist
from selfsup.data import folder as _folder
from selfsup.data import tfds_source as _tfds_source
from selfsup.data.base import IndexedSource
from selfsup.data.base import Source
from selfsup.data.decode import BadImagesError
from selfsup.data.decode import DataNotFoundError
from selfsup.data.decode import decode_rgb
from selfsup.data.fashion_mnist import IDXError
from selfsup.data.pipeline import make_pipeline
from selfsup.data.subset import subset
from selfsup.data.subset import Subset

# The named sources: `SOURCES.names()`, `SOURCES.lookup(name)`.
SOURCES = Registry("data source")
register = SOURCES.register
names = SOURCES.names


def get(name, *, fraction=None, subset_seed=0, **kwargs):
  """Makes the source `name`.

  Args:
    name: one of `names()`.
    fraction: if given, cut the training splits to this fraction of every
      class (see `subset`).
    subset_seed: which subset, when `fraction` is given.
    **kwargs: the source's own arguments (`data_dir` for TFDS sources and
      fashion_mnist, `dataset` for `tfds`, `root` for folders, `image_size`
      for digits, ...).

  Returns:
    A `Source`.

  Raises:
    ValueError: for an unknown name.
    DataNotFoundError: when the data is not where it should be.
  """
  source = SOURCES.get(name, **kwargs)
  if fraction is not None:
    source = subset(source, fraction, seed=subset_seed)
  return source


register("imagenet2012", _tfds_source.imagenet2012)
register("places365_small", _tfds_source.places365_small)
register("places205", _folder.places205)
register("image_folder", _folder.ImageFolder)
register("digits", _digits.Digits)
register("fashion_mnist", _fashion_mnist.FashionMNIST)
register("tfds", _tfds_source.tfds_dataset)

__all__ = [
    "BadImagesError", "DataNotFoundError", "IDXError", "IndexedSource",
    "SOURCES", "Source", "Subset", "decode_rgb", "get", "make_pipeline",
    "names", "register", "subset",
]
