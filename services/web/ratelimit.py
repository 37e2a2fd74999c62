"""Fixed-window rate limiting: the window arithmetic both services share, and an in-process
limiter for a single-process service (a party). The registry keeps its counters in its database
(``services.registry.store.rate_limits``), so every worker and instance shares them."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from services.protocol.errors import RateLimited


def window_start(now: float, window_seconds: int) -> int:
    """Start (epoch seconds) of the fixed window ``now`` falls in."""
    return int(now // window_seconds) * window_seconds


def retry_after(now: float, window_seconds: int) -> int:
    """Whole seconds until the window ``now`` falls in ends (at least 1)."""
    return max(1, math.ceil(window_start(now, window_seconds) + window_seconds - now))


def refuse(what: str, limit: int, now: float, window_seconds: int) -> RateLimited:
    """The 429 for a caller over ``limit`` requests per ``window_seconds``."""
    return RateLimited(
        f"too many requests for {what}: at most {limit} per {window_seconds} s",
        retry_after=retry_after(now, window_seconds),
        detail={"limit": limit, "window_seconds": window_seconds},
    )


class LocalRateLimiter:
    """Per-key fixed-window counters held in this process (thread-safe).

    Good for one process only; ``limit`` 0 turns it off. Keys from a finished window are
    dropped whenever a new window starts, so memory stays bounded by one window's callers.
    """

    def __init__(
        self, limit: int, window_seconds: int = 1, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}

    def hit(self, key: str, what: str) -> None:
        """Count one request for ``key``; raise :class:`RateLimited` past the limit."""
        if self.limit <= 0:
            return
        now = self._clock()
        start = window_start(now, self.window_seconds)
        with self._lock:
            if start != self._window:
                self._window = start
                self._counts.clear()
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
        if n > self.limit:
            raise refuse(what, self.limit, now, self.window_seconds)
