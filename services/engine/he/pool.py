"""Run kernel shards on several cores.

SEAL calls through ``tenseal.sealapi`` hold the GIL (measured: two threads doing rotations,
products or encodings take as long as one thread doing both halves), so threads cannot use the
second core. :class:`HePool` keeps ``workers - 1`` spawned subprocesses; shard 0 runs in the
calling process, shard ``w`` in subprocess ``w``. Each worker keeps its own contexts, prepared
weights and loaded uploads (:class:`~services.engine.he.State`); the pool remembers which keys
each subprocess has so a bundle crosses the pipe once. A subprocess that dies is restarted on the
next call and the call raises :class:`HeWorkerError`; the calling process never crashes on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.engine.he import ops
from services.engine.he.errors import HeError, HeWorkerError
from services.engine.he.state import State

_ROOT = str(Path(__file__).resolve().parents[3])
MAX_KEYS = 8
"""Keys (jobs) a pool keeps loaded at once."""


class _Worker:
    """One subprocess running :mod:`services.engine.he.worker`, joined by two pipes."""

    def __init__(self) -> None:
        child_in, parent_out = os.pipe()
        parent_in, child_out = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.engine.he.worker", str(child_in), str(child_out)],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(child_in)
            os.close(child_out)
        self.requests = Connection(parent_out, readable=False)
        self.replies = Connection(parent_in, writable=False)
        self.keys: set[str] = set()
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, self.requests, self.replies)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self._finalizer()


def _shutdown(proc: subprocess.Popen[bytes], requests: Connection, replies: Connection) -> None:
    """Close the pipes (the worker exits on end of file) and reap the process."""
    requests.close()
    replies.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class HePool:
    """``workers`` shards: this process plus ``workers - 1`` subprocesses (started lazily), or,
    with ``in_process=False``, ``workers`` subprocesses while this process only coordinates (then
    work a call defers, such as :func:`~services.engine.he.label.forward`'s ``warm_backward``,
    runs while the caller does something else).

    Safe to share between threads (one call runs at a time). Use one pool per party process,
    e.g. ``HePool(HePool.default_workers())``, and :meth:`forget` a job's key when it ends.
    """

    @staticmethod
    def default_workers() -> int:
        """One worker per core, at most two (the kernel's sharding is tuned for two)."""
        return max(1, min(2, os.cpu_count() or 1))

    def __init__(self, workers: int = 1, *, in_process: bool = True) -> None:
        if not 1 <= workers <= (os.cpu_count() or 1) * 2:
            raise ValueError(f"workers must be in 1..{(os.cpu_count() or 1) * 2}")
        self.workers = workers
        self.in_process = in_process
        self.token = uuid.uuid4().hex
        self.local = State()
        self._first = 1 if in_process else 0
        self._procs: list[_Worker | None] = [None] * (workers - self._first)
        self._attached: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.RLock()
        self.seconds: dict[str, float] = {}
        """Wall time spent in each operation so far (read by the party's metrics)."""

    def _spent(self, op: str, start: float) -> None:
        self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - start

    def __enter__(self) -> HePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the subprocesses (the pool can still be used; they restart on demand)."""
        with self._lock:
            for k, proc in enumerate(self._procs):
                if proc is not None:
                    proc.stop()
                self._procs[k] = None

    def _proc(self, k: int) -> _Worker:
        proc = self._procs[k]
        if proc is None or not proc.alive():
            if proc is not None:
                proc.stop()
            proc = self._procs[k] = _Worker()
        return proc

    def run_local(self, op: str, args: tuple[Any, ...]) -> Any:
        """Run ``op`` in this process only (under the pool's lock)."""
        with self._lock:
            start = time.perf_counter()
            try:
                return ops.run(self.local, op, args)
            finally:
                self._spent(op, start)

    def _drop(self, k: int) -> None:
        proc = self._procs[k]
        if proc is not None:
            proc.stop()
        self._procs[k] = None

    def attach(
        self, fp: str, op: str, payload: Callable[[], bytes], local: Callable[[State], None]
    ) -> None:
        """Load key ``fp`` (``op``: ``public`` or ``secret``) in every worker, once.

        ``local`` loads it in this process; ``payload()`` gives the bytes sent to subprocesses.
        At most :data:`MAX_KEYS` keys stay loaded; the least recently attached one is dropped.
        """
        with self._lock:
            tag = f"{op}:{fp}"
            if tag in self._attached:
                self._attached.move_to_end(tag)
            else:
                local(self.local)
                self._attached[tag] = fp
            remote = range(len(self._procs))
            todo = [k for k in remote if tag not in self._proc(k).keys]
            if todo:
                data = payload()
                shards: list[tuple[Any, ...] | None] = [None] * self._first
                shards += [(fp, data) if k in todo else None for k in remote]
                self.run(op, shards)
                for k in todo:
                    self._proc(k).keys.add(tag)
            while len(self._attached) > MAX_KEYS:
                old_tag, old_fp = self._attached.popitem(last=False)
                self.run("forget", [(old_fp,)] * self.workers)
                for proc in self._procs:
                    if proc is not None:
                        proc.keys.discard(old_tag)

    def forget(self, fp: str) -> None:
        """Drop key ``fp`` and everything prepared for it from every worker (end of a job)."""
        with self._lock:
            for tag in [t for t, f in self._attached.items() if f == fp]:
                del self._attached[tag]
                for proc in self._procs:
                    if proc is not None:
                        proc.keys.discard(tag)
            self.run("forget", [(fp,)] * self.workers)

    def run(self, op: str, shards: list[tuple[Any, ...] | None]) -> list[Any]:
        """Run ``op`` with ``shards[w]`` on worker ``w`` (``None``: skip); results in order."""
        if len(shards) != self.workers:
            raise ValueError("one argument tuple (or None) per worker is needed")
        with self._lock:
            start = time.perf_counter()
            try:
                return self._run(op, shards)
            finally:
                self._spent(op, start)

    def _run(self, op: str, shards: list[tuple[Any, ...] | None]) -> list[Any]:
        sent: list[int] = []
        failure: HeError | None = None
        for k, args in enumerate(shards[self._first :]):
            if args is None:
                continue
            try:
                self._proc(k).requests.send((op, args))
                sent.append(k)
            except (OSError, ValueError) as exc:
                self._drop(k)
                failure = failure or HeWorkerError(f"HE worker {k} is unreachable: {exc}")
            except Exception as exc:  # pickling: nothing was written, the pipe is intact
                failure = failure or HeError(f"cannot send {op!r} to HE worker {k}: {exc}")
        results: list[Any] = [None] * self.workers
        if self.in_process and shards[0] is not None:
            try:
                results[0] = ops.run(self.local, op, shards[0])
            except HeError as exc:
                failure = failure or exc
        for k in sent:
            failure = self._collect(k, results, failure)
        if failure is not None:
            raise failure
        return results

    def _collect(self, k: int, results: list[Any], failure: HeError | None) -> HeError | None:
        proc = self._procs[k]
        assert proc is not None
        try:
            reply = proc.replies.recv()
        except (EOFError, OSError) as exc:
            self._drop(k)
            return failure or HeWorkerError(f"HE worker {k} died: {exc!r}")
        if reply[0] == "ok":
            results[k + self._first] = reply[1]
            return failure
        kind = {cls.__name__: cls for cls in _error_classes()}.get(reply[1], HeError)
        return failure or kind(reply[2])


def _error_classes() -> list[type[HeError]]:
    found: list[type[HeError]] = [HeError]
    for cls in found:
        found.extend(c for c in cls.__subclasses__() if c not in found)
    return found


_DEFAULT = HePool(1)


def default_pool() -> HePool:
    """The in-process, single-shard pool used when a call passes none."""
    return _DEFAULT
