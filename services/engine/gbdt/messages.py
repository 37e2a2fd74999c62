"""Wire framing of the tree protocol: a JSON header plus raw byte sections, never pickle.

``b"SPGM" | u32 header length | header JSON | u32 section count | (u32 length | bytes)*``.
Decoding checks every length against the bytes at hand and the limits below; any defect is a
:class:`GbdtMessageError` (a 4xx where a service exposes it).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.errors import GbdtMessageError

MAGIC = b"SPGM"
_U32 = struct.Struct("<I")
HEADER_LIMIT = 1 << 20
SECTIONS_LIMIT = 1 << 16
MESSAGE_LIMIT = 1 << 31


def encode(header: dict[str, Any], sections: list[bytes] | None = None) -> bytes:
    """Frame a header and byte sections."""
    head = json.dumps(header, separators=(",", ":")).encode()
    parts = [MAGIC, _U32.pack(len(head)), head, _U32.pack(len(sections or []))]
    for s in sections or []:
        parts += [_U32.pack(len(s)), s]
    return b"".join(parts)


def decode(data: bytes, kind: str) -> tuple[dict[str, Any], list[bytes]]:
    """Unframe a message whose header must name ``kind``."""
    if not isinstance(data, bytes) or len(data) > MESSAGE_LIMIT:
        raise GbdtMessageError(f"{kind}: not a message")
    view, pos = memoryview(data), 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if n < 0 or pos + n > len(view):
            raise GbdtMessageError(f"{kind}: truncated message")
        out = view[pos : pos + n]
        pos += n
        return out

    if bytes(take(4)) != MAGIC:
        raise GbdtMessageError(f"{kind}: not a tree protocol message")
    (hl,) = _U32.unpack(take(4))
    if hl > HEADER_LIMIT:
        raise GbdtMessageError(f"{kind}: oversized header")
    try:
        header = json.loads(bytes(take(hl)))
    except ValueError:
        raise GbdtMessageError(f"{kind}: header is not JSON") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise GbdtMessageError(f"expected a {kind} message")
    (count,) = _U32.unpack(take(4))
    if count > SECTIONS_LIMIT:
        raise GbdtMessageError(f"{kind}: too many sections")
    sections = [bytes(take(_U32.unpack(take(4))[0])) for _ in range(count)]
    if pos != len(view):
        raise GbdtMessageError(f"{kind}: trailing bytes")
    return header, sections


def floats(data: bytes, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float64]:
    """Little-endian float64 section of an exact shape, finite."""
    if len(data) != 8 * int(np.prod(shape)):
        raise GbdtMessageError(f"{what} has {len(data)} bytes, expected shape {shape}")
    arr = np.frombuffer(data, dtype="<f8").reshape(shape).astype(np.float64)
    if not np.isfinite(arr).all():
        raise GbdtMessageError(f"{what} holds non-finite values")
    return arr


def bits(data: bytes, count: int, what: str) -> npt.NDArray[np.bool_]:
    """Packed bits of exactly ``count`` rows."""
    if len(data) != -(-count // 8):
        raise GbdtMessageError(f"{what} has {len(data)} bytes for {count} rows")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count).astype(bool)


def field(header: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """A typed header field (bool is not an int here)."""
    value = header.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GbdtMessageError(f"{what}: field {name!r} must be {kind.__name__}")
    return value
