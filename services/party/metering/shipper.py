"""Ship the usage outbox to the registry: in order, in batches, until it is empty.

A background task (started with the label party's app when a registry is configured) posts the
oldest pending events, up to ``batch_size`` at a time, to ``POST /v1/usage`` and removes from the
outbox what the registry answers as ``accepted`` or ``duplicates``; what it ``refused`` (too old,
over the contract's usage cap, ...) moves to the outbox's ``refused`` table, is logged and counted,
and is never retried. The event id is the idempotency key end to end, so a batch retried after a
lost answer counts once.

While the registry is unreachable or answers 5xx/429 (or refuses this party's credentials) the
task backs off (the one retry policy, :mod:`services.protocol.retry`: exponentially with jitter up
to ``backoff_cap`` seconds, or the registry's ``Retry-After``) and keeps every event.
A batch refused as a whole (400/413/422) is split until the offending event is alone; that one is
refused. When the outbox is empty the task sleeps until :meth:`UsageShipper.notify` (called for
every appended event) or ``idle_seconds``. :meth:`UsageShipper.stop` flushes what it can within
a time limit; whatever remains waits in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from services.party.metering.outbox import Outbox
from services.party.registry_link import RegistryLink
from services.protocol.errors import ErrorBody, SpliceError
from services.protocol.messages import (
    ObservationBatch,
    ServingObservation,
    UsageBatch,
    UsageEvent,
    UsageReceipt,
)
from services.protocol.retry import RETRY_STATUS, RetryPolicy, retry_after

log = logging.getLogger("splice.party.metering")
USAGE_WRITE = "usage:write"
Send = Callable[[list[Any]], Awaitable[httpx.Response]]
"""Posts a batch of records to the registry; its HTTP answer."""


def _poster(link: RegistryLink, path: str, body: Callable[[list[Any]], dict[str, Any]]) -> Send:
    async def send(records: list[Any]) -> httpx.Response:
        issuer = link.settings.issuer
        assert issuer is not None
        payload = body(records)
        resp: httpx.Response | None = None
        for fresh in (False, True):
            token = await link.tokens.token(issuer, USAGE_WRITE, fresh=fresh)
            headers = {"authorization": f"Bearer {token}"}
            resp = await link.http.post(path, json=payload, headers=headers)
            if resp.status_code != 401:
                break
        assert resp is not None
        return resp

    return send


def registry_sender(link: RegistryLink) -> Send:
    """``POST /v1/usage`` as this party's client (scope ``usage:write``); once more with a fresh
    token after a 401. Transport errors propagate."""

    def body(events: list[UsageEvent]) -> dict[str, Any]:
        return UsageBatch(events=events).model_dump(mode="json")

    return _poster(link, "/v1/usage", body)


def observation_sender(link: RegistryLink) -> Send:
    """``POST /v1/usage/observations``: a feature party's serving observations, as
    :func:`registry_sender` sends usage events."""

    def body(observations: list[ServingObservation]) -> dict[str, Any]:
        return ObservationBatch(observations=observations).model_dump(mode="json")

    return _poster(link, "/v1/usage/observations", body)


class _Retry(Exception):
    """Shipping failed for now; back off (``retry_after`` s if the registry said) and try again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(slots=True)
class ShipperStats:
    """What the shipper did since it started."""

    shipped: int = 0
    duplicates: int = 0
    refused: int = 0
    failures: int = 0
    last_error: str | None = None
    last_success: datetime | None = None


