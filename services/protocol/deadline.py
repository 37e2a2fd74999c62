"""Deadlines that travel with calls between services (``X-Splice-Deadline``).

The caller sends the milliseconds it is still willing to wait for an answer (the smaller of its
read timeout and the deadline of the work in progress, :func:`within`). The callee turns it into
a local monotonic deadline on arrival, so the two clocks never need to agree, and refuses work
whose deadline has passed (``504 deadline_exceeded``) instead of computing an answer nobody waits
for: on arrival, and again after waiting for a job's lock (:func:`check`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from services.protocol.bounds import MAX_DEADLINE_MS, MAX_INT_DIGITS
from services.protocol.errors import BadRequest, DeadlineExceeded

HEADER = "X-Splice-Deadline"

_deadline: ContextVar[float | None] = ContextVar("splice_deadline", default=None)
"""The monotonic time by which the work in progress must be done (``None``: no deadline)."""


def current() -> float | None:
    """The monotonic deadline of the work in progress, if any."""
    return _deadline.get()


@contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Run the block under a deadline ``seconds`` from now (kept if an outer one is sooner)."""
    if seconds is None:
        yield
        return
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining_ms(timeout: float | None) -> int | None:
    """Milliseconds to announce on a call that waits at most ``timeout`` seconds; raise
    :class:`DeadlineExceeded` if the work's deadline has already passed."""
    at = _deadline.get()
    left = None if at is None else at - time.monotonic()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the deadline passed before the call was sent")
    if timeout is not None:
        left = timeout if left is None else min(left, timeout)
    return None if left is None else max(1, int(left * 1000))


def accept(header: str | int | None) -> float | None:
    """The local deadline of an incoming call from its header (``None`` without one); raise
    :class:`DeadlineExceeded` if it has already passed, :class:`BadRequest` (400) for a value
    that is not a whole number of milliseconds up to :data:`MAX_DEADLINE_MS` (parsed without
    ever converting an unbounded number)."""
    if header is None:
        return None
    text = str(header).strip()
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_INT_DIGITS:
        raise _malformed(text)
    ms = int(text)
    if ms <= 0:
        raise DeadlineExceeded("the caller's deadline had passed when the call arrived")
    if ms > MAX_DEADLINE_MS:
        raise _malformed(text)
    return time.monotonic() + ms / 1000


def _malformed(value: str) -> BadRequest:
    return BadRequest(
        f"{HEADER} must be a whole number of milliseconds from 1 to {MAX_DEADLINE_MS}",
        detail={"header": HEADER, "max": MAX_DEADLINE_MS, "length": len(value)},
    )


def bind(at: float | None) -> None:
    """Make ``at`` the deadline of the current request (set by the service middleware)."""
    _deadline.set(at)


def check() -> None:
    """Raise :class:`DeadlineExceeded` if the current request's deadline has passed."""
    at = _deadline.get()
    if at is not None and time.monotonic() >= at:
        raise DeadlineExceeded("the caller's deadline passed before the work could start")
