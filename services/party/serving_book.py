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
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from services.engine import psi
from services.engine.checkpoint import atomic_write
from services.engine.psi import serving
from services.party.alignment import psi_failure
from services.protocol.errors import ErrorCode, Unprocessable

BOOK_FILE = "serving-book.json"
"""Keys queried so far in this job's serving rounds (the count the limit applies to)."""
_KEPT = 64
"""Open rounds and stored answers kept per job (older ones are forgotten)."""
_U32 = struct.Struct("<I")


class ServingBook:
    """One job's serving key book at a feature party, and its rounds."""

    def __init__(
        self, job_id: str, scalar: bytes, pool: psi.PsiPool, *, limit: int, directory: Path
    ) -> None:
        self.job_id = job_id
        self._scalar = scalar
        self._pool = pool
        self.limit = limit
        """The most keys the label party may ask in this job's serving rounds, in all."""
        self._directory = directory
        self._points: list[bytes] = []
        self._rows: list[int] = []
        """Position in the book -> row of the live table."""
        self._covered = 0
        self._rounds: OrderedDict[bytes, int] = OrderedDict()
        """Open rounds: session -> keys asked."""
        self._answers: OrderedDict[str, bytes] = OrderedDict()
        stored = directory / BOOK_FILE
        self.queried = int(json.loads(stored.read_bytes())["queried"]) if stored.is_file() else 0

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

    def points(self, since: int) -> bytes:
        """``u32 total | points from position since`` (since beyond the end: none)."""
        since = max(0, min(since, len(self._points)))
        return _U32.pack(len(self._points)) + b"".join(self._points[since:])

    def receive(self, body: bytes, assign: Callable[[list[int]], list[int]]) -> tuple[bytes, bool]:
        """Answer one round message: step 1 -> the evaluated points (octets), step 3 -> JSON
        ``{"handles": [...]}`` (``assign`` maps table rows to handles). The second value says
        whether the answer is the JSON one."""
        digest = hashlib.sha256(body).hexdigest()
        if digest in self._answers:
            answer = self._answers[digest]
            return answer, answer.startswith(b"{")
        try:
            message = psi.decode(body)
            if message.job_id != self.job_id:
                raise psi.PsiJobMismatch("the message names another job")
            if isinstance(message, psi.BlindedKeys):
                answer = self._evaluate(message)
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

    def _evaluate(self, query: psi.BlindedKeys) -> bytes:
        if query.session in self._rounds:
            raise psi.PsiReplayError("this round was already asked")
        if self.queried + query.count > self.limit:
            raise Unprocessable(
                f"this round asks {query.count} key(s); {self.queried} of the contract's "
                f"{self.limit} for the label party's serving rounds are used",
                code=ErrorCode.PSI_SET_TOO_LARGE,
                detail={"asked": query.count, "used": self.queried, "limit": self.limit},
            )
        reply = serving.evaluate(self._scalar, query, self._pool)
        self.queried += query.count
        atomic_write(self._directory / BOOK_FILE, json.dumps({"queried": self.queried}).encode())
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


__all__ = ["BOOK_FILE", "ServingBook"]
