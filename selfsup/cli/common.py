"""Flag handling and error reporting shared by the command-line entry points.

Known failures (bad settings, missing or bad data, a workdir that cannot be
written, a full disk, a diverged run) end a command with one line,
`error: <cause, with the path>`, and exit status 1; `--verbosity=1` shows
the traceback instead.

`--help` prints the command's usage, its own flags with their defaults and
choices, and the packaged gin configs (`run`). The console shows the
progress line, warnings, errors and results; TensorFlow's C++ output and
absl's INFO lines go to a log file in the workdir (`quiet_console`,
`log_to_workdir`); any `--verbosity` brings them back to the console.
"""
import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile
import textwrap
import tokenize

import gin
from absl import app, flags, logging

from selfsup.core import errors, gin_files, log

GIN_DIR = gin_files.gin_dir() or os.path.join(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gin")
TRACEBACK_HINT = "(--verbosity=1 shows the traceback)"


class GinError(errors.SelfsupError, ValueError):
  """A gin file or binding that does not parse or bind."""


def define_gin_flags():
  flags.DEFINE_multi_string(
      "gin_file", [], "gin files, applied in order: a path, or the name of a "
      "packaged config (e.g. rotation, arch/revnet50; listed below).")
  flags.DEFINE_multi_string("gin_param", [], "gin bindings, applied last, "
                            "e.g. 'TrainConfig.train_steps=100'.")


def verbose():
  """Whether --verbosity asks for tracebacks (read before set_logging)."""
  return flags.FLAGS.verbosity >= 1


def set_logging():
  """INFO logging, or more if --verbosity asks for it."""
  logging.set_verbosity(max(logging.INFO, flags.FLAGS.verbosity))


def reject_arguments(argv):
  """Exits with one error line if the command got positional arguments
  (every selfsup command takes flags only)."""
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")


def parse_gin(config_files, gin_params):
  """Parses gin files and bindings; unknown or bad bindings fail here.

  A relative gin file is looked up in the working directory, then among the
  packaged configs (`gin_files`: the installed package's, or the checkout's
  gin/), so `--gin_file=gin/jigsaw.gin`, `--gin_file=jigsaw.gin` and
  `--gin_file=jigsaw` work from any directory. Raises GinError with one line
  naming the file and line of a syntax error, or the file that is nowhere.
  """
  gin.add_config_file_search_path(os.getcwd())
  gin.add_config_file_search_path(os.path.dirname(GIN_DIR))
  gin.add_config_file_search_path(GIN_DIR)
  files = [_resolve(p) for p in config_files]
  gin_files.make_includable()
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
  found = gin_files.resolve(path)
  if found is None:
    names = ", ".join(n[:-len(gin_files.SUFFIX)] for n in gin_files.list_files())
    raise GinError(f"--gin_file={path}: no such file in {os.getcwd()}, nor a "
                   f"packaged config (expected a path or one of: {names}).")
  return found


# -- --help -------------------------------------------------------------------


def _flag_line(flag):
  """`--name=DEFAULT` and its help, choices and repeatability, for one flag."""
  multi = isinstance(flag.default, (list, tuple))
  default = ",".join(map(str, flag.default)) if multi else flag.default
  shown = f"--{flag.name}" + (f"={default}" if default not in (None, "")
                              else "")
  # absl decorates the help of enum and multi flags: said below instead.
  text = re.sub(r"^<[^>]*>:\s*", "", flag.help or "")
  text = re.sub(r";\s*repeat this option to specify a list of values$", "",
                text)
  choices = getattr(flag.parser, "enum_values", None)
  if choices:
    text += f" One of: {', '.join(choices)}."
  if flag.default is None and "default" not in text:
    text += " (no default)"
  if multi:
    text += " Repeatable."
  return _entry(shown, text)


def _entry(shown, text):
  body = textwrap.fill(text, width=78, initial_indent="      ",
                       subsequent_indent="      ")
  return f"  {shown}\n{body}"


def help_text(doc, modules, gin_help=True, log_file=True):
  """Usage (`doc`), the flags defined in `modules`, --verbosity, and the
  packaged gin configs (`gin_help`). `log_file`: the command keeps INFO
  lines in a log file (`quiet_console`)."""
  lines = [textwrap.dedent(doc or "").strip(), "", "Flags:"]
  seen = set()
  for module in modules:
    for flag in flags.FLAGS.get_flags_for_module(module):
      if flag.name not in seen:
        seen.add(flag.name)
        lines.append(_flag_line(flag))
  lines.append(_entry(
      "--verbosity=-1|0|1",
      "Console detail. Without it the console shows progress, warnings, "
      "errors and results, and the rest (TensorFlow's C++ output, absl's "
      "INFO lines) goes to the command's log file in the workdir; "
      "--verbosity=0 shows everything here, 1 adds tracebacks."
      if log_file else "Logging detail; 1 shows tracebacks."))
  lines.append(_entry("--helpfull", "Every flag, absl's included."))
  if gin_help:
    lines += ["", gin_files.describe()]
  return "\n".join(lines)


def run(main, doc, modules, gin_help=True, log_file=True):
  """`app.run(main)`, with `--help`/`-h`/`--helpshort` answered by
  `help_text` on stdout and exit status 0."""
  if any(a in ("--help", "-h", "-?", "--helpshort") for a in sys.argv[1:]):
    print(help_text(doc, modules, gin_help, log_file))
    sys.exit(0)
  app.run(main)


# -- Console and log file ------------------------------------------------------

_STATE = {}


class _ConsoleFilter(std_logging.Filter):
  """Warnings and errors, and the progress logger's lines."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or record.name == log.PROGRESS
            or record.name.startswith(log.PROGRESS + "."))


class _ConsoleFormatter(std_logging.Formatter):

  def format(self, record):
    message = record.getMessage()
    if record.levelno >= std_logging.ERROR:
      return f"error: {message}"
    if record.levelno >= std_logging.WARNING:
      return f"warning: {message}"
    return message


def quiet_console():
  """From now on the console (the original stderr) shows only errors,
  warnings, progress and results; everything else written to file
  descriptor 2 (TensorFlow's C++ logging) and absl's INFO lines wait in a
  temporary file until `log_to_workdir` names the log. Call it right after
  the flags are parsed and before TensorFlow is imported. Any --verbosity
  keeps everything on the console, as before."""
  if flags.FLAGS["verbosity"].present or "fd" in _STATE:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8",
                      errors="replace")
  held = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
  os.dup2(held.fileno(), 2)
  fd2 = open(2, "w", buffering=1, closefd=False, encoding="utf-8",  # pylint: disable=consider-using-with
             errors="replace")
  _STATE.update(fd=fd2, held=held, console=console)
  sys.stderr = console  # error: lines, tracebacks, Python warnings
  logging.get_absl_handler().python_handler.stream = fd2
  handler = std_logging.StreamHandler(console)
  handler.addFilter(_ConsoleFilter())
  handler.setFormatter(_ConsoleFormatter())
  std_logging.getLogger().addHandler(handler)


def log_to_workdir(workdir, name):
  """Sends what `quiet_console` holds back, and all that follows, to
  `workdir/<name>.log` (appended); returns its path, or None when the
  console keeps everything or the file cannot be written (then it stays
  held, and is lost at exit)."""
  if "fd" not in _STATE:
    return None
  path = os.path.join(workdir, f"{name}.log")
  try:
    log = open(path, "ab")  # pylint: disable=consider-using-with
  except OSError:
    return None
  _STATE["fd"].flush()
  held = _STATE.pop("held", None)
  if held is not None:
    held.seek(0)
    log.write(held.read())
    log.flush()
    held.close()
  os.dup2(log.fileno(), 2)
  log.close()
  _STATE["log"] = path
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


# TensorFlow's I/O failures: a path that is missing, unreadable, full or
# damaged. Its other errors (shapes, dtypes) are bugs and keep their traceback.
def _tf_io_errors():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {tf.errors.PermissionDeniedError: "permission denied",
          tf.errors.ResourceExhaustedError: "out of space or memory",
          tf.errors.FailedPreconditionError: "cannot use the path",
          tf.errors.NotFoundError: "not found",
          tf.errors.DataLossError: "damaged file"}


def describe(err):
  """One line: the cause, with the path where the exception names one."""
  text = first_line(err)
  if "tensorflow" in sys.modules:
    kind = next((v for k, v in _tf_io_errors().items()
                 if isinstance(err, k)), None)
    if kind:
      return f"{kind}: {text}"
  if isinstance(err, OSError) and err.errno is not None:
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror}{where}"
  label = getattr(err, "label", None)  # e.g. "training diverged"
  return f"{label}: {text}" if label else text


def known_errors():
  """The exception types reported as one `error:` line: the library's own
  (`selfsup.core.errors.SelfsupError`: settings, data, workdirs, a diverged
  run), the operating system's and TensorFlow's I/O failures. Anything else
  is a bug and keeps its traceback."""
  kinds = (errors.SelfsupError, OSError)
  if "tensorflow" in sys.modules:
    kinds += tuple(_tf_io_errors())
  return kinds


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
