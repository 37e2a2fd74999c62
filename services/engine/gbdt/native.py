"""The feature party's CKKS arithmetic in native code (``_kernel.c``), on SEAL's own layouts.

SEAL (through ``tenseal.sealapi``) stays the reference and keeps every secret-key operation and
every encryption; this module computes what the feature party evaluates on ciphertexts it
received: encodings of its 0/1 diagonals, ciphertext x plaintext products summed with one
reduction per sum, and rotations (Galois automorphism + key switching with the label party's
Galois keys). Each step reproduces SEAL's arithmetic for parameters of one data prime ``q`` and
one special prime ``p`` (checked against SEAL in ``tests/engine/test_gbdt_native.py``):

* NTT form: the negacyclic transform with the minimal primitive ``2N``-th root of unity, value
  ``i`` the polynomial at ``psi ** (2 * bitrev(i) + 1)``.
* CKKS encoding: slot ``j`` is the polynomial at ``exp(i pi 3**j / N)`` (SEAL's generator 3), its
  conjugate at the inverse root; coefficients rounded at the scale, then the NTT.
* Galois element of a rotation by ``s`` slots: ``3**s mod 2N``, in NTT form a permutation.
* Key switching: SEAL's ``switch_key_inplace`` for one decomposition prime, rounding included.

SEAL's objects and bytes reach this arithmetic through :mod:`.native_seal`.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.errors import GbdtMessageError

U64 = npt.NDArray[np.uint64]
C128 = npt.NDArray[np.complex128]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_VP, _SIZE, _U64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64


def _library() -> Any:
    spec = importlib.util.find_spec("services.engine.gbdt._kernel")
    if spec is None or spec.origin is None:
        raise ImportError("the native kernel is not built (pip install -e . builds it)")
    lib = ctypes.CDLL(spec.origin)
    signatures = {
        "ntt_forward": [_VP, _SIZE, _SIZE, _U64, _VP, _VP],
        "ntt_inverse": [_VP, _SIZE, _SIZE, _U64, _VP, _VP, _U64, _U64],
        "mac_groups": [_VP, _VP, _VP, _VP, _SIZE, _SIZE, _SIZE, _U64, _U64, _U64],
        "add_mod": [_VP, _VP, _VP, _SIZE, _U64],
        "rotate_many": [_VP, _VP, _VP, _VP, _SIZE, _VP, _SIZE, _VP, _VP, _VP],
        "rotate_sum": [_VP, _VP, _VP, _VP, _SIZE, _VP, _SIZE, _VP, _VP, _VP],
        "encode_finish": [_VP, _VP, _VP, _SIZE, _SIZE, _U64, _VP, _VP],
        "shoup_table": [_VP, _VP, _SIZE, _U64],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


_LIB = _library()


def address(a: npt.NDArray[Any]) -> int:
    """The address of a C-contiguous array's first element."""
    return int(a.__array_interface__["data"][0])


def _bitrev(n: int) -> npt.NDArray[np.int64]:
    bits = n.bit_length() - 1
    idx = np.arange(n)
    out = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        out |= ((idx >> b) & 1) << (bits - 1 - b)
    return out


