"""A feature party's side of incremental alignment at serving time (docs/adr/0010).

Per job the party keeps a *serving key book*: ``H(y)^k`` for every key of its live table under
the job's serving scalar ``k`` (from its private job key; never sent). The book is built in
blocks, one per table version, each sorted by point value: its order reveals nothing about the
table's, and a restarted party rebuilds the same book from its table and job key. A round
(:mod:`services.engine.psi.serving`) evaluates the label party's freshly blinded points (step 1,
counted against the contract's alignment limit of the label party, durably) and then answers the
handles of the positions it names (step 3): a row that has a handle keeps it, another gets the
next one. A retried message (same bytes) gets the stored answer.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence

from services.engine import psi
from services.engine.psi import serving
from services.party.alignment import psi_failure
from services.party.serving_store import ServingStore
from services.protocol.errors import ErrorCode, Unprocessable

_KEPT = 64
"""Open rounds and stored answers kept per job (older ones are forgotten)."""


class ServingBook:
    """One job's serving key book at a feature party, and its rounds."""

    def __init__(
        self, job_id: str, scalar: bytes, pool: psi.PsiPool, *, limit: int, store: ServingStore
    ) -> None:
        self.job_id = job_id
        self._scalar = scalar
        self._pool = pool
        self.limit = limit
        """The most keys the label party may ask in this job's serving rounds, in all."""
        self._store = store
        self._points: list[bytes] = []
        self._rows: list[int] = []
        """Position in the book -> row of the live table."""
        self._covered = 0
        self._rounds: OrderedDict[bytes, int] = OrderedDict()
        """Open rounds: session -> keys asked."""
        self._answers: OrderedDict[str, bytes] = OrderedDict()
        self.queried = store.asked(job_id)

    @property
    def size(self) -> int:
        """Points in the book (rows of the live table it covers)."""
        return len(self._points)

    def cover(self, keys_by_row: Sequence[str], boundaries: Sequence[int]) -> None:
        """Extend the book to every row of the live table: one block per table version not yet
        covered (``boundaries``: the row count after each version)."""
        for end in boundaries:
            if end <= self._covered:
                continue
            start = self._covered
            block = serving.key_book(self._scalar, keys_by_row[start:end], self._pool)
            ordered = sorted(range(len(block)), key=block.__getitem__)
            self._points.extend(block[i] for i in ordered)
            self._rows.extend(start + i for i in ordered)
            self._covered = end

    def receive(
        self, body: bytes, assign: Callable[[list[int]], list[int]], since: int = 0
    ) -> tuple[bytes, bool]:
        """Answer one round message: step 1 -> the evaluated points and the book's points from
        position ``since`` on (octets), step 3 -> JSON ``{"handles": [...]}`` (``assign`` maps
        table rows to handles). The second value says whether the answer is the JSON one."""
        digest = hashlib.sha256(body + since.to_bytes(8, "little")).hexdigest()
        if digest in self._answers:
            answer = self._answers[digest]
            return answer, answer.startswith(b"{")
        try:
            message = psi.decode(body)
            if message.job_id != self.job_id:
                raise psi.PsiJobMismatch("the message names another job")
            if isinstance(message, psi.BlindedKeys):
                answer = self._evaluate(message, since)
            elif isinstance(message, psi.Intersection):
                answer = self._handles(message, assign)
            else:
                raise psi.PsiMalformedError("a serving round takes steps 1 and 3 only")
        except psi.PsiError as exc:
            raise psi_failure(exc) from exc
        self._answers[digest] = answer
        while len(self._answers) > _KEPT:
            self._answers.popitem(last=False)
        return answer, answer.startswith(b"{")

    def _evaluate(self, query: psi.BlindedKeys, since: int) -> bytes:
        if query.session in self._rounds:
            raise psi.PsiReplayError("this round was already asked")
        if self.queried + query.count > self.limit:
            raise Unprocessable(
                f"this round asks {query.count} key(s); {self.queried} of the contract's "
                f"{self.limit} for the label party's serving rounds are used",
                code=ErrorCode.PSI_SET_TOO_LARGE,
                detail={"asked": query.count, "used": self.queried, "limit": self.limit},
            )
        book = b"".join(self._points[min(since, len(self._points)) :])
        reply = serving.evaluate(self._scalar, query, book, self._pool)
        self._store.ask(self.job_id, query.count)
        self.queried += query.count
        self._rounds[query.session] = query.count
        while len(self._rounds) > _KEPT:
            self._rounds.popitem(last=False)
        return reply.encode()

    def _handles(self, notice: psi.Intersection, assign: Callable[[list[int]], list[int]]) -> bytes:
        asked = self._rounds.get(notice.session)
        if asked is None:
            raise psi.PsiReplayError("no open round of this session (step 1 first)")
        positions = notice.indices()
        if len(positions) > asked:
            raise psi.PsiCountError(f"{len(positions)} positions for {asked} keys asked")
        if len(set(positions)) != len(positions):
            raise psi.PsiDuplicateError("positions repeat")
        if positions and max(positions) >= len(self._rows):
            raise psi.PsiCountError(f"position {max(positions)} is beyond the key book")
        handles = assign([self._rows[p] for p in positions])
        del self._rounds[notice.session]
        return json.dumps({"handles": handles}).encode()


__all__ = ["ServingBook"]
