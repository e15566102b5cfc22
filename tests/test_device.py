from __future__ import annotations

import pytest

from models import device
from models.device import DeviceInfo, resolve_device


def test_cpu_always_listed_first():
    assert device.available_devices()[0].name == "cpu"


@pytest.mark.parametrize(
    ("seen", "choice", "expected"),
    [
        (("cpu",), "auto", "cpu"),
        (("cpu", "cuda:0"), "auto", "cuda:0"),
        (("cpu", "mps"), "auto", "mps"),
        (("cpu", "cuda:0"), "cuda", "cuda:0"),
        (("cpu", "cuda:0"), "cpu", "cpu"),
    ],
)
def test_resolve(monkeypatch, seen, choice, expected):
    monkeypatch.setattr(device, "available_devices", lambda: tuple(DeviceInfo(n, n) for n in seen))
    assert resolve_device(choice) == expected


def test_missing_gpu_names_what_is_available(monkeypatch):
    monkeypatch.setattr(device, "available_devices", lambda: (DeviceInfo("cpu", "cpu"),))
    with pytest.raises(ValueError, match="not available here; available: cpu"):
        resolve_device("cuda")
