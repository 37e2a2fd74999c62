"""Feature party calls: encrypt H for the label party, decrypt the masked results it returns.

::

    keys = HeKeys.generate(params); public = keys.public_bundle()   # public goes to the label party
    enc = encrypt_rows(keys, h)                                    # Enc(H), seeded symmetric
    z_masked = decrypt_matrix(keys, forward_blob, (rows, m))       # H W + mask
    g_masked = decrypt_matrix(keys, backward_blob, (d, m))         # H^T D + mask2
    enc_w = encrypt_weights(keys, w_p)                             # Enc(W_P), every step
    grad_h = decrypt_matrix(keys, input_grad_blob, (rows, d))      # D W_P^T + addend

Every call takes an optional :class:`HePool` (this party's own worker processes).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.he import blob, igrad
from services.engine.he.errors import HeKeyMismatch, HeRangeError
from services.engine.he.keys import HeKeys
from services.engine.he.layout import Plan
from services.engine.he.packing import pack_rows, reduce_backward, unpack_forward
from services.engine.he.params import WEIGHT_BOUND
from services.engine.he.pool import HePool, default_pool
from services.engine.he.seal import ciphertext_limit
from services.engine.he.shards import (
    F64,
    attach_secret,
    checked_matrix,
    split,
)


def encrypt_rows(keys: HeKeys, h: npt.ArrayLike, *, pool: HePool | None = None) -> bytes:
    """P: encrypt H (rows x d) in the packed layout; returns a ``ROWS`` blob."""
    pool = pool or default_pool()
    p = keys.params
    arr = np.asarray(h, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != p.in_features:
        raise HeRangeError(f"H must be rows x {p.in_features}, got {arr.shape}")
    plan = Plan(p)
    plan.chunks(arr.shape[0])
    arr = checked_matrix(arr, arr.shape, "H", keys.secret.capacity)
    vectors = pack_rows(plan, arr)
    attach_secret(pool, keys)
    parts = split(len(vectors), pool.workers)
    results = pool.run(
        "encrypt", [(keys.fingerprint, vectors[r.start : r.stop]) if r else None for r in parts]
    )
    cts = [ct for res in results if res for ct in res]
    return blob.pack(
        blob.Kind.ROWS, keys.fingerprint, arr.shape[0], p.in_features, p.out_features, cts
    )


def encrypt_weights(keys: HeKeys, w_p: npt.ArrayLike, *, pool: HePool | None = None) -> bytes:
    """P: encrypt ``W_P`` (d x m, entries within ``+-WEIGHT_BOUND``) for the input gradient;
    returns a ``WEIGHTS`` blob (one seeded ciphertext whenever ``next_pow2(d) * next_pow2(m) <=
    slots``)."""
    pool = pool or default_pool()
    p = keys.params
    arr = checked_matrix(w_p, (p.in_features, p.out_features), "W_P", WEIGHT_BOUND)
    plan = Plan(p)
    vectors = igrad.pack_weights(plan, arr)
    attach_secret(pool, keys)
    parts = split(len(vectors), pool.workers)
    results = pool.run(
        "encrypt",
        [(keys.fingerprint, vectors[r.start : r.stop], True) if r else None for r in parts],
    )
    cts = [ct for res in results if res for ct in res]
    return blob.pack(
        blob.Kind.WEIGHTS, keys.fingerprint, p.in_features, p.in_features, p.out_features, cts
    )


_WHAT = {
    blob.Kind.FORWARD: "forward",
    blob.Kind.BACKWARD: "backward",
    blob.Kind.INPUT_GRAD: "input_grad",
}


def decrypt_matrix(
    keys: HeKeys, data: bytes, shape: tuple[int, int], *, pool: HePool | None = None
) -> F64:
    """P: decrypt a ``FORWARD`` blob to ``H W + mask`` (rows x m), a ``BACKWARD`` blob to
    ``H^T D + mask2`` (d x m) or an ``INPUT_GRAD`` blob to ``D W_P^T + addend`` (rows x d).
    Values beyond the headroom mean a wrong key or a corrupt blob."""
    pool = pool or default_pool()
    p, ctx = keys.params, keys.secret
    plan = Plan(p)
    kind = blob.peek(data)[0]
    if kind not in _WHAT:
        raise HeKeyMismatch("only FORWARD, BACKWARD and INPUT_GRAD blobs decrypt to a matrix")
    what = _WHAT[kind]
    parsed = blob.unpack(
        data,
        kind=kind,
        fingerprint=keys.fingerprint,
        shape=(p.in_features, p.out_features),
        expected_count=lambda rows: plan.counts(rows)[what],
        limit=ciphertext_limit(p),
    )
    want = {
        blob.Kind.FORWARD: (parsed.rows, p.out_features),
        blob.Kind.BACKWARD: (p.in_features, p.out_features),
        blob.Kind.INPUT_GRAD: (parsed.rows, p.in_features),
    }[kind]
    if tuple(shape) != want:
        raise HeRangeError(f"{what} blob decrypts to {want}, not {tuple(shape)}")
    attach_secret(pool, keys)
    complex_slots = kind == blob.Kind.INPUT_GRAD
    cts = [bytes(c) for c in parsed.cts]
    parts = split(len(cts), pool.workers)
    fp = keys.fingerprint
    results = pool.run(
        "decrypt", [(fp, cts[r.start : r.stop], what, complex_slots) if r else None for r in parts]
    )
    slots = np.concatenate([res for res in results if res is not None])
    views = (slots.real, slots.imag) if complex_slots else (slots,)
    if not all(np.isfinite(x).all() and np.abs(x).max() < ctx.capacity for x in views):
        raise HeKeyMismatch(
            f"{what} blob does not decrypt under this key: wrong key, corrupted ciphertext, or "
            f"values beyond the +-2**{p.capacity_bits} headroom"
        )
    if kind == blob.Kind.FORWARD:
        return unpack_forward(plan, slots, parsed.rows)
    if kind == blob.Kind.INPUT_GRAD:
        return igrad.unpack(plan, slots, parsed.rows) / p.grad_gain
    return reduce_backward(plan, slots) / p.grad_gain
