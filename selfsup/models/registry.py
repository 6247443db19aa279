"""Registry of backbones by name: `get(name, **kwargs)` and `list()`.

Each registered name is a thin builder that fixes the architecture arguments
(depth, version, last_relu) and forwards the rest (width, patch,
representation_size, num_classes, weight_decay, input_shape, ...).
"""
import inspect

_REGISTRY = {}


def register(name, cls, **fixed):
  """Registers `name` as `cls(**fixed, **kwargs)`. A name registers once."""
  if name in _REGISTRY:
    raise ValueError(f"Backbone {name!r} is already registered.")
  _REGISTRY[name] = (cls, dict(fixed))


def list():  # pylint: disable=redefined-builtin
  """Names of every registered backbone, sorted."""
  return sorted(_REGISTRY)


def get(name, **kwargs):
  """Builds the backbone registered as `name`.

  Raises:
    ValueError: unknown name, an argument the name fixes, or an argument the
      architecture does not take; the message lists the choices.
  """
  if name not in _REGISTRY:
    raise ValueError(f"Unknown backbone {name!r}: expected one of {list()}.")
  cls, fixed = _REGISTRY[name]
  accepted = [p for p in inspect.signature(cls.__init__).parameters
              if p not in ("self", "kwargs") and p not in fixed]
  for key in kwargs:
    if key in fixed:
      raise ValueError(f"Backbone {name!r} fixes {key}={fixed[key]!r}; do not "
                       f"pass {key}={kwargs[key]!r}. Accepted: {accepted}.")
    if key not in accepted:
      raise ValueError(f"Backbone {name!r} takes no argument {key!r}. "
                       f"Accepted: {accepted}.")
  return cls(**fixed, **kwargs)
