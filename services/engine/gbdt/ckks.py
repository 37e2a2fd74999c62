"""CKKS over ``tenseal.sealapi`` for encrypted histograms, keys at the label party.

The label party (A) owns the secret key. It encrypts ``g + i h`` of a node's rows (zero elsewhere,
scaled into [-1, 1]) with seeded symmetric encryption and hands a feature party (P) the public
bundle: parameters, public key and the Galois keys of :attr:`HistPlan.steps`, no relinearisation
key (nothing multiplies two ciphertexts). P multiplies by its pre-encoded 0/1 diagonals, rotates
and folds (see :mod:`.ckks_plan`), adds a fresh public-key encryption of zero to every result (so a
result's randomness is not a function of P's operations alone) and returns one ciphertext per
group. A decrypts only these aggregates.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from services.engine.gbdt.ckks_plan import BAND_BETA, COEFF_BITS, Band, Group, HistPlan
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.native import U64
from services.engine.gbdt.native import address as _at
from services.engine.gbdt.native_seal import SealRing
from services.engine.he import seal
from services.engine.he.errors import HeBlobError, HeParamsError

C128 = npt.NDArray[np.complex128]
I64 = npt.NDArray[np.int64]
_HEAD = struct.Struct("<4sIIII")
_MAGIC = b"SPGB"
CACHE_BYTES = 1 << 30
"""Pre-encoded diagonals kept per feature party (encoded on the fly past this)."""
ZERO_STOCK = 32
"""Encryptions of zero a histogram worker makes ahead while it waits (2 per node are used)."""


def _parms(degree: int) -> Any:
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(sealapi.CoeffModulus.Create(degree, list(COEFF_BITS)))
    return parms


def _limit(plan: HistPlan) -> int:
    return 2 * plan.poly_degree * len(COEFF_BITS) * 8 + 4096


class LabelKeys:
    """The label party's keys for one feature party's histograms."""

    def __init__(self, plan: HistPlan) -> None:
        self.plan = plan
        self.ctx = seal.make_context(_parms(plan.poly_degree))
        keygen = sealapi.KeyGenerator(self.ctx)
        public_key = sealapi.PublicKey()
        keygen.create_public_key(public_key)
        galois = seal.dump(keygen.create_galois_keys(plan.galois_elements()))
        head = json.dumps({"rows": plan.rows, "width": plan.width}).encode()
        parts = [head, seal.dump(_parms(plan.poly_degree)), seal.dump(public_key), galois]
        self.bundle = _HEAD.pack(_MAGIC, *(len(p) for p in parts)) + b"".join(parts)
        self._encoder = sealapi.CKKSEncoder(self.ctx)
        self._encryptor = sealapi.Encryptor(self.ctx, keygen.secret_key())
        self._decryptor = sealapi.Decryptor(self.ctx, keygen.secret_key())
        self._top = self.ctx.first_parms_id()

    def encrypt(self, values: C128) -> list[bytes]:
        """Encrypt per-row ``g + i h`` (|re|, |im| <= 1) of one node: one blob per chunk."""
        out = []
        for vec in self.plan.pack(values):
            pt = sealapi.Plaintext()
            self._encoder.encode(vec.tolist(), self._top, 2.0**self.plan.g_bits, pt)
            out.append(seal.dump(self._encryptor.encrypt_symmetric(pt)))
        return out

    def decrypt(self, blobs: list[bytes], banded: bool = False) -> C128:
        """One result blob per group (one for a banded node) -> the ``width`` histogram slots."""
        groups = (Group(0, self.plan.width),) if banded else self.plan.groups
        if len(blobs) != len(groups):
            raise GbdtMessageError(f"expected {len(groups)} histogram blobs, got {len(blobs)}")
        scale = 2.0 ** (self.plan.g_bits + self.plan.mask_bits)
        out = np.empty(self.plan.width, dtype=np.complex128)
        for grp, blob in zip(groups, blobs, strict=True):
            ct = _load_ct(self.ctx, blob, self._top, scale, self.plan, "histogram")
            pt = sealapi.Plaintext()
            self._decryptor.decrypt(ct, pt)
            slots = np.asarray(self._encoder.decode_complex(pt), dtype=np.complex128)
            end = min(grp.offset + grp.size, self.plan.width)  # the last block may be padded
            out[grp.offset : end] = slots[: end - grp.offset]
        return out


def _load_ct(ctx: Any, blob: bytes, parms_id: Any, scale: float, plan: HistPlan, what: str) -> Any:
    if not isinstance(blob, bytes):
        raise GbdtMessageError(f"{what} must be bytes")
    try:
        ct = seal.load(sealapi.Ciphertext, lambda o, p: o.load(ctx, p), blob, what, _limit(plan))
        seal.check_ciphertext(ct, parms_id, scale, what)
    except (HeBlobError, HeParamsError) as exc:
        raise GbdtMessageError(str(exc)) from None
    return ct


@dataclass(frozen=True)
class _Diagonals:
    """Encoded nonzero diagonals of one chunk and group (or of a banded node): giant and baby
    step of each, the plaintexts (one row each) and the rows' addresses."""

    giant: I64
    baby: I64
    plaintexts: U64
    at: U64

    @classmethod
    def make(cls, ring: SealRing, entries: tuple[I64, I64, I64], scale: float) -> _Diagonals:
        """From :meth:`HistPlan.diagonal_entries` (or ``band_entries``): encoded at ``scale``."""
        steps, which, slots = entries
        mat = ring.encode(steps.shape[0], which, slots, scale)
        return cls(steps[:, 0].copy(), steps[:, 1].copy(), mat, ring.rows(mat))


