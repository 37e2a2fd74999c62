"""A throwaway PostgreSQL server for the tests, from the ``pgserver`` wheel (dev dependency).

The tests use the PostgreSQL at ``SPLICE_TEST_POSTGRES`` (default ``127.0.0.1:5432``, user
``postgres``, trust). On a fresh machine nothing answers there: then :func:`maintenance_url`
starts a server of its own from the binaries the ``pgserver`` wheel ships (PostgreSQL 16, no
system package needed) on a free local port, in a temporary directory, with durability off (the
data is thrown away), and stops it when the test process exits. PostgreSQL refuses to run as
root, so under root the server runs as ``nobody``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

_started: dict[str, str] = {}
"""The throwaway server of this process, once started: ``{"url": ..., "data": ...}``."""


def answers(url: str, timeout: int = 3) -> bool:
    """Whether a PostgreSQL server accepts ``url``."""
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=timeout).close()
    except psycopg.OperationalError:
        return False
    return True


def _bin_dir() -> Path:
    # only the wheel's binaries are used: importing the package (a server manager of its own)
    # would warn about XDG_RUNTIME_DIR at import time
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no PostgreSQL answers and the pgserver wheel is not installed: run `make install` "
            "(it installs the dev dependencies) or point SPLICE_TEST_POSTGRES at a server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start() -> str:
    """Start the throwaway server (once per process); its maintenance URL."""
    if "url" in _started:
        return _started["url"]
    bin_dir = _bin_dir()
    base = Path(tempfile.mkdtemp(prefix="splice-pg-"))
    data, log = base / "data", base / "server.log"
    user = "nobody" if os.geteuid() == 0 else None
    if user is not None:
        base.chmod(0o755)
        shutil.chown(base, user)
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(
            args, user=user, capture_output=True, text=True, timeout=120, cwd=base, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-sync",
    )
    options = (
        f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _started.update(url=url, data=str(data))

    def stop() -> None:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            user=user,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    return url


def maintenance_url(configured: str) -> str:
    """``configured`` if a server answers there, else the throwaway server's URL."""
    if answers(configured):
        return configured
    return start()
