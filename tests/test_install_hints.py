"""Messages a pip user can follow (issue 22, item 8): the digits source's
missing scikit-learn is one `error:` line naming the extra, and hints name
the commands as this installation spells them (`selfsup-demo` from a wheel,
`bin/demo` in a checkout)."""
import ast
import os
import subprocess
import sys

import pytest

from selfsup.core import commands
from selfsup.core.errors import MissingDependencyError, SelfsupError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_command_spelling_in_a_checkout_and_from_a_wheel(tmp_path):
  assert commands.name("selfsup-demo", checkout=True) == "bin/demo"
  assert commands.name("selfsup-linear-eval", checkout=True) == (
      "bin/linear_eval")
  assert commands.name("selfsup-demo", checkout=False) == "selfsup-demo"
  # This tree is a checkout; a package folder with no bin/ beside it (a
  # wheel's site-packages) is not.
  assert commands.in_checkout()
  package = tmp_path / "site-packages" / "selfsup"
  package.mkdir(parents=True)
  assert not commands.in_checkout(str(package))
  with pytest.raises(ValueError, match="command='demo' is not valid"):
    commands.name("demo")


_HINTS = """
from selfsup.core import commands
from selfsup.cli import pretrain
commands.in_checkout = lambda: False
print(repr(pretrain.demo_hint()))
commands.in_checkout = lambda: True
print(repr(pretrain.demo_hint()))
"""


def test_pretrain_hint_names_the_installed_command():
  # In a child: importing a command defines its absl flags in this process,
  # and the commands' modules define some of the same flag names.
  result = subprocess.run([sys.executable, "-c", _HINTS],
                          env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300,
                          check=True)
  wheel, checkout = [ast.literal_eval(line)
                     for line in result.stdout.strip().splitlines()[-2:]]
  assert "selfsup-demo" in wheel and "bin/" not in wheel
  assert "  bin/demo" in checkout


def _no_sklearn(tmp_path):
  """A PYTHONPATH entry whose `sklearn` fails to import, as on a [cpu]-only
  install."""
  fake = tmp_path / "fake" / "sklearn"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text(
      "raise ImportError(\"No module named 'sklearn'\")\n")
  return str(tmp_path / "fake")


def test_digits_without_scikit_learn_is_a_library_error(tmp_path,
                                                        monkeypatch):
  monkeypatch.setitem(sys.modules, "sklearn", None)  # import fails
  from selfsup.data import digits  # pylint: disable=import-outside-toplevel
  with pytest.raises(MissingDependencyError,
                     match=r'pip install "selfsup\[demo\]"') as err:
    digits.Digits(image_size=16)
  assert isinstance(err.value, SelfsupError)


def test_pretrain_demo_without_scikit_learn_prints_one_error_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=_no_sklearn(tmp_path) + os.pathsep + ROOT,
             TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, "bin", "pretrain"),
       "--gin_file=rotation", "--gin_file=demo",
       f"--workdir={tmp_path / 'workdir'}"],
      cwd=str(tmp_path), env=env, capture_output=True, text=True,
      timeout=600, check=False)
  assert done.returncode != 0
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  errors = [line for line in done.stderr.splitlines()
            if line.startswith("error:")]
  assert len(errors) == 1, done.stderr[-3000:]
  assert 'pip install "selfsup[demo]"' in errors[0]
