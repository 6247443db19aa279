"""The library's own error types.

A command-line entry point prints an error of these types (and OSError) as
one `error: ...` line; any other exception is a bug and keeps its traceback.
Raise a subclass of `SelfsupError` for a failure a user can fix (bad
settings, missing or damaged data, a workdir in the wrong state), with a
message that names the input and what was expected.
"""


class SelfsupError(Exception):
  """A failure the user can act on; its message is the whole story.

  A subclass may set `label`, a few words the command prints before the
  message (e.g. "training diverged").
  """
  label = None


class DataError(SelfsupError, ValueError):
  """Data that is missing, damaged or not of the expected form."""


class WorkdirError(SelfsupError, ValueError):
  """A workdir whose contents are missing, damaged or of another run."""


class MissingDependencyError(SelfsupError, ImportError):
  """An optional package (an extra of setup.py) that is not installed."""


class WorkdirLockedError(WorkdirError):
  """Another live process holds the workdir (its pid, host and command are in
  the message)."""


class NotFiniteError(SelfsupError, ArithmeticError):
  """A fit or a computation whose result is NaN or infinite: no score is
  given for it."""


class PresetError(SelfsupError, ValueError):
  """A pretrained preset that is unknown, not downloaded (offline), or whose
  download is truncated, damaged or not the one recorded."""
