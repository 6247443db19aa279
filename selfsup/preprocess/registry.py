"""Registry of preprocessing ops and the spec-string parser.

A pipeline is one string of ops joined by `|`, for example
`"decode|resize(292)|crop(255)|to_gray(0.33)|crop_patches(3, 21)|standardize"`.
Each op is the name of a registered factory, optionally called with Python
literal arguments (numbers, strings, tuples, lists, keyword arguments). The
factory returns a function from a features dict to a new features dict.

Arguments are parsed with `ast.literal_eval`, never `eval`: a spec may come
from a gin file or a command line and must not be able to run code.
"""
import ast
import inspect
import re

import tensorflow as tf

from selfsup.core.registry import Registry
from selfsup.core.checks import ConfigError

# The registered op factories, by the name spec strings use.
OPS = Registry("preprocessing op")
_OP_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)
_OPENERS = {"(": ")", "[": "]", "{": "}"}


def register(name):
  """Registers a preprocessing op factory under `name`.

  Used as a decorator: `@register("resize")` on `get_resize(size)`. A factory
  that has a `training` parameter receives the mode from `get` unless the spec
  sets it explicitly.

  Args:
    name: the name used in spec strings; a Python identifier.

  Returns:
    A decorator that registers the factory and returns it unchanged.

  Raises:
    ValueError: if `name` is not an identifier or is already registered.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ConfigError(f"Op name must be a Python identifier, got {name!r}.")

  return OPS.register(name)


def list_ops():
  """Returns the sorted names of all registered ops."""
  return OPS.names()


def _split_ops(spec):
  """Splits `spec` at the `|` that are outside brackets and quotes."""
  parts, current, closers, quote = [], [], [], None
  for char in spec:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in _OPENERS:
      closers.append(_OPENERS[char])
    elif closers and char == closers[-1]:
      closers.pop()
    elif char == "|" and not closers:
      parts.append("".join(current))
      current = []
      continue
    current.append(char)
  if quote or closers:
    raise ConfigError("unbalanced brackets or quotes")
  parts.append("".join(current))
  return [p.strip() for p in parts]


def _parse_op(op):
  """Parses `name(arg, key=value)` into (name, args, kwargs)."""
  match = _OP_RE.match(op)
  if not match:
    raise ConfigError("expected `name` or `name(arguments)`")
  name, arg_text = match.group(1), match.group(2)
  if not arg_text or not arg_text.strip():
    return name, (), {}
  try:
    call = ast.parse(f"_op({arg_text})", mode="eval").body
  except SyntaxError as err:
    raise ConfigError(f"cannot parse the arguments: {err.msg}") from None
  if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
          and call.func.id == "_op"):
    raise ConfigError("expected `name` or `name(arguments)`")
  try:
    args = []
    for node in call.args:
      if isinstance(node, ast.Starred):
        raise ConfigError("*args is not allowed")
      args.append(ast.literal_eval(node))
    kwargs = {}
    for keyword in call.keywords:
      if keyword.arg is None:
        raise ConfigError("**kwargs is not allowed")
      kwargs[keyword.arg] = ast.literal_eval(keyword.value)
  except ValueError as err:
    raise ConfigError(f"arguments must be Python literals ({err})") from None
  return name, tuple(args), kwargs


def _build_op(name, args, kwargs, training):
  """Calls the registered factory after checking the arguments bind."""
  if name not in OPS:
    raise ConfigError(f"unknown op {name!r}; known ops: "
                      f"{', '.join(list_ops())}")
  factory, _ = OPS.lookup(name)
  signature = inspect.signature(factory)
  if "training" in signature.parameters and "training" not in kwargs:
    kwargs = dict(kwargs, training=training)
  try:
    signature.bind(*args, **kwargs)
  except TypeError as err:
    raise ConfigError(f"bad arguments: {err}; expected {name}{signature}") \
        from None
  try:
    return factory(*args, **kwargs)
  except TypeError as err:  # A value of the wrong type, e.g. crop(None).
    raise ConfigError(f"bad arguments: {err}") from None


def get(spec, training):
  """Builds the preprocessing function described by a spec string.

  Args:
    spec: ops joined by `|`, e.g. `"decode|inception_crop(224)|flip_lr"`. An
      empty string gives the identity (a copy of the dict).
    training: passed to every op factory that takes a `training` argument:
      random augmentation in training, deterministic (central crops, fixed
      permutations, no colour changes) in evaluation.

  Returns:
    A function mapping a features dict to a new features dict, usable eagerly
    and inside `tf.data.Dataset.map`. It has the spec as attribute `spec`.

  Raises:
    ValueError: for an unknown op, arguments that are not literals or do not
      fit the factory, or values the factory rejects. The message quotes the
      whole spec and the offending op. Errors that an op can only detect when
      it sees the data's static shape (a patch larger than its cell, say) are
      raised, with the same quoting, when the function is first called.
  """
  if not isinstance(spec, str):
    raise ConfigError(f"A preprocessing spec must be a string, got {spec!r}.")
  try:
    op_texts = _split_ops(spec) if spec.strip() else []
  except ValueError as err:
    raise ConfigError(f"Bad preprocessing spec {spec!r}: {err}.") from None
  ops = []
  for op_text in op_texts:
    try:
      if not op_text:
        raise ConfigError("empty op (two `|` in a row, or a trailing `|`?)")
      name, args, kwargs = _parse_op(op_text)
      ops.append((op_text, _build_op(name, args, kwargs, training)))
    except ValueError as err:
      raise ConfigError(
          f"Bad preprocessing spec {spec!r}, op {op_text!r}: {err}") from None

  @tf.autograph.experimental.do_not_convert
  def apply(features):
    if not isinstance(features, dict):
      raise ConfigError(f"Preprocessing spec {spec!r} expects a dict of "
                        f"features, got {type(features).__name__}.")
    features = dict(features)
    for op_text, fn in ops:
      try:
        features = fn(features)
      except ValueError as err:
        raise ConfigError(f"Preprocessing spec {spec!r}, op {op_text!r} "
                          f"failed: {err}") from err
    return features

  apply.spec = spec
  return apply
