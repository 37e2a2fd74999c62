"""Run the blinding exponentiations on several cores.

libsodium's ristretto255 calls hold the GIL for their ~60 us per point, so threads cannot use a
second core.
:class:`PsiPool` shards a list into ``workers`` contiguous slices: slice 0 runs in the calling
process, the others in a ``spawn``-ed :class:`~concurrent.futures.ProcessPoolExecutor` (started
lazily, reused across calls). Only ``bytes`` cross the process boundary: the scalar, the keys
and the point blobs. Results are joined in order, so sharding never changes an answer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from services.engine.psi import group
from services.engine.psi.errors import PsiWorkerError

log = logging.getLogger("splice.psi")

T = TypeVar("T", bytes, Sequence[bytes])

MIN_SHARD = 512
"""Fewer items than this per worker run in the calling process only (no pipe round trip)."""


class PsiPool:
    """``workers`` shards: this process plus ``workers - 1`` subprocesses.

    Safe to share between threads and between the two parties of one process. Close it (or use it
    as a context manager) to stop the subprocesses.
    """

    @staticmethod
    def default_workers() -> int:
        """One worker per core."""
        return max(1, os.cpu_count() or 1)

    def __init__(self, workers: int = 1) -> None:
        if not 1 <= workers <= 4 * (os.cpu_count() or 1):
            raise ValueError(f"workers must be in 1..{4 * (os.cpu_count() or 1)}")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._local_only = False
        self._lock = threading.Lock()

    def __enter__(self) -> PsiPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the subprocesses (a later call starts them again)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None

    def start(self) -> None:
        """Start the subprocesses now rather than on the first large call."""
        if self.workers > 1:
            with self._lock:
                self._start()

    def _start(self) -> ProcessPoolExecutor | None:
        """The worker processes, or None when they cannot start (then everything runs here).

        ``spawn`` re-imports the caller's ``__main__`` in each worker; a script without an
        ``if __name__ == "__main__"`` guard cannot be re-imported, so the pool falls back to
        this process (slower, same result) instead of failing the job.
        """
        if self._executor is None and not self._local_only:
            ctx = multiprocessing.get_context("spawn")
            executor = ProcessPoolExecutor(self.workers - 1, mp_context=ctx)
            try:
                # Import the group module in every worker before the first real call.
                futures = [executor.submit(group.new_scalar) for _ in range(self.workers - 1)]
                for f in futures:
                    f.result()
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                executor.shutdown(wait=False, cancel_futures=True)
                log.warning("PSI worker processes cannot start (%s); using one core", exc)
                self._local_only = True
                return None
            self._executor = executor
        return self._executor

    def hash_multiply(self, scalar: bytes, keys: Sequence[bytes]) -> bytes:
        """``scalar * H(key)`` for each key, one blob in the keys' order."""
        slices = _slices(len(keys), self.workers)
        return self._run(group.hash_multiply, scalar, [keys[s:e] for s, e in slices], slices)

    def multiply(self, scalar: bytes, points: bytes) -> bytes:
        """``scalar * P`` for each point of the blob, one blob in the same order."""
        size = group.POINT_SIZE
        slices = _slices(len(points) // size, self.workers)
        parts = [points[s * size : e * size] for s, e in slices]
        return self._run(group.multiply, scalar, parts, slices)

    def _run(
        self,
        fn: Callable[[bytes, T, int], bytes],
        scalar: bytes,
        parts: list[T],
        slices: list[tuple[int, int]],
    ) -> bytes:
        if len(parts) == 1:
            return fn(scalar, parts[0], slices[0][0])
        with self._lock:
            executor = self._start()
        if executor is None:
            return b"".join(
                fn(scalar, part, start) for part, (start, _) in zip(parts, slices, strict=True)
            )
        futures: list[Future[bytes]] = [
            executor.submit(fn, scalar, part, start)
            for part, (start, _) in zip(parts[1:], slices[1:], strict=True)
        ]
        try:
            out = [fn(scalar, parts[0], slices[0][0])]
            out.extend(f.result() for f in futures)
        except BrokenProcessPool as exc:
            self.close()
            raise PsiWorkerError("a PSI worker process died") from exc
        finally:
            for f in futures:
                f.cancel()
        return b"".join(out)


def _slices(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` slices, one per worker (one only for small inputs)."""
    k = max(1, min(workers, n // MIN_SHARD))
    bounds = [n * i // k for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]
