"""One registry type for every kind of named builder in selfsup.

Backbones (`selfsup.models.BACKBONES`), data sources (`selfsup.data.SOURCES`),
preprocessing ops (`selfsup.preprocess.OPS`) and tasks (`selfsup.tasks.TASKS`)
are each a `Registry`:

    BACKBONES = Registry("backbone")
    BACKBONES.register("resnet50_v1", ResNet, depth=50, version=1)
    @SOURCES.register("digits")           # or as a decorator
    def digits(**kwargs): ...
    BACKBONES.get("resnet50_v1", width=4)  # builds; errors list the choices
    BACKBONES.names()                      # sorted names

`register(name, builder, **fixed)` binds `fixed` keyword arguments that a
caller may not override (the architecture arguments of a named backbone);
`lookup(name)` returns the builder and its fixed arguments without calling
it, for registries whose callers build in their own way (preprocessing ops).
"""
import difflib
import inspect
import os
from typing import Any, Callable, Dict, Iterator, List, Tuple
from selfsup.core.checks import ConfigError


class Registry:
  """Named builders of one kind; see the module docstring."""

  def __init__(self, kind: str, *, check_arguments: bool = False):
    """`kind` names the entries in error messages ("backbone", "task").

    With `check_arguments`, `get` refuses keyword arguments the builder does
    not name in its signature (even if it takes **kwargs) with a message
    listing those it accepts, instead of letting the builder raise a bare
    TypeError. Arguments the name fixes are refused either way.
    """
    self.kind = kind
    self._check_arguments = check_arguments
    self._entries: Dict[str, Tuple[Callable, Dict[str, Any]]] = {}

  def __repr__(self):
    return f"Registry({self.kind!r}: {', '.join(self.names())})"

  def register(self, name: str, builder: Callable = None, **fixed):
    """Registers `builder` (with `fixed` kwargs) as `name`.

    Without `builder`, returns a decorator that registers the decorated
    function or class and returns it unchanged.

    Raises:
      ValueError: `name` is not a string, is already registered, or
        `builder` is not callable.
    """
    if not isinstance(name, str) or not name:
      raise ConfigError(f"A {self.kind} name must be a non-empty string, got "
                        f"{name!r}.")

    def add(fn):
      if not callable(fn):
        raise ConfigError(f"{self.kind.capitalize()} {name!r}: the builder "
                          f"must be callable (a class or function), got "
                          f"{fn!r}.")
      if name in self._entries:
        old = self._entries[name][0]
        raise ConfigError(
            f"{self.kind.capitalize()} {name!r} is already registered (by "
            f"{getattr(old, '__module__', '?')}."
            f"{getattr(old, '__qualname__', old)}).")
      self._entries[name] = (fn, dict(fixed))
      return fn

    return add if builder is None else add(builder)

  def names(self) -> List[str]:
    """The registered names, sorted."""
    return sorted(self._entries)

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._entries)

  def suggestions(self, name) -> List[str]:
    """Registered names close to `name`, best first.

    Names that start with `name` come first ("resnet50" -> "resnet50_v1",
    "resnet50_v2"): a user who types the start of a name means one of its
    variants. Otherwise spelling-close names, the longer the start they
    share the better ("resnet50x" prefers "resnet50_v1" over "revnet50",
    which is as close letter by letter).
    """
    if not isinstance(name, str) or not name:
      return []
    starting = [n for n in self.names() if n.startswith(name)]
    if starting:
      return starting
    close = difflib.get_close_matches(name, self.names(), n=5)
    order = {n: i for i, n in enumerate(close)}
    return sorted(close, key=lambda n: (-len(os.path.commonprefix([name, n])),
                                        order[n]))

  def unknown(self, name) -> ValueError:
    """The error for an unknown `name`: the choices, and close matches."""
    close = self.suggestions(name)[:3]
    hint = ""
    if close:
      hint = " Did you mean " + " or ".join(repr(n) for n in close) + "?"
    return ValueError(f"Unknown {self.kind} {name!r}: expected one of "
                      f"{self.names()}.{hint}")

  def lookup(self, name: str) -> Tuple[Callable, Dict[str, Any]]:
    """(builder, fixed kwargs) of `name`; ValueError listing the choices."""
    if not isinstance(name, str) or name not in self._entries:
      raise self.unknown(name)
    builder, fixed = self._entries[name]
    return builder, dict(fixed)

  def accepted(self, name: str) -> List[str]:
    """Keyword arguments `get(name, ...)` takes (fixed ones excluded).

    Those the builder's signature names; not what it may take through
    **kwargs.
    """
    builder, fixed = self.lookup(name)
    target = builder.__init__ if inspect.isclass(builder) else builder
    params = inspect.signature(target).parameters
    return [p for p, v in params.items()
            if p != "self" and p not in fixed
            and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]

  def get(self, name: str, **kwargs):
    """Builds `name` with its fixed arguments and `kwargs`.

    Raises:
      ValueError: unknown name (the message lists the choices); an argument
        the name fixes; with `check_arguments`, an argument the builder does
        not take (the message lists those it takes).
    """
    builder, fixed = self.lookup(name)
    for key in kwargs:
      if key in fixed:
        raise ConfigError(
            f"{self.kind.capitalize()} {name!r} fixes {key}="
            f"{fixed[key]!r}; do not pass {key}={kwargs[key]!r}. "
            f"Accepted: {self.accepted(name)}.")
    if self._check_arguments:
      accepted = self.accepted(name)
      for key in kwargs:
        if key not in accepted:
          raise ConfigError(f"{self.kind.capitalize()} {name!r} takes no "
                            f"argument {key!r}. Accepted: {accepted}.")
    return builder(**fixed, **kwargs)
