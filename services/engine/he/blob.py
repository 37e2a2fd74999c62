"""The ciphertext blob: a small binary container for the SEAL ciphertexts of one message.

Layout (little-endian)::

    b"SPHE" | version u8 | kind u8 | reserved u16 | key fingerprint (32 bytes, sha256)
    | rows u32 | in_features u32 | out_features u32 | count u32 | count x length u32 | payloads

A blob travels as bytes (or a ``uint8`` tensor in a codec frame). :func:`unpack` accepts it only if
every field agrees with what the receiver expects: kind, key fingerprint, layer shape, the exact
ciphertext count the layout implies, per-ciphertext size limits and the exact total length
(truncated and padded blobs are both refused).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from services.engine.he.errors import HeBlobError, HeError, HeKeyMismatch

MAGIC = b"SPHE"
VERSION = 1
_HEAD = struct.Struct("<4sBBH32sIIII")


class Kind(IntEnum):
    """What a blob carries."""

    ROWS = 1
    """Enc(H) from the feature party, top level, seeded."""
    FORWARD = 2
    """Enc(H W + mask) from the label party."""
    BACKWARD = 3
    """Enc(masked backward partials) from the label party."""
    WEIGHTS = 4
    """Enc(W_P) from the feature party, top level, seeded; ``rows`` is ``in_features``."""
    INPUT_GRAD = 5
    """Enc(D W_P^T + addend) from the label party."""


@dataclass(frozen=True, slots=True)
class Blob:
    """A parsed blob; ``cts`` are views into the original bytes."""

    kind: Kind
    fingerprint: str
    rows: int
    in_features: int
    out_features: int
    cts: list[memoryview]


def pack(kind: Kind, fingerprint: str, rows: int, d: int, m: int, cts: list[bytes]) -> bytes:
    """Assemble a blob."""
    head = _HEAD.pack(
        MAGIC, VERSION, int(kind), 0, bytes.fromhex(fingerprint), rows, d, m, len(cts)
    )
    lengths = struct.pack(f"<{len(cts)}I", *(len(c) for c in cts))
    return b"".join([head, lengths, *cts])


def peek(data: bytes) -> tuple[Kind, str, int, int, int, int]:
    """Read ``(kind, fingerprint, rows, d, m, count)`` from the fixed header."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise HeBlobError("a ciphertext blob must be bytes")
    if len(data) < _HEAD.size:
        raise HeBlobError(f"ciphertext blob is truncated ({len(data)} bytes)")
    magic, version, kind, reserved, fp, rows, d, m, count = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or reserved:
        raise HeBlobError("not a Splice ciphertext blob")
    if version != VERSION:
        raise HeBlobError(f"ciphertext blob version {version} is not supported")
    if kind not in Kind.__members__.values():
        raise HeBlobError(f"unknown ciphertext blob kind {kind}")
    return Kind(kind), fp.hex(), rows, d, m, count


def unpack(
    data: bytes,
    *,
    kind: Kind,
    fingerprint: str,
    shape: tuple[int, int],
    expected_count: Callable[[int], int],
    limit: int,
) -> Blob:
    """Parse and check a blob; see the module docstring for what is checked.

    ``expected_count(rows)`` gives the ciphertext count the layout implies for the blob's row
    count (raising for an impossible one). Raises :class:`HeBlobError` or :class:`HeKeyMismatch`.
    """
    got_kind, fp, rows, d, m, n = peek(data)
    if got_kind != kind:
        raise HeBlobError(f"expected a {kind.name} blob, got {got_kind.name}")
    if fp != fingerprint:
        raise HeKeyMismatch(
            f"ciphertext blob is under key {fp[:16]}…, expected {fingerprint[:16]}…"
        )
    if (d, m) != shape:
        raise HeBlobError(f"ciphertext blob is for a {d}x{m} layer, expected {shape[0]}x{shape[1]}")
    try:
        expected = expected_count(rows)
    except HeError as exc:
        raise HeBlobError(f"ciphertext blob has an impossible row count: {exc}") from None
    if n != expected:
        raise HeBlobError(
            f"ciphertext blob has {n} ciphertexts for {rows} rows, expected {expected}"
        )
    table = _HEAD.size + 4 * n
    if len(data) < table:
        raise HeBlobError("ciphertext blob is truncated (length table)")
    lengths = struct.unpack_from(f"<{n}I", data, _HEAD.size)
    if any(not 16 <= ln <= limit for ln in lengths):
        raise HeBlobError(f"a ciphertext in the blob is empty or larger than {limit} bytes")
    total = table + sum(lengths)
    if len(data) < total:
        raise HeBlobError(f"ciphertext blob is truncated ({len(data)} of {total} bytes)")
    if len(data) > total:
        raise HeBlobError(f"ciphertext blob is oversized ({len(data)} bytes, {total} expected)")
    view = memoryview(data)
    cts, offset = [], table
    for ln in lengths:
        cts.append(view[offset : offset + ln])
        offset += ln
    return Blob(kind, fp, rows, d, m, cts)
