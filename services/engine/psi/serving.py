"""Incremental alignment at serving time: a few new keys against a feature party's whole key book
(docs/adr/0010-incremental-alignment.md).

The training-time PSI (:mod:`.protocol`) costs ``O(|X| + |Y|)`` exponentiations per run; asking
it again for one new paste lot against 100,000 supplier lots would take seconds. At serving time
the feature party F keeps, per job, a secret scalar ``k`` (from its private job key, never sent)
and publishes its *serving key book*: ``H(y)^k`` for every key ``y`` of its table, in an order
that reveals nothing (each table version's points sorted by value, versions appended). A round
for new label keys ``x`` is an oblivious evaluation of ``H(.)^k``:

1. L draws a fresh scalar ``a`` and a fresh session: :class:`~.messages.BlindedKeys` of
   ``H(x)^a`` (:meth:`ServingQuery.start`).
2. F answers ``H(x)^{ak}`` in the same order with the key book's points L lacks (L says how
   many it has) (:func:`evaluate`, a :class:`~.messages.FeatureReply`), and counts the points
   against the contract's limit.
3. L removes ``a`` (``H(x)^k``), finds each in the key book (:meth:`ServingQuery.finish`) and
   names the matching positions (:class:`~.messages.Intersection`); F answers their handles.

F sees only points blinded with a fresh ``a`` per round: it cannot tell which keys L asked
or link two rounds. L learns, for each key it asks (counted), whether F holds it; the key
book alone tests nothing (L cannot compute ``H(x)^k`` without F). Costs per round: ``|X|``
exponentiations on each side plus the new points of the key book (once per table version).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import rbcl

from services.engine.psi import group
from services.engine.psi.errors import PsiCountError, PsiJobMismatch, PsiReplayError
from services.engine.psi.messages import SESSION_SIZE, BlindedKeys, FeatureReply, Intersection
from services.engine.psi.pool import PsiPool


def serving_scalar(secret64: bytes) -> bytes:
    """F's serving scalar from 64 private bytes (a job key stream): reduced mod ``l``."""
    if len(secret64) != 64:
        raise ValueError("a serving scalar is reduced from 64 bytes")
    scalar: bytes = rbcl.crypto_core_ristretto255_scalar_reduce(secret64)
    return scalar


def key_book(scalar: bytes, keys: Sequence[str], pool: PsiPool | None = None) -> list[bytes]:
    """``H(y)^k`` for each of ``keys``, in their order (F sorts each version's block by value)."""
    blob = (pool or PsiPool(1)).hash_multiply(scalar, [k.encode() for k in keys])
    return group.split(blob)


def evaluate(
    scalar: bytes, query: BlindedKeys, book: bytes = b"", pool: PsiPool | None = None
) -> FeatureReply:
    """Step 2 at F: ``H(x)^{ak}`` for each point of the query, in its order (points checked:
    the identity, duplicates and non-group encodings are refused), and ``book``: the key book's
    points L does not have yet (as the training PSI's step 2 carries F's blinded keys)."""
    group.check_points(query.points, "blinded keys")
    points = (pool or PsiPool(1)).multiply(scalar, query.points)
    return FeatureReply(query.job_id, query.session, points, book)


@dataclass(frozen=True, slots=True)
class Matched:
    """L's result of one round: the key-book position of each asked key F holds."""

    positions: dict[str, int]
    """Key -> position in F's key book (keys F does not hold are absent)."""
    notice: Intersection
    """Step 3: the positions, in the order of ``keys``."""

    @property
    def keys(self) -> list[str]:
        """The matched keys, in the order the notice names their positions."""
        return list(self.positions)


class ServingQuery:
    """L's side of one round, with fresh secrets (scalar, session and order of the keys)."""

    def __init__(self, job_id: str, keys: Sequence[str], pool: PsiPool | None = None) -> None:
        distinct = list(dict.fromkeys(keys))
        if not distinct:
            raise PsiCountError("a serving round needs at least one key")
        secrets.SystemRandom().shuffle(distinct)
        self.job_id = job_id
        self.keys = distinct
        self.session = secrets.token_bytes(SESSION_SIZE)
        self._scalar = group.new_scalar()
        self._pool = pool or PsiPool(1)
        self._started = False

    def start(self) -> BlindedKeys:
        """Step 1: ``H(x)^a`` in this round's random order."""
        if self._started:
            raise PsiReplayError("step 1 of this round was already sent")
        self._started = True
        points = self._pool.hash_multiply(self._scalar, [k.encode() for k in self.keys])
        return BlindedKeys(self.job_id, self.session, points)

    def finish(self, reply: FeatureReply, book: Mapping[bytes, int]) -> Matched:
        """Step 3: remove ``a`` from F's answer and look each ``H(x)^k`` up in the key book
        (the caller added the reply's new book points to ``book`` first)."""
        if not self._started:
            raise PsiReplayError("the reply arrived before step 1")
        if reply.job_id != self.job_id or reply.session != self.session:
            raise PsiJobMismatch("a reply of another job or round")
        n = len(reply.label_points) // group.POINT_SIZE
        if n != len(self.keys):
            raise PsiCountError(f"the reply holds {n} points, {len(self.keys)} were sent")
        group.check_points(reply.label_points, "evaluated keys")
        inverse: bytes = rbcl.crypto_core_ristretto255_scalar_invert(self._scalar)
        plain = group.split(self._pool.multiply(inverse, reply.label_points))
        positions = {k: book[p] for k, p in zip(self.keys, plain, strict=True) if p in book}
        blob = b"".join(p.to_bytes(4, "little") for p in positions.values())
        return Matched(positions, Intersection(self.job_id, self.session, blob))


__all__ = ["Matched", "ServingQuery", "evaluate", "key_book", "serving_scalar"]
