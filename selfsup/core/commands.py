"""How to spell a selfsup command in a message: the installed console
script (`selfsup-demo`) or, in a source checkout, its `bin/` script
(`bin/demo`). A pip user has no `bin/` folder; a checkout may have no console
scripts on its PATH. Imports nothing heavy.
"""
import os

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_checkout(package_dir=_PACKAGE):
  """Whether selfsup runs from a source checkout: `bin/demo` and `setup.py`
  beside the package (an installed wheel has neither)."""
  root = os.path.dirname(package_dir)
  return (os.path.isfile(os.path.join(root, "bin", "demo"))
          and os.path.isfile(os.path.join(root, "setup.py")))


def name(command, checkout=None):
  """`command` ("selfsup-demo", "selfsup-linear-eval") as the user should
  type it here: `bin/demo`, `bin/linear_eval` in a checkout, else as is."""
  if not command.startswith("selfsup-"):
    raise ValueError(f"command={command!r} is not valid: expected an "
                     "installed command name such as 'selfsup-demo'.")
  if in_checkout() if checkout is None else checkout:
    return "bin/" + command[len("selfsup-"):].replace("-", "_")
  return command