def _min_root(n: int, m: int) -> int:
    """The minimal primitive ``2n``-th root of unity modulo the prime ``m`` (SEAL's choice)."""
    for g in range(2, 1 << 16):
        r = pow(g, (m - 1) // (2 * n), m)
        if pow(r, n, m) == m - 1:
            return min(pow(r, k, m) for k in range(1, 2 * n, 2))
    raise ValueError("no primitive root found")  # pragma: no cover - m is an NTT prime


@dataclass(frozen=True)
class _Prime:
    value: int
    rp: U64
    rps: U64
    irp: U64
    irps: U64
    ninv: int
    ninvs: int
    cr0: int
    cr1: int

    @classmethod
    @lru_cache(maxsize=8)
    def make(cls, n: int, m: int) -> _Prime:
        """The tables of prime ``m`` for degree ``n``: built once per process (every histogram
        evaluator of a job, and of later jobs, shares them; they are only read)."""
        psi = _min_root(n, m)
        rev = _bitrev(n)
        inv = pow(psi, -1, m)
        rp = [pow(psi, int(r), m) for r in rev]
        irp = [pow(inv, int(r), m) for r in rev]

        def frozen(v: list[int]) -> U64:
            out = np.array(v, dtype=np.uint64)
            out.setflags(write=False)  # shared by every ring of the process
            return out

        def shoup(v: list[int]) -> U64:
            return frozen([(x << 64) // m for x in v])

        ninv = pow(n, -1, m)
        cr = (1 << 128) // m
        return cls(
            m,
            frozen(rp),
            shoup(rp),
            frozen(irp),
            shoup(irp),
            ninv,
            (ninv << 64) // m,
            cr & ((1 << 64) - 1),
            cr >> 64,
        )

    def forward(self, a: U64) -> None:
        """NTT of every row of ``a`` (C-contiguous, last axis the degree) in place."""
        n = a.shape[-1]
        _LIB.ntt_forward(
            address(a), a.size // n, n, self.value, address(self.rp), address(self.rps)
        )

    def inverse(self, a: U64) -> None:
        n = a.shape[-1]
        _LIB.ntt_inverse(
            address(a),
            a.size // n,
            n,
            self.value,
            address(self.irp),
            address(self.irps),
            self.ninv,
            self.ninvs,
        )

    def tables(self) -> U64:
        """The addresses of the four tables, as the kernel takes them."""
        return np.array([address(t) for t in (self.rp, self.rps, self.irp, self.irps)], np.uint64)


class Ring:
    """SEAL's CKKS ring for ``N = degree`` and primes ``(q, p)``: encode, multiply-accumulate and
    rotate ciphertexts of the one data prime ``q`` (``2 x N`` coefficients in NTT form)."""

    def __init__(self, degree: int, q: int, p: int) -> None:
        if not q < p < 1 << 60:
            raise ValueError("the native kernel needs a data prime below a special prime < 2^60")
        self.n, self.slots = degree, degree // 2
        self.q, self.p = _Prime.make(degree, q), _Prime.make(degree, p)
        rev = _bitrev(degree)
        self._exponent = 2 * rev + 1  # NTT value i is the polynomial at psi ** exponent[i]
        self._index = np.empty(2 * degree, dtype=np.int64)
        self._index[self._exponent] = np.arange(degree)
        two_n = 2 * degree
        gen = np.ones(self.slots, dtype=np.int64)
        for j in range(1, self.slots):
            gen[j] = gen[j - 1] * 3 % two_n
        self._slot_u, self._conj_u = (gen - 1) // 2, ((two_n - gen) % two_n - 1) // 2
        self._twists: dict[float, C128] = {}
        self._twist = np.exp(-1j * np.pi * np.arange(degree) / degree)
        self._rotations: dict[int, tuple[int, npt.NDArray[np.int64]]] = {}
        """Rotation step -> its Galois element and that element's permutation in NTT form."""
        pinv = pow(p, -1, q)
        self._scalars = np.array(
            [
                q, self.q.cr0, self.q.cr1, self.q.ninv, self.q.ninvs,
                p, self.p.cr0, self.p.cr1, self.p.ninv, self.p.ninvs,
                pinv, (pinv << 64) // q,
            ],
            dtype=np.uint64,
        )  # fmt: skip
        self._qt, self._pt = self.q.tables(), self.p.tables()
        self._qt_at, self._pt_at = address(self._qt), address(self._pt)
        self._scalars_at = address(self._scalars)

    # -- encoding -------------------------------------------------------------------------
    def encode(self, count: int, rows: I64, slots: I64, scale: float) -> U64:
        """``count`` 0/1 slot vectors, 1 at ``(rows[i], slots[i])`` -> plaintexts in NTT form
        mod q (one row each), as SEAL's ``CKKSEncoder.encode`` at ``scale`` (up to the rounding
        of ties).

        Coefficient ``k`` is ``(1/N) sum_e F[e] w**(-e k)`` over the odd exponents ``e`` (``F``
        the slot values at ``3**j`` and, conjugated, at ``-3**j``; ``w = exp(i pi / N)``), i.e.
        ``w**-k FFT_N(G)[k]`` with ``G[u] = F[2u + 1]``: real, so two vectors share one complex
        FFT (one in the real part, one in the imaginary part)."""
        n = self.n
        spec = np.zeros((-(-count // 2), n), dtype=np.complex128)
        flat = spec.view(np.float64).reshape(-1)
        base = (rows // 2) * (2 * n) + (rows & 1)
        flat[base + 2 * self._slot_u[slots]] = 1.0
        flat[base + 2 * self._conj_u[slots]] = 1.0
        np.fft.fft(spec, axis=1, out=spec)
        twist = self._twists.get(scale)
        if twist is None:
            twist = self._twists.setdefault(scale, self._twist * (scale / n))
        out = np.empty((count, n), dtype=np.uint64)
        _LIB.encode_finish(
            address(out),
            address(spec),
            address(twist),
            count,
            n,
            self.q.value,
            address(self.q.rp),
            address(self.q.rps),
        )
        return out

    # -- products -------------------------------------------------------------------------
    @staticmethod
    def rows(mat: U64) -> U64:
        """The addresses of the rows of a C-contiguous matrix (for :meth:`mac_groups`)."""
        return np.uint64(address(mat)) + np.arange(mat.shape[0], dtype=np.uint64) * np.uint64(
            mat.strides[0]
        )

    def mac_groups(self, keys: I64, xs: U64, ws: U64) -> dict[int, U64]:
        """Per distinct key ``g``: ``sum x * w`` over the entries with that key, ``x`` a
        ciphertext (``2 x N``) and ``w`` a plaintext (``N``) given by their addresses (the
        arrays must stay alive during the call)."""
        order = np.argsort(keys, kind="stable")
        keys, xs, ws = keys[order], np.ascontiguousarray(xs[order]), np.ascontiguousarray(ws[order])
        uniq, starts = np.unique(keys, return_index=True)
        bounds = np.append(starts, keys.size).astype(np.int64)
        out = np.empty((uniq.size, 2 * self.n), dtype=np.uint64)
        _LIB.mac_groups(
            address(out),
            address(xs),
            address(ws),
            address(bounds),
            uniq.size,
            self.n,
            2,
            self.q.value,
            self.q.cr0,
            self.q.cr1,
        )
        return {int(g): out[i] for i, g in enumerate(uniq)}

    def add_into(self, acc: U64, b: U64) -> None:
        """``acc += b`` (mod q)."""
        _LIB.add_mod(address(acc), address(acc), address(b), acc.size, self.q.value)

    # -- rotations ------------------------------------------------------------------------
    def galois_element(self, step: int) -> int:
        return pow(3, step % self.slots, 2 * self.n)

    def _key(self, step: int, keys: dict[int, U64]) -> tuple[npt.NDArray[np.int64], U64]:
        """The permutation and Galois key of a rotation by ``step`` (both derived once)."""
        found = self._rotations.get(step)
        if found is None:
            elt = self.galois_element(step)
            perm = np.ascontiguousarray(self._index[(self._exponent * elt) % (2 * self.n)])
            found = self._rotations[step] = (elt, perm)
        elt, perm = found
        key = keys.get(elt)
        if key is None:
            raise GbdtMessageError(f"no Galois key for a rotation by {step}")
        return perm, key

    def rotate(self, ct: U64, step: int, keys: dict[int, U64]) -> U64:
        """The ciphertext ``ct`` (2 x N, NTT form) rotated left by ``step`` slots."""
        return self.rotate_many(ct, [step], keys)[0]

    def rotate_many(self, ct: U64, steps: Sequence[int], keys: dict[int, U64]) -> list[U64]:
        """``ct`` rotated left by each of ``steps`` (one decomposition for all: hoisting)."""
        if not steps:
            return []
        outs = np.empty((len(steps), 2 * self.n), dtype=np.uint64)
        found = [self._key(s, keys) for s in steps]
        perms = np.array([address(p) for p, _ in found], dtype=np.uint64)
        keys_at = np.array([address(k) for _, k in found], dtype=np.uint64)
        scratch = np.empty(8 * self.n, dtype=np.uint64)  # per call: ctypes releases the GIL
        _LIB.rotate_many(
            address(self.rows(outs)),
            address(ct),
            address(perms),
            address(keys_at),
            len(steps),
            address(scratch),
            self.n,
            self._qt_at,
            self._pt_at,
            self._scalars_at,
        )
        return list(outs)

    def rotate_sum(self, acc: U64, terms: Sequence[tuple[U64, int]], keys: dict[int, U64]) -> None:
        """``acc += sum rot(ct, step)`` over ``terms`` (``step`` 0: ``ct`` as it is), with one
        division by the special prime for the whole sum (hoisted key switching)."""
        if not terms:
            return
        cts = np.array([address(ct) for ct, _ in terms], dtype=np.uint64)
        perms = np.zeros(len(terms), dtype=np.uint64)
        keys_at = np.zeros(len(terms), dtype=np.uint64)
        for i, (_, step) in enumerate(terms):
            if step % self.slots:
                perm, key = self._key(step, keys)
                perms[i], keys_at[i] = address(perm), address(key)
        scratch = np.empty(6 * self.n, dtype=np.uint64)
        _LIB.rotate_sum(
            address(acc),
            address(cts),
            address(perms),
            address(keys_at),
            len(terms),
            address(scratch),
            self.n,
            self._qt_at,
            self._pt_at,
            self._scalars_at,
        )

    def with_shoup(self, key: U64) -> U64:
        """(k0 mod q, k0 mod p, k1 mod q, k1 mod p) and their Shoup companions (8N values)."""
        n = self.n
        out = np.empty(8 * n, dtype=np.uint64)
        out[: 4 * n] = key
        for i, m in enumerate((self.q.value, self.p.value, self.q.value, self.p.value)):
            part = out[i * n : (i + 1) * n]
            if np.any(part >= m):
                raise GbdtMessageError("a Galois key coefficient is not reduced")
            _LIB.shoup_table(address(out[(4 + i) * n :]), address(part), n, m)
        return out