class FeatureEvaluator:
    """A feature party's side: loads the label party's bundle, evaluates node histograms.

    SEAL checks and loads every object the label party sends and makes the encryptions of zero;
    the arithmetic on ciphertexts (encoding the 0/1 diagonals, products, sums, rotations) runs
    in the native kernel on SEAL's own layouts (:mod:`.native`), which gives the same
    ciphertexts SEAL's evaluator would (tested)."""

    def __init__(self, bundle: bytes, plan: HistPlan, codes: I64) -> None:
        if codes.shape[0] != plan.rows:
            raise GbdtMessageError("bin codes and plan disagree on the number of rows")
        self.plan, self.codes = plan, codes
        parts = _split(bundle)
        head = json.loads(parts[0])
        if head != {"rows": plan.rows, "width": plan.width}:
            raise GbdtMessageError("the key bundle was made for another histogram layout")
        try:
            parms = seal.load(
                lambda: sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS),
                lambda o, p: o.load(p),
                parts[1],
                "parameters",
                1 << 16,
                HeParamsError,
            )
            primes = [q.value() for q in parms.coeff_modulus()]
            if parms.poly_modulus_degree() != plan.poly_degree or primes != [
                q.value() for q in _parms(plan.poly_degree).coeff_modulus()
            ]:
                raise HeParamsError("the bundle's SEAL parameters are not the histogram's")
            self.ctx = seal.make_context(parms)
            key_limit = 64 * plan.poly_degree * 8 * len(plan.steps) + (1 << 20)
            pk = seal.load(
                sealapi.PublicKey,
                lambda o, p: o.load(self.ctx, p),
                parts[2],
                "public key",
                key_limit,
                HeParamsError,
            )
            galois = seal.load(
                sealapi.GaloisKeys,
                lambda o, p: o.load(self.ctx, p),
                parts[3],
                "Galois keys",
                key_limit,
                HeParamsError,
            )
        except (HeBlobError, HeParamsError) as exc:
            raise GbdtMessageError(str(exc)) from None
        if not all(galois.has_key(e) for e in plan.galois_elements()):
            raise GbdtMessageError("the key bundle lacks Galois keys the layout needs")
        self.ring = SealRing(plan.poly_degree, primes[0], primes[1])
        self.keys = self.ring.galois_keys(seal.dump(galois))  # SEAL has checked them above
        self.encryptor = sealapi.Encryptor(self.ctx, pk)
        self.top = self.ctx.first_parms_id()
        self._out_scale = 2.0 ** (plan.g_bits + plan.mask_bits)
        self._cache: dict[tuple[int, int], _Diagonals] = {}
        self._cached_bytes = 0
        self._zeros: list[U64] = []
        self._pid = b""
        self.stock_zero()  # also learns the parms id bytes of a result

    def _diagonals(self, chunk: int, gi: int, beta: int, codes: I64 | None = None) -> _Diagonals:
        hit = self._cache.get((chunk, gi)) if codes is None else None
        if hit is not None:
            return hit
        entries = self.plan.diagonal_entries(
            self.codes if codes is None else codes, chunk, self.plan.groups[gi], beta
        )
        out = _Diagonals.make(self.ring, entries, 2.0**self.plan.mask_bits)
        size = out.plaintexts.nbytes
        if codes is None and self._cached_bytes + size <= CACHE_BYTES:
            self._cache[(chunk, gi)] = out
            self._cached_bytes += size
        return out

    def prepare(self, chunks: range | None = None) -> None:
        """Encode every diagonal of ``chunks`` (default: all) now, off the training hot path, up
        to the cache budget."""
        for c in range(self.plan.chunks) if chunks is None else chunks:
            for gi in range(len(self.plan.groups)):
                self._diagonals(c, gi, self.plan.group_beta(gi, self.plan.chunks))

    def _load(self, blob: bytes, scale: float, what: str) -> U64:
        ct = _load_ct(self.ctx, blob, self.top, scale, self.plan, what)
        return self.ring.from_seal(ct)  # SEAL has checked it and expanded a seeded upload

    def _dump(self, data: U64) -> bytes:
        return self.ring.serialize(data, self._out_scale, self._pid)

    def node_chunks(self, rows: I64 | None) -> int:
        """Ciphertexts of a node's upload: every row's slots, or only ``rows``."""
        return self.plan.chunks if rows is None else max(1, -(-rows.shape[0] // self.plan.slots))

    def evaluate(self, blobs: list[bytes], rows: I64 | None = None) -> list[bytes]:
        """One node: the chunk ciphertexts in, one re-randomised result per group out. With
        ``rows`` the upload is compacted: only those training rows, in that order."""
        chunks = self.node_chunks(rows)
        if len(blobs) != chunks:
            raise GbdtMessageError(f"expected {chunks} ciphertexts, got {len(blobs)}")
        return self.partial(blobs, rows, 0, chunks, True)

    def partial(
        self, blobs: list[bytes], rows: I64 | None, first: int, chunks: int, zero: bool
    ) -> list[bytes]:
        """Chunks ``first ..`` of a node of ``chunks`` chunks: per group the folded partial sum
        (sums of partials over a node's chunks are its histogram), re-randomised when ``zero``;
        ``b""`` for a group none of these chunks reaches (only without ``zero``)."""
        plan, ring = self.plan, self.ring
        band = plan.band(rows.shape[0]) if rows is not None else None
        if rows is not None and band is not None:
            return self._band(blobs, rows, band)
        codes = None if rows is None else self.codes[rows]
        g_scale = 2.0**plan.g_bits
        babies = [[self._load(b, g_scale, "gradient ciphertext")] for b in blobs]
        results = []
        for gi, grp in enumerate(plan.groups):
            beta = plan.group_beta(gi, chunks)
            giant, xs, ws, alive = [], [], [], []  # alive: the plaintexts ws points into
            for c, bab in enumerate(babies, start=first):
                bab.extend(ring.rotate_many(bab[0], range(len(bab), beta), self.keys))
                diags = self._diagonals(c, gi, beta, codes)
                alive.append(diags)
                giant.append(diags.giant)
                xs.append(np.array([_at(b) for b in bab], dtype=np.uint64)[diags.baby])
                ws.append(diags.at)
            giants = ring.mac_groups(np.concatenate(giant), np.concatenate(xs), np.concatenate(ws))
            acc = self._fold(giants, beta, grp.size, self._zero() if zero else None)
            results.append(b"" if acc is None else self._dump(acc))
        return results

    def _band(self, blobs: list[bytes], rows: I64, band: Band) -> list[bytes]:
        """A banded node (:meth:`HistPlan.band`): one re-randomised result, the histogram in
        slots ``0 .. width-1`` (every slot a whole sum over the node's rows)."""
        plan, ring = self.plan, self.ring
        if len(blobs) != 1:
            raise GbdtMessageError("a banded node is one ciphertext")
        x = self._load(blobs[0], 2.0**plan.g_bits, "gradient ciphertext")
        beta = min(BAND_BETA, band.window)
        diags = _Diagonals.make(
            ring, plan.band_entries(self.codes[rows], band), 2.0**plan.mask_bits
        )
        babies = [x, *ring.rotate_many(x, range(1, int(diags.baby.max(initial=0)) + 1), self.keys)]
        xs = np.array([_at(b) for b in babies], dtype=np.uint64)[diags.baby]
        giants = ring.mac_groups(diags.giant, xs, diags.at)
        out = self._zero()
        acc = self._fold(giants, beta, band.block, None)
        if acc is not None:
            ring.add_into(out, acc)
        return [self._dump(out)]

    def _fold(self, giants: dict[int, U64], beta: int, period: int, acc: U64 | None) -> U64 | None:
        """``acc`` plus every giant sum rotated by its step ``g * beta``, then folded: slot
        ``i`` gets the sum over ``i + t * period`` (None when there is nothing to add)."""
        ring = self.ring
        if giants:
            if acc is None:
                acc = np.zeros(2 * self.plan.poly_degree, dtype=np.uint64)
            ring.rotate_sum(acc, [(ct, g * beta) for g, ct in giants.items()], self.keys)
        if acc is None:
            return None
        step = period
        while step < self.plan.slots:
            ring.add_into(acc, ring.rotate(acc, step, self.keys))
            step *= 2
        return acc

    def combine(self, parts: list[list[bytes]]) -> list[bytes]:
        """Sum the partials of one node's chunk ranges (the first re-randomised) per group."""
        out = []
        for gi in range(len(self.plan.groups)):
            acc = None
            for part in parts:
                if not part[gi]:
                    continue
                ct = self.ring.parse(part[gi])[0]  # the party's own workers' bytes
                if acc is None:
                    acc = ct
                else:
                    self.ring.add_into(acc, ct)
            out.append(self._dump(acc if acc is not None else self._zero()))
        return out

    def _zero(self) -> U64:
        if not self._zeros:
            self.stock_zero()
        return self._zeros.pop()

    def stock_zero(self, cap: int = ZERO_STOCK) -> bool:
        """Encrypt one zero ahead (while the party would otherwise wait); False when ``cap`` are
        in stock. Each is fresh and used once, so it re-randomises a result exactly as one made
        at that moment would."""
        if len(self._zeros) >= cap:
            return False
        ct = sealapi.Ciphertext()
        self.encryptor.encrypt_zero(self.top, ct)
        ct.scale = self._out_scale
        if not self._pid:
            self._pid = self.ring.parse(seal.dump(ct))[2]
        self._zeros.append(self.ring.from_seal(ct))
        return True


def _split(bundle: bytes) -> list[bytes]:
    if not isinstance(bundle, bytes) or len(bundle) < _HEAD.size:
        raise GbdtMessageError("the key bundle is truncated")
    magic, *lengths = _HEAD.unpack_from(bundle, 0)
    if magic != _MAGIC or _HEAD.size + sum(lengths) != len(bundle) or lengths[0] > 4096:
        raise GbdtMessageError("not a tree-histogram key bundle (or truncated, or padded)")
    parts, offset = [], _HEAD.size
    for ln in lengths:
        parts.append(bundle[offset : offset + ln])
        offset += ln
    try:
        json.loads(parts[0])
    except ValueError:
        raise GbdtMessageError("the key bundle header is not JSON") from None
    return parts
