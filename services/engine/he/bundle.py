"""The public key bundle the feature party hands to the label party, and its fingerprint.

Layout (little-endian)::

    b"SPHK" | version u8 | section count u8 (=4) | reserved u16 | 4 x length u32
    | params JSON | SEAL EncryptionParameters | SEAL PublicKey | SEAL GaloisKeys (seeded)

There is no secret key section and no relinearisation keys (the layer never multiplies two
ciphertexts). The Galois keys are exactly those :attr:`Plan.steps` needs. The fingerprint is the
sha256 of the whole bundle; every blob names it, and the registry records it with the job.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property

from services.engine.he.errors import HeParamsError
from services.engine.he.layout import Plan
from services.engine.he.params import HeParams

MAGIC = b"SPHK"
VERSION = 1
SECTIONS = 4
_HEAD = struct.Struct(f"<4sBBH{SECTIONS}I")
_JSON_LIMIT = 4096
_PARMS_LIMIT = 1 << 16


def fingerprint(public: bytes) -> str:
    """sha256 hex of a public bundle (what the registry records with the job)."""
    return hashlib.sha256(public).hexdigest()


def key_size_limit(params: HeParams, keys: int) -> int:
    """Upper bound on the serialised size of ``keys`` key-switching keys (or a public key: 1)."""
    n, levels = params.poly_modulus_degree, len(params.coeff_mod_bit_sizes)
    return keys * (levels - 1) * 2 * n * levels * 8 + (1 << 16)


def pack(params: HeParams, parms: bytes, public_key: bytes, galois: bytes) -> bytes:
    """Assemble a bundle from serialised parts."""
    sections = [params.to_json().encode(), parms, public_key, galois]
    return _HEAD.pack(MAGIC, VERSION, SECTIONS, 0, *(len(s) for s in sections)) + b"".join(sections)


@dataclass(frozen=True)
class PublicBundle:
    """A parsed public bundle: parameters plus the serialised SEAL sections (not yet loaded).

    Parsing checks the framing, the parameters and every section's size bound; SEAL validates the
    sections themselves when a :class:`~services.engine.he.contexts.PublicContext` loads them.
    """

    raw: bytes
    params: HeParams
    parms: bytes
    public_key: bytes
    galois: bytes

    @classmethod
    def parse(cls, raw: bytes) -> PublicBundle:
        """Parse bundle bytes; any defect raises :class:`HeParamsError`."""
        if not isinstance(raw, bytes):
            raise HeParamsError("a public key bundle must be bytes")
        if len(raw) < _HEAD.size:
            raise HeParamsError("public key bundle is truncated")
        magic, version, count, reserved, *lengths = _HEAD.unpack_from(raw, 0)
        if magic != MAGIC or count != SECTIONS or reserved:
            raise HeParamsError("not a Splice public key bundle")
        if version != VERSION:
            raise HeParamsError(f"public key bundle version {version} is not supported")
        if _HEAD.size + sum(lengths) != len(raw):
            raise HeParamsError("public key bundle is truncated or padded")
        if lengths[0] > _JSON_LIMIT or lengths[1] > _PARMS_LIMIT:
            raise HeParamsError("public key bundle header sections are oversized")
        parts, offset = [], _HEAD.size
        for ln in lengths:
            parts.append(raw[offset : offset + ln])
            offset += ln
        params = HeParams.from_json(parts[0])
        steps = len(Plan(params).steps)
        if len(parts[2]) > key_size_limit(params, 1) or len(parts[3]) > key_size_limit(
            params, max(steps, 1)
        ):
            raise HeParamsError("public key bundle key sections are oversized")
        if steps and not parts[3]:
            raise HeParamsError("public key bundle lacks the Galois keys the layout needs")
        return cls(raw, params, parts[1], parts[2], parts[3])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex of the bundle."""
        return fingerprint(self.raw)

    @cached_property
    def plan(self) -> Plan:
        """The layout the keys were made for."""
        return Plan(self.params)
