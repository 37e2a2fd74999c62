"""Launch ports: free when checked, drawn at random below the ephemeral range."""

from __future__ import annotations

import socket

import pytest

from services.cli import cluster
from services.cli.cluster import LAUNCH_PORTS, free_port


def test_free_ports_are_bindable_random_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(20)]
    assert all(p in LAUNCH_PORTS for p in ports)
    assert len(set(ports)) >= 15  # the kernel's bind(0) hands out neighbours, not a draw
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        monkeypatch.setattr(cluster, "LAUNCH_PORTS", range(taken, taken + 1))
        with pytest.raises(OSError, match="no free port"):
            free_port()
        monkeypatch.setattr(cluster, "LAUNCH_PORTS", range(taken, taken + 2))
        assert {free_port() for _ in range(20)} == {taken + 1}
