"""The one retry policy of every Splice service client, on stamina.

A call is retried only when it fails with :class:`Retryable`: a connection that never reached the
peer, an answer lost after an idempotent request reached it, or a 429/503 answer. Any other
failure (a 4xx refusal, a 500) goes straight back to the caller. Attempts are bounded; the waits
grow exponentially with jitter up to a cap, and a peer's ``Retry-After`` replaces the computed wait
(capped too, so a hostile peer cannot park a caller). Background loops that never give up (the
usage shipper, a model reload after a restart) take their waits from :meth:`RetryPolicy.wait`,
which honours ``Retry-After`` the same way.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import stamina

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 503})
"""Answers that say "not now": the request was not applied and may be sent again."""


class Retryable(Exception):
    """A failure worth another attempt.

    ``retry_after`` is the wait (seconds) the peer asked for, if it did; ``response`` the answer
    that said so (429/503), for the caller to raise from once the attempts are spent.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.response = response

    @classmethod
    def of(cls, resp: httpx.Response) -> Retryable:
        """A 429/503 answer as a retryable failure carrying its ``Retry-After``."""
        return cls(f"HTTP {resp.status_code}", retry_after=retry_after(resp), response=resp)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff, jitter and ``Retry-After``.

    ``retries`` extra attempts after the first; waits start near ``backoff`` seconds and never
    exceed ``backoff_cap`` (a ``Retry-After`` longer than the cap is cut to it).
    """

    retries: int = 3
    backoff: float = 0.1
    backoff_cap: float = 10.0

    def _hook(self, exc: Exception) -> bool | float:
        if not isinstance(exc, Retryable):
            return False
        if exc.retry_after is None:
            return True
        return min(self.backoff_cap, max(exc.retry_after, 0.0))

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it returns or fails with something not :class:`Retryable`;
        after ``retries + 1`` attempts the last :class:`Retryable` is raised."""
        async for retrying in stamina.retry_context(
            on=self._hook,
            attempts=self.retries + 1,
            timeout=None,
            wait_initial=self.backoff,
            wait_max=self.backoff_cap,
            wait_jitter=self.backoff,
        ):
            with retrying:
                return await attempt()
        raise AssertionError("unreachable")  # pragma: no cover: stamina raises the last failure

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row (for loops that never give up):
        exponential from ``backoff``, capped, half of it jittered; a ``Retry-After`` replaces it
        (capped)."""
        if retry_after is not None:
            return min(self.backoff_cap, max(retry_after, 0.0))
        ceiling = min(self.backoff_cap, self.backoff * 2.0 ** min(failures, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds a 429/503 answer asks the caller to wait (``Retry-After``: seconds or a date)."""
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
