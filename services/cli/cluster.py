"""A local cluster: one real party-service process per party, on free loopback ports."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from services.cli.tls import LocalCa

LAUNCH_PORTS = range(20000, 32768)
"""Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999), so no outgoing
connection takes a port between our check and the service's bind."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, drawn at random from :data:`LAUNCH_PORTS`.

    The port is free when we check, not reserved: the kernel's own choice (``bind`` to port 0)
    hands the same recently released ports to concurrent launches (two pilots at once once got
    each other's parties), a random draw from 12,768 ports makes that a rare coincidence."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(LAUNCH_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {LAUNCH_PORTS} on {host}")


@dataclass(slots=True)
class PartyProcess:
    """A party service we started."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(slots=True)
class PartyLaunch:
    """How to start one party: its name, table and (feature parties) key column."""

    name: str
    table: Path
    key_column: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    torch_threads: int | None = None
    """Intra-op torch threads of this party (None: the cluster's default)."""


class LocalCluster:
    """Start party services as subprocesses; stop them on exit, whatever happens."""

    def __init__(
        self,
        workdir: Path,
        *,
        torch_threads: int = 1,
        host: str = "127.0.0.1",
        tls: LocalCa | None = None,
    ) -> None:
        self.workdir = workdir
        self.torch_threads = torch_threads
        self.host = host
        self.tls = tls
        self.parties: dict[str, PartyProcess] = {}

    def url(self, port: int) -> str:
        """The base URL of a party of this cluster on ``port`` (https with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{port}"

    def start_all(
        self, launches: list[PartyLaunch], *, ports: dict[str, int] | None = None
    ) -> dict[str, PartyProcess]:
        """Start several parties at once (they import torch in parallel); wait for all."""
        ports = ports or {}
        started = [
            self.start(launch, port=ports.get(launch.name), wait=False) for launch in launches
        ]
        for party in started:
            self._wait_ready(party)
        return {p.name: p for p in started}

    def start(
        self, launch: PartyLaunch, *, port: int | None = None, wait: bool = True
    ) -> PartyProcess:
        """Start one party service; return once it is ready (unless ``wait`` is false)."""
        port = port or free_port(self.host)
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{launch.name}.log"
        cmd = [
            sys.executable,
            "-m",
            "services.cli.main",
            "party",
            "serve",
            "--name",
            launch.name,
            "--table",
            str(launch.table),
            "--port",
            str(port),
            "--host",
            self.host,
            "--data-dir",
            str(self.workdir / "parties" / launch.name),
            "--torch-threads",
            str(launch.torch_threads or self.torch_threads),
        ]
        if launch.key_column:
            cmd += ["--key", launch.key_column]
        # OpenMP threads sleep when idle instead of spinning: parties take turns on the cores.
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **launch.env}
        if self.tls is not None:
            env |= self.tls.party_env(launch.name)
        with log.open("ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        party = PartyProcess(launch.name, self.url(port), proc, log)
        self.parties[launch.name] = party
        if wait:
            self._wait_ready(party)
        return party

    def _wait_ready(self, party: PartyProcess, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        verify = True if self.tls is None else self.tls.client_context()
        while time.monotonic() < deadline:
            if party.process.poll() is not None:
                tail = party.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"party {party.name} exited during start-up:\n{tail}")
            try:
                health = httpx.get(f"{party.url}/v1/health", timeout=1.0, verify=verify)
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"party {party.name} did not become ready in {timeout:.0f} s")

    def stop(self, name: str, *, kill: bool = False) -> None:
        """Stop one party (SIGTERM, or SIGKILL with ``kill``)."""
        party = self.parties.pop(name)
        if party.process.poll() is None:
            party.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                party.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                party.process.kill()
                party.process.wait()

    def close(self) -> None:
        """Stop every party."""
        for name in list(self.parties):
            self.stop(name)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
