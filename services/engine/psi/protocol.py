"""The two parties of one PSI run: :class:`LabelParty` (L) and :class:`FeatureParty` (F).

1. ``L.start()`` -> :class:`BlindedKeys`: ``H(x)^a`` for L's distinct keys, in a random order.
2. ``F.reply(blinded)`` -> :class:`FeatureReply`: ``(H(x)^a)^b`` in that order, ``H(y)^b`` for
   F's distinct keys in a random order.
3. ``L.finish(reply)`` -> (:class:`Intersection`, L's :class:`Alignment`): L matches
   ``(H(y)^b)^a`` against ``H(x)^ab`` and tells F the matching positions of F's list.
4. ``F.finish(intersection)`` -> F's :class:`Alignment`.

Both alignments name the shared keys by the same handles ``0..k-1`` (in L's random order):
``alignment.keys[h]`` is this party's key for handle ``h``. Scalars and orders are fresh per
party object, so two runs (jobs) encode the same key differently. Each method validates the
message fully (job, session, step, counts, points) before any secret-dependent work and before the
session advances: a refused message leaves the party as it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.engine.psi import group
from services.engine.psi.errors import (
    PsiCountError,
    PsiDuplicateError,
    PsiJobMismatch,
    PsiLimitError,
    PsiReplayError,
)
from services.engine.psi.messages import (
    MAX_ITEMS,
    SESSION_SIZE,
    BlindedKeys,
    FeatureReply,
    Intersection,
    PsiMessage,
)
from services.engine.psi.pool import PsiPool


@dataclass(frozen=True)
class Alignment:
    """One party's view of the intersection: ``keys[h]`` is its key for handle ``h``.

    ``local_size`` counts this party's distinct keys, ``peer_size`` the other party's; with
    ``size`` these are the only figures meant to leave the party (e.g. to the registry).
    """

    job_id: str
    keys: tuple[str, ...]
    local_size: int
    peer_size: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {k: h for h, k in enumerate(self.keys)})

    @property
    def size(self) -> int:
        """Number of shared keys (handles are ``0..size-1``)."""
        return len(self.keys)

    def handle(self, key: str) -> int | None:
        """The handle of a key, or ``None`` when the key is not shared."""
        return self._index.get(key)


def _distinct_shuffled(keys: Iterable[str], limit: int) -> list[str]:
    """Distinct keys in a uniformly random order (a secret of this run), at most ``limit``."""
    distinct = list(dict.fromkeys(keys))
    for k in distinct:
        if not isinstance(k, str):
            raise TypeError(f"PSI keys must be str, got {type(k).__name__}")
    if len(distinct) > MAX_ITEMS:
        raise PsiCountError(f"{len(distinct)} keys exceed the limit of {MAX_ITEMS}")
    if len(distinct) > limit:
        raise PsiLimitError(
            f"this party holds {len(distinct)} distinct keys; the contract allows it {limit}"
        )
    secrets.SystemRandom().shuffle(distinct)
    return distinct


def _check_peer(count: int, limit: int, who: str) -> None:
    """Refuse a peer set above its limit (before any work on it)."""
    if count > limit:
        raise PsiLimitError(f"the {who} announced {count} keys; the contract allows it {limit}")


class _Party:
    def __init__(
        self,
        job_id: str,
        keys: Iterable[str],
        pool: PsiPool | None = None,
        *,
        max_own: int = MAX_ITEMS,
        max_peer: int = MAX_ITEMS,
    ) -> None:
        """``max_own``: the most distinct keys this party may bring (checked here, before any
        hashing); ``max_peer``: the most the other party may announce."""
        self.job_id = job_id
        self.max_peer = max_peer
        """The most distinct keys the other party may bring (checked on its message)."""
        self._keys = _distinct_shuffled(keys, max_own)
        self._scalar = group.new_scalar()
        self._pool = pool or PsiPool(1)
        self._done: set[int] = set()
        self._peer_size = 0
        self.session: bytes | None = self._new_session()

    def _new_session(self) -> bytes | None:
        """The label party draws the run's session nonce; the feature party adopts it."""
        return None

    @property
    def size(self) -> int:
        """Number of distinct local keys."""
        return len(self._keys)

    def _encoded_keys(self) -> list[bytes]:
        return [k.encode() for k in self._keys]

    def _admit(self, msg: object, kind: type[PsiMessage], needs: int | None) -> None:
        """Refuse a message of another job/session, a replayed step or one out of order."""
        if not isinstance(msg, kind):
            raise PsiReplayError(f"expected a step-{kind.step} message, got {type(msg).__name__}")
        if msg.job_id != self.job_id:
            raise PsiJobMismatch(f"message of job {msg.job_id!r}, this is job {self.job_id!r}")
        if self.session is not None and msg.session != self.session:
            raise PsiJobMismatch("message of another PSI session of this job")
        if kind.step in self._done:
            raise PsiReplayError(f"step {kind.step} of this session was already consumed")
        if needs is not None and needs not in self._done:
            raise PsiReplayError(f"step {kind.step} arrived before step {needs}")


