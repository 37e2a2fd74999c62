"""The label party's side of incremental alignment at serving time (docs/adr/0010).

A prediction naming keys the job's alignment did not share (new paste lots, or lots the feature
party did not hold at training) runs one round per feature party for just those keys
(:mod:`services.engine.psi.serving`): fresh scalar, session and order per round, no key on the
wire. The feature party's serving key book comes with the first round's answer, then only its
new points (a new table version). Answers are cached per (job, party, key) for ``ttl`` seconds,
both "held, handle h" and "not held": a cached key costs no round, an expired one is asked
again (the feature party answers the same handle for a row that has one). Every key asked
counts at the feature party against the contract's alignment limit of this party; every key a
caller names counts against that caller's serving allowance before any round (:mod:`.quota`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import numpy as np

from services.engine import psi
from services.engine.psi import group, serving
from services.party.inference.rows import RequestRows
from services.protocol.errors import PeerError
from services.protocol.peers import SegmentClient

NOT_HELD = -1
_PRUNE_AT = 100_000
"""Cached answers per (job, party) above which the expired ones are dropped."""
_INLINE_KEYS = 64
"""Rounds of at most this many keys run their exponentiations on the event loop (~0.1 ms per
key; a thread hop costs more)."""


class _Party:
    """This party's copy of one feature party's key book for one job, and cached answers."""

    def __init__(self) -> None:
        self.book: dict[bytes, int] = {}
        self.answers: dict[str, tuple[int, float]] = {}
        """Key -> (handle or NOT_HELD, when the answer expires)."""
        self.lock = asyncio.Lock()


class IncrementalAligner:
    """Aligns a request's unaligned keys with each feature party, caching the handles."""

    def __init__(
        self,
        pool: psi.PsiPool | None,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.ttl = ttl
        self.clock = clock
        self._parties: dict[tuple[str, str], _Party] = {}
        self.rounds = 0
        """Rounds run (for operators and tests)."""
        self.keys_asked = 0

    def forget(self, job_id: str) -> None:
        """Drop every cached answer of a job (its model is no longer served)."""
        for key in [k for k in self._parties if k[0] == job_id]:
            del self._parties[key]

    async def complete(
        self, job_id: str, clients: dict[str, SegmentClient], rows: RequestRows
    ) -> None:
        """Fill the handles of ``rows`` the job's alignment left at -1 (keys the feature party
        does not hold stay at -1)."""
        for name, handles in rows.handles.items():
            missing = np.flatnonzero(handles < 0)
            if missing.size == 0:
                continue
            keys = [rows.keys[name][int(i)] for i in missing]
            found = await self._handles(job_id, name, clients[name], keys)
            for i, key in zip(missing, keys, strict=True):
                handles[int(i)] = found.get(key, NOT_HELD)

    async def _handles(
        self, job_id: str, name: str, client: SegmentClient, keys: list[str]
    ) -> dict[str, int]:
        party = self._parties.setdefault((job_id, name), _Party())
        async with party.lock:
            now = self.clock()
            fresh = {k: a[0] for k in keys if (a := party.answers.get(k)) and a[1] > now}
            ask = [k for k in dict.fromkeys(keys) if k not in fresh]
            if ask:
                got = await self._round(job_id, name, client, party, ask)
                expires = self.clock() + self.ttl
                if len(party.answers) > _PRUNE_AT:  # forget expired answers
                    party.answers = {k: a for k, a in party.answers.items() if a[1] > now}
                for k in ask:
                    party.answers[k] = (got.get(k, NOT_HELD), expires)
                    fresh[k] = got.get(k, NOT_HELD)
            return {k: h for k, h in fresh.items() if h != NOT_HELD}

    async def _round(
        self, job_id: str, name: str, client: SegmentClient, party: _Party, keys: list[str]
    ) -> dict[str, int]:
        """One round for ``keys``: the handle of each key the feature party holds."""
        query = serving.ServingQuery(job_id, keys, self.pool)
        small = len(keys) <= _INLINE_KEYS
        start = query.start() if small else await asyncio.to_thread(query.start)
        reply = await client.serving_psi(job_id, start.encode(), since=len(party.book))
        try:
            message = psi.decode(reply)
            if not isinstance(message, psi.FeatureReply):
                raise psi.PsiMalformedError("expected the evaluated points (step 2)")
            first = len(party.book)
            for i, point in enumerate(group.split(message.feature_points)):
                party.book.setdefault(point, first + i)
            if len(party.book) != first + message.feature_count:
                raise psi.PsiDuplicateError("the key book repeats a point")
            if small:
                matched = query.finish(message, party.book)
            else:
                matched = await asyncio.to_thread(query.finish, message, party.book)
        except psi.PsiError as exc:
            raise PeerError(f"party {name} sent an unusable serving round reply: {exc}") from exc
        self.rounds += 1
        self.keys_asked += len(query.keys)
        if not matched.positions:
            return {}
        answer = json.loads(await client.serving_psi(job_id, matched.notice.encode()))
        handles = answer.get("handles") if isinstance(answer, dict) else None
        if not isinstance(handles, list) or len(handles) != len(matched.positions):
            raise PeerError(f"party {name} answered the wrong number of handles")
        out: dict[str, int] = {}
        for key, handle in zip(matched.keys, handles, strict=True):
            if not isinstance(handle, int) or handle < 0:
                raise PeerError(f"party {name} answered an invalid handle")
            out[key] = handle
        return out


__all__ = ["IncrementalAligner"]
