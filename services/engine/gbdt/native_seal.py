"""SEAL's objects and bytes for the native kernel (:mod:`.native`): SEAL 4's serialisation of a
ciphertext and of Galois keys, and the direct read of a loaded ciphertext's coefficients.

A serialised SEAL object is a 16-byte header (magic, sizes, compression mode) and its members,
zstd-compressed by default; a ciphertext's members end with its coefficient array. What this
module parses the label party has sent through SEAL first (loaded and checked by
``services.engine.he.seal``), or the feature party's own workers wrote.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import numpy as np
import zstandard

from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.native import U64, Ring
from services.engine.he import seal

_HEADER = struct.Struct("<HBBBBHQ")
_MEMBERS = struct.Struct("<4QBQQQdQ")
"""SEAL 4 ``Ciphertext`` members before its coefficient array: parms id, NTT flag, size, degree,
number of primes, scale, correction factor (then a SEAL header and a length)."""
_MAX_DECOMPRESSED = 1 << 26
_PYBIND_VALUE = 16
"""Offset of the C++ object's address in a pybind11 instance (after ``PyObject_HEAD``)."""


class SealRing(Ring):
    """A :class:`Ring` that reads and writes SEAL's ciphertexts and reads its Galois keys."""

    def from_seal(self, ct: Any) -> U64:
        """A loaded SEAL ciphertext's ``2 x N`` coefficients, copied straight from its memory
        when its layout is the one this kernel knows, else through its serialisation.

        The direct read follows pybind11's instance (the C++ object's address after the Python
        header) and SEAL 4's ``Ciphertext`` (parms id, NTT flag, size, degree, primes, scale,
        correction factor, then a ``DynArray`` whose data pointer is word 14). Every field read
        is checked against what the object reports through its API, and the first coefficient
        of both polynomials against ``ct.data(i)``; any disagreement takes the serialisation."""
        n = self.n
        if ct.size() != 2 or ct.poly_modulus_degree() != n or ct.coeff_modulus_size() != 1:
            raise GbdtMessageError("a ciphertext of another shape than the histogram's")
        direct = self.direct(ct)
        return direct if direct is not None else self.parse(seal.dump(ct))[0]

    def direct(self, ct: Any) -> U64 | None:
        """The direct read of :meth:`from_seal`, None where the layout does not check out."""
        n = self.n
        try:
            obj = ctypes.c_void_p.from_address(id(ct) + _PYBIND_VALUE).value
            words = (ctypes.c_uint64 * 15).from_address(obj) if obj else None
        except (ValueError, OSError):  # pragma: no cover - an address ctypes refuses
            return None
        if (
            words is None
            or words[4] & 0xFF != 1  # the NTT flag is one byte; the rest of its word is padding
            or tuple(words[5:8]) != (2, n, 1)
            or words[13] != 2 * n
            or words[12] < 2 * n
            or not words[14]
        ):
            return None
        data = np.ctypeslib.as_array((ctypes.c_uint64 * (2 * n)).from_address(words[14]))
        if int(data[0]) != ct.data(0) or int(data[n]) != ct.data(1):
            return None
        out: U64 = data.copy()
        return None if np.any(out >= self.q.value) else out

    # -- SEAL bytes -----------------------------------------------------------------------
    def parse(self, blob: bytes) -> tuple[U64, float, bytes]:
        """A serialised SEAL ciphertext of size 2 at the data level in NTT form -> its
        ``2 x N`` coefficients, its scale and its parms id bytes."""
        body = _members(blob)
        if len(body) != _MEMBERS.size + _HEADER.size + 8 + 16 * self.n:
            raise GbdtMessageError("a ciphertext of another length than the histogram's")
        fields = _MEMBERS.unpack_from(body, 0)
        _pid, ntt, size, degree, primes, scale = fields[:4], fields[4], *fields[5:9]
        if (ntt, size, degree, primes) != (1, 2, self.n, 1):
            raise GbdtMessageError("a ciphertext of another shape than the histogram's")
        data = np.frombuffer(body, dtype=np.uint64, offset=len(body) - 16 * self.n).copy()
        if np.any(data >= self.q.value):
            raise GbdtMessageError("a ciphertext coefficient is not reduced")
        return data, float(scale), body[:32]

    def serialize(self, data: U64, scale: float, parms_id: bytes) -> bytes:
        """``2 x N`` coefficients -> SEAL's serialisation of the ciphertext (zstd, as SEAL)."""
        payload = 16 * self.n
        inner = _HEADER.pack(0xA15E, 16, 4, 3, 0, 0, _HEADER.size + 8 + payload)
        members = (
            parms_id
            + struct.pack("<BQQQdQ", 1, 2, self.n, 1, scale, 1)
            + inner
            + struct.pack("<Q", 2 * self.n)
            + data.astype(np.uint64, copy=False).tobytes()
        )
        packed = zstandard.ZstdCompressor(level=1).compress(members)
        return _HEADER.pack(0xA15E, 16, 4, 3, 2, 0, _HEADER.size + len(packed)) + packed

    def galois_keys(self, blob: bytes) -> dict[int, U64]:
        """SEAL ``GaloisKeys`` bytes (checked by SEAL) -> Galois element -> (k0 mod q, k0 mod p,
        k1 mod q, k1 mod p) and their Shoup companions, one ``8N`` array."""
        body = _members(blob)
        (count,) = struct.unpack_from("<Q", body, 32)
        off, out = 40, {}
        key_bytes = 4 * self.n * 8
        for index in range(count):
            (parts,) = struct.unpack_from("<Q", body, off)
            off += 8
            for _ in range(parts):
                size = _HEADER.unpack_from(body, off)[-1]
                if parts == 1:
                    rec = np.frombuffer(body[off + size - key_bytes : off + size], np.uint64)
                    out[2 * index + 1] = self.with_shoup(rec)
                off += size
        return out


def _members(blob: bytes) -> bytes:
    if len(blob) < _HEADER.size:
        raise GbdtMessageError("truncated SEAL object")
    compr = _HEADER.unpack_from(blob, 0)[4]
    if compr == 0:
        return blob[_HEADER.size :]
    if compr != 2:
        raise GbdtMessageError("a SEAL object with a compression other than zstd or none")
    try:
        return zstandard.ZstdDecompressor().decompress(
            blob[_HEADER.size :], max_output_size=_MAX_DECOMPRESSED
        )
    except zstandard.ZstdError as exc:
        raise GbdtMessageError(f"a SEAL object does not decompress: {exc}") from None