class LabelParty(_Party):
    """The label party: learns which of its keys the feature party holds."""

    def _new_session(self) -> bytes:
        return secrets.token_bytes(SESSION_SIZE)

    def start(self) -> BlindedKeys:
        """Step 1: the blinded distinct keys, in this run's random order."""
        assert self.session is not None
        if 1 in self._done:
            raise PsiReplayError("step 1 of this session was already sent")
        points = self._pool.hash_multiply(self._scalar, self._encoded_keys())
        self._done.add(1)
        return BlindedKeys(self.job_id, self.session, points)

    def finish(self, reply: FeatureReply) -> tuple[Intersection, Alignment]:
        """Step 3: match, and build the message telling F which of its positions are shared."""
        self._admit(reply, FeatureReply, needs=1)
        n = len(reply.label_points) // group.POINT_SIZE
        if n != self.size:
            raise PsiCountError(f"reply holds {n} double-blinded keys, {self.size} were sent")
        _check_peer(reply.feature_count, self.max_peer, "feature party")
        ours = group.check_points(reply.label_points, "double-blinded keys")
        group.check_points(reply.feature_points, "feature keys")
        self._done.add(2)
        try:
            theirs = self._pool.multiply(self._scalar, reply.feature_points)
        except BaseException:
            self._done.discard(2)
            raise
        where = {p: j for j, p in enumerate(group.split(theirs))}
        if len(where) != reply.feature_count:
            self._done.discard(2)
            raise PsiDuplicateError("feature keys collide after blinding")
        shared = [(x, where[p]) for x, p in zip(self._keys, ours, strict=True) if p in where]
        self._peer_size = reply.feature_count
        positions = b"".join(j.to_bytes(4, "little") for _, j in shared)
        assert self.session is not None
        alignment = Alignment(self.job_id, tuple(x for x, _ in shared), self.size, self._peer_size)
        return Intersection(self.job_id, self.session, positions), alignment


class FeatureParty(_Party):
    """The feature party: learns only ``|X|`` and which of its keys it must serve."""

    def reply(self, blinded: BlindedKeys) -> FeatureReply:
        """Step 2: re-blind L's points and blind this party's keys (in a random order)."""
        self._admit(blinded, BlindedKeys, needs=None)
        _check_peer(blinded.count, self.max_peer, "label party")
        group.check_points(blinded.points, "blinded keys")
        self._done.add(1)
        try:
            label = self._pool.multiply(self._scalar, blinded.points)
            feature = self._pool.hash_multiply(self._scalar, self._encoded_keys())
        except BaseException:
            self._done.discard(1)
            raise
        self.session = blinded.session
        self._peer_size = blinded.count
        self._done.add(2)
        return FeatureReply(self.job_id, blinded.session, label, feature)

    def finish(self, intersection: Intersection) -> Alignment:
        """Step 4: the shared keys, by handle."""
        self._admit(intersection, Intersection, needs=2)
        positions = intersection.indices()
        if len(positions) > min(self.size, self._peer_size):
            raise PsiCountError(f"{len(positions)} positions exceed the smaller set")
        if positions and max(positions) >= self.size:
            raise PsiCountError(f"position {max(positions)} is out of range 0..{self.size - 1}")
        if len(set(positions)) != len(positions):
            raise PsiDuplicateError("positions repeat")
        self._done.add(3)
        keys = tuple(self._keys[p] for p in positions)
        return Alignment(self.job_id, keys, self.size, self._peer_size)
