"""Revocations and suspensions take effect at once: this party subscribes to the registry.

A background task long-polls the registry's revocation feed (``GET /v1/revocations``,
docs/adr/0005-revocation-feed.md) as this party's client and applies each change as it arrives,
within the registry's poll interval (0.1 s by default) of the change being committed:

* a revoked access token is refused from then on (the liveness cache holds the refusal);
* a revoked client, a suspended or reinstated organisation: that client's or organisation's
  tokens (and the organisation's contract standing) are asked about again before they are
  honoured, other callers keep their cached answers;
* a contract's standing changed (suspended, reinstated, terminated, expired, amended, a model
  deployed, retired or rolled back): the next call under it asks the registry again.

Open step streams (WebSockets) the change concerns are closed at once (1008), without waiting
for their next message. The short-lived caches stay, as the fallback while the feed is down or
the registry unreachable: then changes take effect within the cache's time to live, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from services.party.auth import Authorizer
from services.party.registry_link import RegistryLink
from services.protocol.errors import SpliceError
from services.protocol.retry import RetryPolicy

log = logging.getLogger("splice.party.revocations")
PARTY_CALL = "party:call"
ENDING = frozenset({"contract.suspended", "contract.terminated", "contract.expired"})
"""Contract changes after which no call under the contract is honoured."""


class Closable(Protocol):
    """An open connection authorized by a token's claims (a step stream)."""

    claims: dict[str, Any] | None

    async def close(self, reason: str) -> None:
        """Close it, telling the peer ``reason``."""


class OpenStreams:
    """The step streams this party has open, so a revocation can close them at once."""

    def __init__(self) -> None:
        self._open: set[Closable] = set()

    def add(self, stream: Closable) -> None:
        """A stream opened."""
        self._open.add(stream)

    def discard(self, stream: Closable) -> None:
        """A stream ended."""
        self._open.discard(stream)

    def __len__(self) -> int:
        return len(self._open)

    async def close_where(self, concerned: Callable[[dict[str, Any]], bool], reason: str) -> int:
        """Close every open stream whose claims ``concerned`` accepts; how many."""
        doomed = [s for s in self._open if s.claims is not None and concerned(s.claims)]
        for stream in doomed:
            self._open.discard(stream)
            with contextlib.suppress(Exception):
                await stream.close(reason)
        return len(doomed)


class RevocationFeed:
    """Subscribes to the registry's revocation feed and applies each change."""

    def __init__(
        self,
        link: RegistryLink,
        streams: OpenStreams,
        *,
        wait: float = 10.0,
        backoff_cap: float = 5.0,
    ) -> None:
        self.link = link
        self.authorizer: Authorizer = link.authorizer
        self.streams = streams
        self.wait = wait
        self.backoff_cap = backoff_cap
        self.cursor: int | None = None
        self.connected = False
        self.applied = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the subscription (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="revocation-feed")

    async def stop(self) -> None:
        """End the subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False

    async def poll(self) -> None:
        """One round: the cursor to start from, or the changes after it (waiting up to
        ``wait`` seconds for one), applied."""
        issuer = self.link.settings.issuer
        assert issuer is not None
        params: dict[str, str] = {}
        if self.cursor is not None:
            params = {"after": str(self.cursor), "wait": str(self.wait)}
        for fresh in (False, True):
            token = await self.link.tokens.token(issuer, PARTY_CALL, fresh=fresh)
            resp = await self.link.http.get(
                "/v1/revocations",
                params=params,
                headers={"authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(self.wait + 15, connect=10.0),
            )
            if resp.status_code != 401:
                break
        if resp.status_code != 200:
            raise RuntimeError(f"the registry's revocation feed answered {resp.status_code}")
        doc = resp.json()
        if self.cursor is None:
            # From now on: what happened before is what the registry answers when asked.
            self.authorizer.callers_changed()
            self.authorizer.standing.drop()
        for change in doc.get("events", []):
            await self.apply(change)
        self.cursor = int(doc["last"])
        self.connected = True

    async def apply(self, change: dict[str, Any]) -> None:
        """Make one change take effect here."""
        kind, action = change.get("kind"), change.get("action")
        jti, client = change.get("jti"), change.get("client_id")
        org, contract = change.get("org_id"), change.get("contract_id")
        self.applied += 1
        if kind == "token_revoked" and isinstance(jti, str):
            self.authorizer.token_revoked(jti)
            await self.streams.close_where(lambda c: c.get("jti") == jti, "token revoked")
        elif kind in ("client_revoked", "organisation_suspended", "organisation_reinstated"):
            self.authorizer.callers_changed(
                client_id=client if isinstance(client, str) and kind == "client_revoked" else None,
                org_id=org if isinstance(org, str) and kind != "client_revoked" else None,
            )
            if kind == "client_revoked":
                await self.streams.close_where(
                    lambda c: c.get("client_id") == client, "client revoked"
                )
            elif kind == "organisation_suspended":
                await self.streams.close_where(
                    lambda c: c.get("org_id") == org, "organisation suspended"
                )
        elif kind == "contract_changed" and isinstance(contract, str):
            self.authorizer.contract_changed(contract)
            if action in ENDING:
                await self.streams.close_where(
                    lambda c: c.get("contract_id") == contract, f"contract {action}"
                )
        log.info("registry change %s applied (%s)", change.get("seq"), action)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, SpliceError, RuntimeError, ValueError, KeyError) as exc:
                self.connected = False
                failures += 1
                wait = RetryPolicy(backoff=0.25, backoff_cap=self.backoff_cap).wait(failures)
                log.warning("revocation feed unavailable (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    def health(self) -> dict[str, Any]:
        """For the party's health document."""
        return {
            "connected": self.connected,
            "cursor": self.cursor,
            "applied": self.applied,
            "open_streams": len(self.streams),
        }
