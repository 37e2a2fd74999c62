"""The group: X25519 (Curve25519 u-coordinates) as a commutative blinding map.

A key is hashed with domain-separated SHA-512 to a 32-byte u-coordinate; blinding with a secret
scalar ``a`` is the X25519 function ``X25519(a, u)`` (OpenSSL through ``cryptography``). Clamped
scalars commute, ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``, on the curve and on its
twist alike. Points travel as one contiguous blob of 32-byte little-endian u-coordinates. Why this
is sound (collisions, twist security, low-order inputs) is argued in ``docs/psi.md``.

These functions work on plain ``bytes`` so :mod:`.pool` can ship them to worker processes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from services.engine.psi.errors import PsiDuplicateError, PsiMalformedError, PsiPointError

POINT_SIZE = 32
"""Bytes per point (a canonical little-endian u-coordinate)."""
SCALAR_SIZE = 32
HASH_TAG = b"splice/psi/v1/x25519/sha512\x00"
"""Domain separation: a key's point is ``SHA-512(HASH_TAG || utf8(key))[:32]`` (top bit clear)."""

_P = 2**255 - 19
_LOW_ORDER_U = (
    0,
    1,
    _P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)
LOW_ORDER = frozenset(u.to_bytes(POINT_SIZE, "little") for u in _LOW_ORDER_U)
"""The canonical u-coordinates of points of small order on the curve (orders 2, 4, 8) and twist."""


def new_scalar() -> bytes:
    """A fresh secret scalar (X25519 clamps it: a multiple of 8 with bit 254 set)."""
    return secrets.token_bytes(SCALAR_SIZE)


def hash_key(key: bytes) -> bytes:
    """The point of one key: domain-separated SHA-512, first 32 bytes, top bit cleared."""
    digest = bytearray(hashlib.sha512(HASH_TAG + key).digest()[:POINT_SIZE])
    digest[31] &= 0x7F
    return bytes(digest)


def multiply(scalar: bytes, points: bytes, offset: int = 0) -> bytes:
    """``X25519(scalar, u)`` for each point of the blob; raises on a low-order point.

    ``offset`` only numbers the points in the error message (for sharded calls).
    """
    private = X25519PrivateKey.from_private_bytes(scalar)
    exchange = private.exchange
    load = X25519PublicKey.from_public_bytes
    out = []
    for i in range(0, len(points), POINT_SIZE):
        try:
            out.append(exchange(load(points[i : i + POINT_SIZE])))
        except ValueError:
            raise PsiPointError(f"point {offset + i // POINT_SIZE} has low order") from None
    return b"".join(out)


def hash_multiply(scalar: bytes, keys: Sequence[bytes], offset: int = 0) -> bytes:
    """``X25519(scalar, H(key))`` for each key, as one blob."""
    return multiply(scalar, b"".join(hash_key(k) for k in keys), offset)


def split(blob: bytes) -> list[bytes]:
    """The points of a blob, one ``bytes`` each (the blob's length is a multiple of 32)."""
    return [blob[i : i + POINT_SIZE] for i in range(0, len(blob), POINT_SIZE)]


def check_points(blob: bytes, what: str) -> list[bytes]:
    """Validate a received blob and return its points.

    Refuses a length that is not a multiple of :data:`POINT_SIZE`, non-canonical encodings (top
    bit set or ``u >= 2**255 - 19``: X25519 never outputs those), low-order points and duplicates.
    """
    if len(blob) % POINT_SIZE:
        raise PsiMalformedError(f"{what}: {len(blob)} bytes is not a whole number of points")
    if not blob:
        return []
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, POINT_SIZE)
    top = arr[:, 31]
    high = top >= 0x80
    at_p = (top == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)
    bad = np.flatnonzero(high | at_p)
    if bad.size:
        raise PsiPointError(f"{what}: point {int(bad[0])} is not a canonical u-coordinate")
    points = split(blob)
    unique = set(points)
    if unique & LOW_ORDER:
        raise PsiPointError(f"{what}: holds a low-order point")
    if len(unique) != len(points):
        raise PsiDuplicateError(f"{what}: holds {len(points) - len(unique)} duplicate point(s)")
    return points
