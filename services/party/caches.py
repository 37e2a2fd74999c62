"""Small caches of a party's registry answers: time-bounded entries, and the registry's JWK Set."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.protocol.errors import PeerError


@dataclass(slots=True)
class _Cached:
    value: Any
    until: float


@dataclass(slots=True)
class TtlCache:
    """A tiny time-bounded cache (per process; entries expire, so workers never disagree long).

    An expired entry is kept ``grace`` seconds longer for :meth:`stale`: what to fall back on
    while the source cannot be asked."""

    ttl: float
    grace: float = 0.0
    _items: dict[Any, _Cached] = field(default_factory=dict)

    def get(self, key: Any) -> Any | None:
        """The value for ``key`` while fresh, else None."""
        hit = self._items.get(key)
        now = time.monotonic()
        if hit is None or hit.until < now:
            if hit is not None and hit.until + self.grace < now:
                self._items.pop(key, None)
            return None
        return hit.value

    def stale(self, key: Any) -> Any | None:
        """The value for ``key`` while fresh or within the grace period after, else None."""
        hit = self._items.get(key)
        if hit is None or hit.until + self.grace < time.monotonic():
            return None
        return hit.value

    def drop(self, keep: Callable[[Any], bool] | None = None) -> int:
        """Forget entries (every one, or those whose key ``keep`` rejects), fresh or stale, so
        the next look-up asks the source again; how many were dropped."""
        doomed = [k for k in self._items if keep is None or not keep(k)]
        for key in doomed:
            self._items.pop(key, None)
        return len(doomed)

    def put(self, key: Any, value: Any) -> None:
        """Remember ``value`` for ``ttl`` seconds."""
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[key] = _Cached(value, time.monotonic() + self.ttl)


class JwksCache:
    """The registry's JWK Set, fetched on first use and again for an unknown ``kid``."""

    def __init__(self, http: httpx.AsyncClient, url: str, min_refetch_seconds: float = 5.0):
        self.http = http
        self.url = url
        self.min_refetch = min_refetch_seconds
        self._doc: dict[str, Any] | None = None
        self._fetched = -1e9

    async def get(self, *, refresh: bool = False) -> dict[str, Any]:
        """The key set; ``refresh`` fetches it again unless it was fetched moments ago."""
        stale = refresh and time.monotonic() - self._fetched >= self.min_refetch
        if self._doc is None or stale:
            try:
                resp = await self.http.get(self.url)
                resp.raise_for_status()
                doc = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise PeerError("the registry's key set is unavailable") from exc
            if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                raise PeerError("the registry's key set is malformed")
            self._doc, self._fetched = doc, time.monotonic()
        return self._doc
