"""The three PSI messages and their binary framing (no pickle, no JSON lists of points).

Every message names its ``job_id``, its ``step`` and the ``session`` nonce the label party drew
for this run (16 random bytes): a message of another job or another run of the same job is
refused, and each party consumes each step once. Points travel as one contiguous blob of 32-byte
ristretto255 encodings per list; positions as one blob of little-endian ``uint32``.

Frame: ``b"SPSI" | version u8 | step u8 | len(job_id) u16 | job_id utf8 | session 16 | body``,
where the body is ``n u32 | points`` (step 1), ``n u32 | m u32 | points | points`` (step 2) or
``k u32 | positions`` (step 3). Integers are little-endian; the frame length must match exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from services.engine.psi.errors import PsiCountError, PsiMalformedError
from services.engine.psi.group import POINT_SIZE

MAGIC = b"SPSI"
VERSION = 2
"""2: ristretto255 points (1 was X25519 u-coordinates; refused)."""
SESSION_SIZE = 16
POSITION_SIZE = 4
MAX_ITEMS = 1 << 25
"""Most points (or positions) one list may hold (~1 GB of points); larger lists are refused."""
MAX_JOB_ID = 256

_HEAD = struct.Struct("<4sBBH")
_U32 = struct.Struct("<I")


def _check_blob(blob: bytes, size: int, what: str) -> int:
    if len(blob) % size:
        raise PsiMalformedError(f"{what}: {len(blob)} bytes is not a multiple of {size}")
    count = len(blob) // size
    if count > MAX_ITEMS:
        raise PsiCountError(f"{what}: {count} entries exceed the limit of {MAX_ITEMS}")
    return count


@dataclass(frozen=True)
class PsiMessage:
    job_id: str
    session: bytes

    step: ClassVar[int]

    def __post_init__(self) -> None:
        if not 0 < len(self.job_id.encode()) <= MAX_JOB_ID:
            raise PsiMalformedError(f"job_id must be 1..{MAX_JOB_ID} bytes of UTF-8")
        if len(self.session) != SESSION_SIZE:
            raise PsiMalformedError(f"session must be {SESSION_SIZE} bytes")

    def _body(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message as one binary frame."""
        job = self.job_id.encode()
        return _HEAD.pack(MAGIC, VERSION, self.step, len(job)) + job + self.session + self._body()


@dataclass(frozen=True)
class BlindedKeys(PsiMessage):
    """Step 1, label -> feature: ``H(x)^a`` for each distinct ``x``, in the label's random order."""

    points: bytes

    step: ClassVar[int] = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_blob(self.points, POINT_SIZE, "blinded keys")

    @property
    def count(self) -> int:
        return len(self.points) // POINT_SIZE

    def _body(self) -> bytes:
        return _U32.pack(self.count) + self.points


@dataclass(frozen=True)
class FeatureReply(PsiMessage):
    """Step 2, feature -> label: ``(H(x)^a)^b`` in step 1's order, ``H(y)^b`` in a random order."""

    label_points: bytes
    feature_points: bytes

    step: ClassVar[int] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_blob(self.label_points, POINT_SIZE, "double-blinded keys")
        _check_blob(self.feature_points, POINT_SIZE, "feature keys")

    @property
    def feature_count(self) -> int:
        return len(self.feature_points) // POINT_SIZE

    def _body(self) -> bytes:
        n, m = len(self.label_points) // POINT_SIZE, self.feature_count
        return _U32.pack(n) + _U32.pack(m) + self.label_points + self.feature_points


@dataclass(frozen=True)
class Intersection(PsiMessage):
    """Step 3, label -> feature: positions in step 2's feature list, in handle order.

    Handle ``h`` names the row at ``positions[h]`` of the feature party's list; handles follow the
    label party's random order of step 1, so they reveal nothing about either party's ordering.
    """

    positions: bytes

    step: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_blob(self.positions, POSITION_SIZE, "positions")

    def indices(self) -> list[int]:
        """The positions as integers."""
        return [p for (p,) in _U32.iter_unpack(self.positions)]

    def _body(self) -> bytes:
        return _U32.pack(len(self.positions) // POSITION_SIZE) + self.positions


Message = BlindedKeys | FeatureReply | Intersection


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise PsiMalformedError(f"message truncated in {what}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def count(self, what: str) -> int:
        (n,) = _U32.unpack(self.take(_U32.size, what))
        if n > MAX_ITEMS:
            raise PsiCountError(f"{what}: {n} entries exceed the limit of {MAX_ITEMS}")
        return int(n)


def decode(data: bytes) -> Message:
    """Parse one frame; raises :class:`PsiMalformedError` on any framing error."""
    r = _Reader(data)
    magic, version, step, job_len = _HEAD.unpack(r.take(_HEAD.size, "header"))
    if magic != MAGIC or version != VERSION:
        raise PsiMalformedError("not a PSI message of a supported version")
    try:
        job_id = r.take(job_len, "job id").decode()
    except UnicodeDecodeError:
        raise PsiMalformedError("job id is not UTF-8") from None
    session = r.take(SESSION_SIZE, "session")
    msg: Message
    if step == 1:
        n = r.count("blinded keys")
        msg = BlindedKeys(job_id, session, r.take(n * POINT_SIZE, "blinded keys"))
    elif step == 2:
        n, m = r.count("double-blinded keys"), r.count("feature keys")
        label = r.take(n * POINT_SIZE, "double-blinded keys")
        msg = FeatureReply(job_id, session, label, r.take(m * POINT_SIZE, "feature keys"))
    elif step == 3:
        k = r.count("positions")
        msg = Intersection(job_id, session, r.take(k * POSITION_SIZE, "positions"))
    else:
        raise PsiMalformedError(f"unknown step {step}")
    if r.pos != len(data):
        raise PsiMalformedError(f"{len(data) - r.pos} trailing bytes after the message")
    return msg
