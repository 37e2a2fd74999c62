"""Entry point of an :class:`~services.engine.he.pool.HePool` subprocess.

Started as ``python -m services.engine.he.worker READ_FD WRITE_FD`` (not through
``multiprocessing``, which would re-import the parent's ``__main__``). It serves ``(op, args)``
requests from one pipe and answers on the other until the parent closes the pipe.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from services.engine.he import ops
from services.engine.he.errors import HeError
from services.engine.he.state import State


def serve(requests: Connection, replies: Connection) -> None:
    """Answer requests until end of file."""
    state = State()
    while True:
        try:
            op, args = requests.recv()
        except (EOFError, OSError):
            return
        try:
            replies.send(("ok", ops.run(state, op, args)))
        except HeError as exc:
            replies.send(("err", type(exc).__name__, str(exc)))
        state.flush()  # work the call deferred runs after the reply, before the next request


if __name__ == "__main__":  # pragma: no cover - runs in the subprocess
    serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
