"""The group: ristretto255 (RFC 9496), a prime-order group, as a commutative blinding map.

A key is hashed to the group with RFC 9380's ``hash_to_ristretto255`` construction:
``expand_message_xmd`` with SHA-512 stretches ``utf8(key)`` under the domain-separation tag
:data:`DST` to 64 uniform bytes, and ristretto255's one-way map (RFC 9496 section 4.3.4, two
Elligator evaluations added) turns them into a group element. Blinding with a secret scalar ``a``
is scalar multiplication. The group has prime order ``l``, so ``(H^a)^b == (H^b)^a`` and every
element, whatever its encoding came from, generates the whole group: there is no cofactor, no
twist and no small subgroup, so nothing about a key survives blinding (the twist bit of the
earlier X25519 map, docs/psi.md).

The group arithmetic is libsodium's (``crypto_core_ristretto255_*`` and
``crypto_scalarmult_ristretto255``), bundled by ``rbcl``; only the hashing around it
(``expand_message_xmd``) is written here, checked against RFC 9380's test vectors.

These functions work on plain ``bytes`` so :mod:`.pool` can ship them to worker processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import rbcl

from services.engine.psi.errors import PsiDuplicateError, PsiMalformedError, PsiPointError

POINT_SIZE = 32
"""Bytes per point (a canonical ristretto255 encoding)."""
SCALAR_SIZE = 32
DST = b"splice/psi/v2/ristretto255_XMD:SHA-512_R255MAP_RO_"
"""Domain separation of the hash to the group (RFC 9380 section 3.1)."""
IDENTITY = bytes(POINT_SIZE)
"""The encoding of the group's identity (never a valid blinded key)."""
_SHA512_BLOCK = 128
_SHA512_OUT = 64


def new_scalar() -> bytes:
    """A fresh secret scalar, uniform in ``1..l-1`` (libsodium's CSPRNG)."""
    scalar: bytes = rbcl.crypto_core_ristretto255_scalar_random()
    return scalar


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512: ``length`` uniform bytes of ``msg`` under ``dst``."""
    if not 0 < len(dst) <= 255:
        raise ValueError("the domain-separation tag has 1..255 bytes")
    ell = -(-length // _SHA512_OUT)
    if ell > 255 or length > 65535:
        raise ValueError("expand_message_xmd gives at most 255 SHA-512 blocks")
    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(
        bytes(_SHA512_BLOCK) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime
    ).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha512(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_key(key: bytes) -> bytes:
    """The group element of one key: ``hash_to_ristretto255(key)`` under :data:`DST`."""
    uniform = expand_message_xmd(key, DST, 64)
    point: bytes = rbcl.crypto_core_ristretto255_from_hash(uniform)
    return point


def multiply(scalar: bytes, points: bytes, offset: int = 0) -> bytes:
    """``scalar * P`` for each point of the blob; raises on an invalid encoding (libsodium
    decodes every input and refuses anything that is not a canonical group element) or the
    identity. ``offset`` only numbers the points in the error message (sharded calls)."""
    mult = rbcl.crypto_scalarmult_ristretto255
    out = []
    for i in range(0, len(points), POINT_SIZE):
        try:
            out.append(mult(scalar, points[i : i + POINT_SIZE]))
        except (RuntimeError, ValueError):
            raise PsiPointError(
                f"point {offset + i // POINT_SIZE} is not a ristretto255 group element"
            ) from None
    return b"".join(out)


def hash_multiply(scalar: bytes, keys: Sequence[bytes], offset: int = 0) -> bytes:
    """``scalar * H(key)`` for each key, as one blob."""
    return multiply(scalar, b"".join(hash_key(k) for k in keys), offset)


def is_group_element(point: bytes) -> bool:
    """Whether ``point`` is the canonical encoding of a ristretto255 element other than the
    identity."""
    if len(point) != POINT_SIZE or point == IDENTITY:
        return False
    return bool(rbcl.crypto_core_ristretto255_is_valid_point(point))


def split(blob: bytes) -> list[bytes]:
    """The points of a blob, one ``bytes`` each (the blob's length is a multiple of 32)."""
    return [blob[i : i + POINT_SIZE] for i in range(0, len(blob), POINT_SIZE)]


def check_points(blob: bytes, what: str) -> list[bytes]:
    """Validate the shape of a received blob and return its points.

    Refuses a length that is not a multiple of :data:`POINT_SIZE`, the identity and duplicates.
    Whether each point is a group element is checked where the point is used: the scalar
    multiplication decodes it and refuses a non-canonical encoding (:func:`multiply`); a point
    only compared with this party's own blinded points matches nothing unless it is one.
    """
    if len(blob) % POINT_SIZE:
        raise PsiMalformedError(f"{what}: {len(blob)} bytes is not a whole number of points")
    if not blob:
        return []
    points = split(blob)
    unique = set(points)
    if IDENTITY in unique:
        raise PsiPointError(f"{what}: holds the identity")
    if len(unique) != len(points):
        raise PsiDuplicateError(f"{what}: holds {len(points) - len(unique)} duplicate point(s)")
    return points
