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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, socket.socket() as t:
        s.bind(("127.0.0.1", 0))
        t.bind(("127.0.0.1", 0))
        taken, other = s.getsockname()[1], t.getsockname()[1]
        monkeypatch.setattr(cluster, "LAUNCH_PORTS", [taken, other])
        with pytest.raises(OSError, match="no free port"):
            free_port()  # both held
        t.close()  # (a neighbour port, as the first try had, may be anyone's: this one was ours)
        assert {free_port() for _ in range(20)} == {other}