class UsageShipper:
    """Drains an :class:`Outbox` (usage events, or serving observations) to the registry in the
    background."""

    def __init__(
        self,
        outbox: Outbox[Any],
        send: Send,
        *,
        batch_size: int = 500,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        idle_seconds: float = 60.0,
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.batch_size = batch_size
        self.policy = RetryPolicy(backoff=backoff_base, backoff_cap=backoff_cap)
        self.idle_seconds = idle_seconds
        self.stats = ShipperStats()
        self._size = batch_size
        self._attempt = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New events are in the outbox: ship them soon (at once unless backing off)."""
        self._wake.set()

    def start(self) -> None:
        """Start the background task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-shipper")

    @property
    def running(self) -> bool:
        """Whether the background task is alive."""
        return self._task is not None and not self._task.done()

    async def stop(self, flush_seconds: float = 5.0) -> None:
        """Stop the task, then ship what the registry takes within ``flush_seconds``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.drain(), flush_seconds)
        except (TimeoutError, _Retry) as exc:
            log.warning("%d usage event(s) stay in the outbox: %s", self.outbox.depth(), exc)

    async def drain(self) -> None:
        """Ship until the outbox is empty; :class:`_Retry` (internal) on the first failure."""
        while await self.ship_once():
            pass

    async def ship_once(self) -> bool:
        """Ship one batch; whether the outbox may hold more. Raises :class:`_Retry` when the
        registry cannot take it now."""
        events = await asyncio.to_thread(self.outbox.pending, self._size)
        if not events:
            return False
        try:
            resp = await self.send(events)
        except (httpx.TransportError, SpliceError) as exc:
            raise self._failed(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 200:
            await self._settle(events, resp)
        elif resp.status_code in (400, 413, 422):
            await self._rejected(events, resp)
        else:  # 5xx, 429, 401/403 (credentials: an operator fixes them), 404 (no endpoint yet)
            reason = f"HTTP {resp.status_code}: {_error(resp).message}"
            raise self._failed(
                reason, retry_after(resp) if resp.status_code in RETRY_STATUS else None
            )
        return self.outbox.depth() > 0

    async def _settle(self, events: list[Any], resp: httpx.Response) -> None:
        try:
            receipt = UsageReceipt.model_validate_json(resp.content)
        except ValidationError as exc:
            raise self._failed("the registry's usage answer is malformed") from exc
        ids = {self.outbox.key(e) for e in events}
        stored = [i for i in (*receipt.accepted, *receipt.duplicates) if i in ids]
        refused = [r for r in receipt.refused if r.event_id in ids]
        if not stored and not refused:
            raise self._failed("the registry answered about none of the events sent")
        await asyncio.to_thread(self.outbox.acknowledge, stored)
        if refused:
            for r in refused:
                log.error("registry refused usage event %s: %s %s", r.event_id, r.code, r.message)
            rows = [(r.event_id, r.code, r.message) for r in refused]
            self.stats.refused += await asyncio.to_thread(
                self.outbox.refuse, rows, datetime.now(UTC)
            )
        self.stats.shipped += len([i for i in receipt.accepted if i in ids])
        self.stats.duplicates += len([i for i in receipt.duplicates if i in ids])
        self.stats.last_success = datetime.now(UTC)
        self._size, self._attempt = self.batch_size, 0

    async def _rejected(self, events: list[Any], resp: httpx.Response) -> None:
        """A batch refused as a whole: split it until the offending event is found alone."""
        err = _error(resp)
        if len(events) > 1:
            self._size = max(1, len(events) // 2)
            log.warning("the registry refused a batch of %d (%s): splitting", len(events), err.code)
            return
        (event,) = events
        key = self.outbox.key(event)
        log.error("registry refused usage record %s: %s %s", key, err.code, err.message)
        row = [(key, err.code, err.message)]
        self.stats.refused += await asyncio.to_thread(self.outbox.refuse, row, datetime.now(UTC))
        self._size = self.batch_size

    def _failed(self, reason: str, retry_after: float | None = None) -> _Retry:
        self.stats.failures += 1
        self.stats.last_error = reason
        return _Retry(reason, retry_after)

    def delay(self, retry_after: float | None = None) -> float:
        """The next backoff (the one retry policy's): exponential in the failures in a row,
        capped, half of it jittered; the registry's ``Retry-After`` instead when it sent one."""
        wait = self.policy.wait(self._attempt, retry_after)
        self._attempt = min(self._attempt + 1, 30)
        return wait

    async def _run(self) -> None:
        while True:
            try:
                more = await self.ship_once()
            except _Retry as exc:
                wait = self.delay(exc.retry_after)
                log.warning("usage shipping failed (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                continue
            except Exception:  # never let the task die: events must keep flowing
                self.stats.failures += 1
                log.exception("usage shipping failed unexpectedly")
                await asyncio.sleep(self.delay())
                continue
            if more:
                continue
            self._wake.clear()
            if self.outbox.depth():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_seconds)

    def health(self) -> dict[str, Any]:
        """Counters for the party's health document."""
        s = self.stats
        return {
            "running": self.running,
            "shipped": s.shipped,
            "duplicates": s.duplicates,
            "refused": s.refused,
            "failures": s.failures,
            "last_error": s.last_error,
            "last_success": None if s.last_success is None else s.last_success.isoformat(),
        }


def _error(resp: httpx.Response) -> ErrorBody:
    try:
        return ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        return ErrorBody(code=f"http_{resp.status_code}", message=resp.text[:200])
