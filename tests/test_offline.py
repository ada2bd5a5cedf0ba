"""The network guard of conftest.py works."""

import socket

import pytest


def test_network_is_blocked():
    """The guard itself: an outbound connection fails before any packet leaves."""
    with pytest.raises(RuntimeError, match="offline"), socket.socket() as sock:
        sock.connect(("192.0.2.1", 80))


def test_torchvision_download_fails_under_the_guard(tmp_path):
    """A download attempt (here torchvision's MNIST with download=True) cannot reach the
    network during the tests: it fails instead of fetching anything."""
    from torchvision.datasets import MNIST

    with pytest.raises(Exception) as info:
        MNIST(str(tmp_path), download=True)
    assert not list(tmp_path.rglob("*.gz")), "nothing may have been downloaded"
    assert info.value is not None


def test_hub_weights_cannot_be_fetched(tmp_path, monkeypatch):
    """torch.hub's weight download fails under the guard, and kdtutor never calls it."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(Exception):  # noqa: B017
        torch.hub.load_state_dict_from_url(
            "https://download.pytorch.org/models/resnet18-f37072fd.pth", model_dir=str(tmp_path)
        )
    assert not list(tmp_path.rglob("*.pth"))


def test_the_package_never_asks_for_downloads():
    """No `download=True` and no hub or URL fetches anywhere in kdtutor's source."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "kdtutor"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("download=True", "load_state_dict_from_url", "torch.hub.load", "urlopen"):
            assert needle not in text, f"{path.name} contains {needle}"
