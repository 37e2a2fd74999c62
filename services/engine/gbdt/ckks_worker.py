"""A histogram worker started as a subprocess (a party service: no fork from its threads).

Started as ``python -m services.engine.gbdt.ckks_worker FD`` (not through ``multiprocessing``,
which would re-import the parent's ``__main__``), joined to the party by one socket. The first
message says what a forked worker inherits: the label party's public bundle, the layout, the
party's bin codes and the chunks whose diagonals it pre-encodes; then it serves
:mod:`.ckks_pool`'s requests until the socket closes. Only the tree protocol's framing crosses
(a JSON header and byte sections), never pickle.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import messages as msg
from services.engine.gbdt.ckks_plan import HistPlan

I64 = npt.NDArray[np.int64]
_ROOT = str(Path(__file__).resolve().parents[3])


def spawn(
    bundle: bytes, plan: HistPlan, codes: I64, own: range
) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a worker and hand it its state; returns the process and the party's end."""
    mine, theirs = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.engine.gbdt.ckks_worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        theirs.close()
    conn = Connection(mine.detach())
    head = {
        "kind": "init",
        "rows": plan.rows,
        "width": plan.width,
        "poly_degree": plan.poly_degree,
        "columns": int(codes.shape[1]),
        "first": own.start,
        "end": own.stop,
    }
    conn.send_bytes(msg.encode(head, [bundle, codes.astype("<i4").tobytes()]))
    return proc, conn


def main(fd: int) -> None:
    """The worker: read its state, then serve (:func:`.ckks_pool._serve`)."""
    from services.engine.gbdt.ckks_pool import _serve  # noqa: PLC0415 (the pool imports us)

    conn = Connection(fd)
    try:
        head, sections = msg.decode(conn.recv_bytes(), "init")
    except (EOFError, OSError):
        return
    plan = HistPlan(
        msg.field(head, "rows", int, "init"),
        msg.field(head, "width", int, "init"),
        msg.field(head, "poly_degree", int, "init"),
    )
    columns = msg.field(head, "columns", int, "init")
    codes = np.frombuffer(sections[1], dtype="<i4").astype(np.int64).reshape(-1, columns)
    own = range(msg.field(head, "first", int, "init"), msg.field(head, "end", int, "init"))
    _serve(conn, [], sections[0], plan, codes, own)


if __name__ == "__main__":  # pragma: no cover - runs in the subprocess
    main(int(sys.argv[1]))
