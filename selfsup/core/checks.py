"""Checks of configuration values, made before any work starts.

Each check raises `ConfigError` (a ValueError) with one line naming the
binding, the value and what was expected, e.g.

    TrainConfig.batch_size=0 is invalid: expected an integer >= 1.
"""
import math
import numbers

from selfsup.core.errors import SelfsupError


class ConfigError(SelfsupError, ValueError):
  """A configuration value of the wrong type, sign or range."""


def _fail(name, value, expected):
  raise ConfigError(f"{name}={value!r} is invalid: expected {expected}.")


def _bounds(minimum, maximum, below):
  parts = []
  if minimum is not None:
    parts.append(f">= {minimum}")
  if maximum is not None:
    parts.append(f"{'<' if below else '<='} {maximum}")
  return " and ".join(parts)


def integer(name, value, minimum=None, maximum=None, optional=False):
  """An int (not a bool, not 64.5) within [minimum, maximum]."""
  if value is None and optional:
    return None
  what = " ".join(filter(None, ["an integer", _bounds(minimum, maximum,
                                                      False)]))
  if optional:
    what += " or None"
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(name, value, what)
  if (minimum is not None and value < minimum) or (
      maximum is not None and value > maximum):
    _fail(name, value, what)
  return int(value)


def number(name, value, minimum=None, maximum=None, optional=False,
           below=False):
  """A finite real number within [minimum, maximum] (or [min, max) if
  `below`)."""
  if value is None and optional:
    return None
  what = " ".join(filter(None, ["a finite number",
                                _bounds(minimum, maximum, below)]))
  if optional:
    what += " or None"
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(name, value, what)
  if not math.isfinite(value):
    _fail(name, value, what)
  if minimum is not None and value < minimum:
    _fail(name, value, what)
  if maximum is not None and (value >= maximum if below else value > maximum):
    _fail(name, value, what)
  return value


def positive(name, value, optional=False):
  """A finite number > 0."""
  if value is None and optional:
    return None
  checked = number(name, value, optional=optional)
  if checked <= 0:
    _fail(name, value, "a finite number > 0" + (" or None" if optional
                                                else ""))
  return checked


def boolean(name, value):
  if not isinstance(value, bool):
    _fail(name, value, "True or False")
  return value


def string(name, value, optional=False, choices=None):
  if value is None and optional:
    return None
  if choices is not None and value not in choices:
    _fail(name, value, f"one of {tuple(choices)}")
  if not isinstance(value, str) or not value:
    _fail(name, value, "a non-empty string" + (" or None" if optional
                                               else ""))
  return value


def sequence(name, value, item, allow_empty=True):
  """A list or tuple whose items pass `item(f"{name}[i]", x)`."""
  if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
    _fail(name, value, "a list or tuple")
  if not value and not allow_empty:
    _fail(name, value, "a non-empty list or tuple")
  return tuple(item(f"{name}[{i}]", x) for i, x in enumerate(value))


def mapping(name, value, optional=True):
  if value is None and optional:
    return None
  if not isinstance(value, dict):
    _fail(name, value, "a dict" + (" or None" if optional else ""))
  return value
