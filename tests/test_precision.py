"""The bfloat16 warning: measured, once, and only where bf16 is slower."""
from absl import logging
import pytest

from selfsup.core import precision


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
  monkeypatch.setattr(precision, "_warned", [])


def test_matmul_rates_are_measured():
  rates = precision.matmul_rates(n=128, repeats=2)
  assert set(rates) == {"float32", "bfloat16"}
  assert all(r > 0 for r in rates.values())


def test_warns_once_when_bf16_is_slower(monkeypatch):
  monkeypatch.setattr(precision, "matmul_rates",
                      lambda: {"float32": 360e9, "bfloat16": 179e9})
  said = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: said.append(msg))
  text = precision.warn_if_bf16_slow(("/CPU:0",))
  assert "179 GFLOP/s" in text and "360 GFLOP/s" in text and "0.50x" in text
  assert said == [text]
  assert precision.warn_if_bf16_slow(("/CPU:0",)) is None  # once
  assert said == [text]


@pytest.mark.parametrize("rates,devices", [
    ({"float32": 360e9, "bfloat16": 822e9}, ("/CPU:0",)),  # AMX-like CPU
    ({"float32": 360e9, "bfloat16": 179e9}, ("/job:localhost/device:GPU:0",)),
    ({"float32": 360e9, "bfloat16": 179e9}, ("/device:TPU:0",)),
])
def test_no_warning_where_bf16_pays(monkeypatch, rates, devices):
  monkeypatch.setattr(precision, "matmul_rates", lambda: rates)
  assert precision.warn_if_bf16_slow(devices) is None
  assert not precision._warned  # pylint: disable=protected-access
