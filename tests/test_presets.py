"""Presets: the table, `selfsup presets`, and from_preset's download cache,
against a module tarball built from the authors' reference checkpoint
(tests/tf1_reference_data.py) served on 127.0.0.1. Nothing leaves the
machine: SELFSUP_HUB_URL points at the local server, SELFSUP_HOME at a
temporary folder."""
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest

from selfsup import presets
from selfsup.core.errors import PresetError
from tests import tf1_reference_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "resnet50_v2"  # what the vtab modules are; width 1 in the reference

pytestmark = pytest.mark.skipif(
    not tf1_reference_data.available(),
    reason="the authors' reference models (../shared/reference) are absent")


def _tarball(folder, extra=b""):
  """A TF-Hub-style compressed module: variables/ and tfhub_module.pb."""
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w:gz") as archive:
    for suffix in ("index", "data-00000-of-00001"):
      archive.add(os.path.join(folder, CONFIG, f"model.ckpt.{suffix}"),
                  arcname=f"./variables/variables.{suffix}")
    info = tarfile.TarInfo("./tfhub_module.pb")
    info.size = len(extra)
    archive.addfile(info, io.BytesIO(extra))
  return out.getvalue()


class _Server:
  """Serves `routes` {handle: bytes}; "truncated" sends half of what its
  Content-Length says, "slow" one chunk and then waits. Stops by itself
  after `lifetime` seconds at the latest."""

  def __init__(self, routes, lifetime=300):
    self.routes, self.hits, self.sent_some = routes, [], threading.Event()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        handle = self.path.split("?")[0].strip("/").split("/", 1)[1]
        server.hits.append(handle)
        body = server.routes.get(handle)
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if handle.endswith("truncated"):
          self.wfile.write(body[:len(body) // 2])
        elif handle.endswith("slow"):
          self.wfile.write(body[:65536])
          self.wfile.flush()
          server.sent_some.set()
          time.sleep(30)
        else:
          self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    self._timer = threading.Timer(lifetime, self.stop)
    self._timer.daemon = True
    self._timer.start()

  def stop(self):
    self._timer.cancel()
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture(scope="module")
def reference():
  return tf1_reference_data.references(((1, 0),))[(1, 0)]


@pytest.fixture
def hub(reference, tmp_path, monkeypatch):
  good = _tarball(reference)
  corrupt = bytearray(good)
  corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = bytes(64)
  routes = {"good/1": good, "other/1": _tarball(reference, b"changed"),
            "truncated": good, "corrupt/1": bytes(corrupt), "slow": good,
            "empty/1": _empty_tarball()}
  server = _Server(routes)
  monkeypatch.setenv("SELFSUP_HUB_URL", server.url + "/test")
  monkeypatch.setenv("SELFSUP_HOME", str(tmp_path / "home"))
  monkeypatch.delenv("SELFSUP_OFFLINE", raising=False)
  for handle in routes:
    monkeypatch.setitem(presets.PRESETS, f"test/{handle}", dict(
        presets.PRESETS["vtab/rotation/1"], handle=handle))
  yield server
  server.stop()


def _empty_tarball():
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w:gz") as archive:
    info = tarfile.TarInfo("README")
    archive.addfile(info, io.BytesIO(b""))
  return out.getvalue()


def _cache(tmp_path):
  root = tmp_path / "home" / "presets"
  return sorted(os.listdir(root)) if root.exists() else []


def _one_line(err):
  assert "\n" not in str(err.value), str(err.value)


def test_download_cache_verify_and_reload_offline(hub, reference, tmp_path,
                                                  monkeypatch):
  import selfsup  # pylint: disable=import-outside-toplevel
  layer = selfsup.Representation.from_preset("test/good/1", image_size=32)
  assert hub.hits == ["good/1"]
  # The backbone computes what the authors' model computes.
  ends = dict(np.load(os.path.join(reference, CONFIG, "endpoints.npz")))
  got = np.asarray(layer.backbone(ends["input"], training=False)["pre_logits"])
  err = np.max(np.abs(got - ends["pre_logits"])) / np.max(np.abs(
      ends["pre_logits"]))
  assert err < 1e-4
  assert layer.spec == selfsup.tasks.Rotation.evaluation_specs(32)["eval"]
  assert layer(np.zeros((1, 40, 40, 3), np.uint8)).shape == (1, 2048 // 4)
  # The cache: the module, its tarball and the recorded sha256; no scratch.
  names = _cache(tmp_path)
  assert names == ["sha256.json", "test__good__1", "test__good__1.tar.gz"]
  record = json.loads((tmp_path / "home" / "presets" /
                       "sha256.json").read_text())["test/good/1"]
  tarball = tmp_path / "home" / "presets" / "test__good__1.tar.gz"
  assert record["sha256"] == presets.sha256_of(tarball)
  # Offline: from the cache, no request.
  monkeypatch.setenv("SELFSUP_OFFLINE", "1")
  backbone = selfsup.models.from_preset("test/good/1")
  assert hub.hits == ["good/1"] and backbone.name.startswith("resnet50_v2")
  # A changed cached tarball is refused against its recorded sha256.
  with open(tarball, "ab") as f:
    f.write(b"x")
  with pytest.raises(PresetError, match="recorded at its first download") as e:
    presets.fetch("test/good/1")
  _one_line(e)


def test_truncated_corrupt_and_changed_downloads_are_refused(hub, tmp_path):
  with pytest.raises(PresetError, match="truncated") as e:
    presets.fetch("test/truncated")
  _one_line(e)
  with pytest.raises(PresetError, match="not a whole module tarball") as e:
    presets.fetch("test/corrupt/1")
  _one_line(e)
  with pytest.raises(PresetError, match="holds no TF1 module") as e:
    presets.fetch("test/empty/1")
  _one_line(e)
  assert _cache(tmp_path) == []  # nothing kept, no scratch
  # The first download's sha256 is what later downloads must match.
  presets.fetch("test/good/1")
  root = tmp_path / "home" / "presets"
  for path in ("test__good__1", "test__good__1.tar.gz"):
    target = root / path
    if target.is_dir():
      import shutil  # pylint: disable=import-outside-toplevel
      shutil.rmtree(target)
    else:
      target.unlink()
  hub.routes["good/1"] = hub.routes["other/1"]
  with pytest.raises(PresetError, match="not the recorded") as e:
    presets.fetch("test/good/1")
  _one_line(e)
  assert _cache(tmp_path) == ["sha256.json"]


_FETCH = """
import sys
from selfsup import presets
presets.PRESETS["test/slow"] = dict(presets.PRESETS["vtab/rotation/1"],
                                    handle="slow")
presets.fetch("test/slow")
"""


def test_a_killed_download_leaves_nothing_taken_for_whole(hub, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-c", _FETCH], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    assert hub.sent_some.wait(60), "the download never started"
    time.sleep(0.5)  # the first bytes reach the scratch file
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
  left = _cache(tmp_path)
  assert not [n for n in left if n.startswith("test__slow")], left
  assert all(n.startswith(".part-") for n in left), left
  # The next call removes the dead process's scratch and finds no preset.
  with pytest.raises(PresetError, match="not downloaded") as e:
    presets.fetch("test/slow", download=False)
  _one_line(e)
  assert _cache(tmp_path) == []


def test_offline_missing_unknown_and_local_sources(hub, reference, tmp_path,
                                                   monkeypatch):
  monkeypatch.setenv("SELFSUP_OFFLINE", "1")
  with pytest.raises(PresetError, match="tf-hub-format=compressed") as e:
    presets.fetch("test/good/1")
  _one_line(e)
  assert hub.hits == []
  with pytest.raises(PresetError, match="Unknown preset 'vtab/rotation'"):
    presets.get("vtab/rotation")
  tarball = tmp_path / "module.tar.gz"
  tarball.write_bytes(hub.routes["good/1"])
  folder, entry = presets.resolve("test/good/1", source=str(tarball))
  assert entry["task"] == "rotation"
  assert os.path.exists(os.path.join(folder, "variables", "variables.index"))
  assert presets.local(folder) == folder  # a folder is used as it is
  broken = tmp_path / "broken.tar.gz"
  broken.write_bytes(hub.routes["good/1"][:1000])
  with pytest.raises(PresetError, match="truncated or corrupt") as e:
    presets.local(str(broken))
  _one_line(e)
  assert hub.hits == []


def test_the_table_and_the_presets_command():
  assert len(presets.names()) == 9
  for name in presets.names():
    entry = presets.get(name)
    assert entry["architecture"] == "resnet50_v2"
    assert entry["accuracy"] == "unverified" or entry["accuracy"][0].isdigit()
    assert set(presets.COLUMNS) <= set(entry)
  code = ("import sys; from selfsup.__main__ import main; main(['presets']); "
          "print('tensorflow' in sys.modules)")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120, check=True,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  lines = done.stdout.splitlines()
  assert lines[-1] == "False"  # answers without TensorFlow
  for name in presets.names():
    assert any(line.startswith(name + " ") for line in lines), name
