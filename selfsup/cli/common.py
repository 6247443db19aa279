"""Flag handling shared by the command-line entry points."""
import os
import sys

import gin
from absl import flags

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin")


def define_gin_flags():
  flags.DEFINE_multi_string("gin_file", [], "gin files, applied in order.")
  flags.DEFINE_multi_string("gin_param", [], "gin bindings, applied last.")


def parse_gin(gin_files, gin_params):
  """Parses gin files and bindings; unknown or bad bindings fail here.

  A relative gin file is looked up in the working directory, then in the
  repository's gin/ folder (so `--gin_file=gin/jigsaw.gin` and
  `--gin_file=jigsaw.gin` both work from anywhere in a checkout).
  """
  gin.add_config_file_search_path(os.getcwd())
  gin.add_config_file_search_path(os.path.dirname(GIN_DIR))
  gin.add_config_file_search_path(GIN_DIR)
  try:
    gin.parse_config_files_and_bindings(
        [_resolve(p) for p in gin_files], gin_params)
  except (ValueError, KeyError, IOError, NameError) as err:
    sys.exit(f"error: bad gin configuration: {err}")


def _resolve(path):
  if os.path.exists(path) or os.path.isabs(path):
    return path
  for base in (os.path.dirname(GIN_DIR), GIN_DIR):
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return candidate
  return path
