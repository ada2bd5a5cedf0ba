"""Test-wide guards: no network access at run time, a quiet non-interactive environment."""

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("KDTUTOR_SCALE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")

_real_connect = socket.socket.connect


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_local(address):
        raise RuntimeError(
            f"test tried to reach the network ({address!r}): kdtutor must work offline. "
            "Use shipped data or a local KDTUTOR_DATA folder."
        )
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect
