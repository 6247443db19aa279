"""Flag handling and error reporting shared by the command-line entry points.

Known failures (bad settings, missing or bad data, a workdir that cannot be
written, a full disk, a diverged run) end a command with one line,
`error: <cause, with the path>`, and exit status 1; `--verbosity=1` shows
the traceback instead.
"""
import contextlib
import os
import re
import sys
import tokenize

import gin
from absl import flags, logging

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin")
TRACEBACK_HINT = "(--verbosity=1 shows the traceback)"


class GinError(ValueError):
  """A gin file or binding that does not parse or bind."""


def define_gin_flags():
  flags.DEFINE_multi_string("gin_file", [], "gin files, applied in order.")
  flags.DEFINE_multi_string("gin_param", [], "gin bindings, applied last.")


def verbose():
  """Whether --verbosity asks for tracebacks (read before set_logging)."""
  return flags.FLAGS.verbosity >= 1


def set_logging():
  """INFO logging, or more if --verbosity asks for it."""
  logging.set_verbosity(max(logging.INFO, flags.FLAGS.verbosity))


def parse_gin(gin_files, gin_params):
  """Parses gin files and bindings; unknown or bad bindings fail here.

  A relative gin file is looked up in the working directory, then in the
  repository's gin/ folder (so `--gin_file=gin/jigsaw.gin` and
  `--gin_file=jigsaw.gin` both work from anywhere in a checkout). Raises
  GinError with one line naming the file and line of a syntax error.
  """
  gin.add_config_file_search_path(os.getcwd())
  gin.add_config_file_search_path(os.path.dirname(GIN_DIR))
  gin.add_config_file_search_path(GIN_DIR)
  files = [_resolve(p) for p in gin_files]
  try:
    gin.parse_config_files_and_bindings(files, gin_params)
  except SyntaxError as err:
    where = (f"{err.filename}, line {err.lineno}" if err.filename
             else "a --gin_param binding")
    detail = first_line(err.msg or str(err))
    raise GinError(f"gin syntax error in {where}: {detail}") from err
  except tokenize.TokenError as err:
    raise GinError(f"gin syntax error in the --gin_param bindings "
                   f"{list(gin_params)}: {err.args[0]}") from err
  except (ValueError, KeyError, IOError, NameError) as err:
    raise GinError(f"bad gin configuration: {first_line(err)}") from err


def _resolve(path):
  if os.path.exists(path) or os.path.isabs(path):
    return path
  for base in (os.path.dirname(GIN_DIR), GIN_DIR):
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return candidate
  return path


_GIN_CONTEXT = re.compile(r"\n\s*In call to configurable.*", re.DOTALL)
_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_TF_OP = re.compile(r"\s*\[Op:\w+\]\s*$")


def _message(err):
  """An exception's message without gin's context or TF's op decoration."""
  text = str(err)
  if hasattr(err, "message") and isinstance(getattr(err, "message"), str):
    text = err.message  # tf.errors.OpError
  text = _GIN_CONTEXT.sub("", text)
  return _TF_OP.sub("", _TF_NODE.sub("", text)).strip()


def first_line(err):
  """The first line of an exception's message (see `_message`)."""
  text = _message(err)
  return text.splitlines()[0] if text else type(err).__name__


def details(err):
  """The lines of a message after its first (instructions, lists)."""
  return "\n".join(_message(err).splitlines()[1:]).strip()


def describe(err):
  """One line: the cause, with the path where the exception names one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.train.trainer import TrainingDivergedError  # pylint: disable=g-import-not-at-top
  text = first_line(err)
  if isinstance(err, tf.errors.OpError):
    kinds = {tf.errors.PermissionDeniedError: "permission denied",
             tf.errors.ResourceExhaustedError: "out of space or memory",
             tf.errors.FailedPreconditionError: "cannot use the path",
             tf.errors.NotFoundError: "not found"}
    kind = next((v for k, v in kinds.items() if isinstance(err, k)),
                type(err).__name__)
    return f"{kind}: {text}"
  if isinstance(err, OSError) and err.errno is not None:
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror}{where}"
  if isinstance(err, TrainingDivergedError):
    return f"training diverged: {text}"
  return text


def known_errors():
  """The exception types reported as one `error:` line."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from selfsup.train.trainer import TrainingDivergedError  # pylint: disable=g-import-not-at-top
  return (ValueError, TypeError, OSError, tf.errors.OpError,
          TrainingDivergedError)


@contextlib.contextmanager
def reporting(show_traceback=False, hint=None):
  """Turns the known failures raised inside into `error: ...` and exit 1.

  Args:
    show_traceback: re-raise instead (--verbosity=1).
    hint: a callable err -> text to print after the error line, or None.
  """
  try:
    yield
  except known_errors() as err:  # pylint: disable=catching-non-exception
    if show_traceback:
      raise
    message = f"error: {describe(err)}"
    if not isinstance(err, GinError):
      message += f" {TRACEBACK_HINT}"
    extra = "\n\n".join(filter(None, [details(err),
                                       hint(err) if hint else None]))
    sys.exit(message + (f"\n{extra}" if extra else ""))
