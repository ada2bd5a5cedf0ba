"""The network guard of conftest.py works."""

import socket

import pytest


def test_network_is_blocked():
    """The guard itself: an outbound connection fails before any packet leaves."""
    with pytest.raises(RuntimeError, match="offline"), socket.socket() as sock:
        sock.connect(("192.0.2.1", 80))
