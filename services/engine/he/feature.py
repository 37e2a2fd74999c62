"""Feature party calls: encrypt H for the label party, decrypt the masked results it returns.

::

    keys = HeKeys.generate(params); public = keys.public_bundle()   # public goes to the label party
    enc = encrypt_rows(keys, h)                                    # Enc(H), seeded symmetric
    z_masked = decrypt_matrix(keys, forward_blob, (rows, m))       # H W + mask
    g_masked = decrypt_matrix(keys, backward_blob, (d, m))         # H^T D + mask2

Every call takes an optional :class:`HePool` (this party's own worker processes).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.he import blob
from services.engine.he.errors import HeKeyMismatch, HeRangeError
from services.engine.he.keys import HeKeys
from services.engine.he.layout import Plan
from services.engine.he.packing import pack_rows, reduce_backward, unpack_forward
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


def decrypt_matrix(
    keys: HeKeys, data: bytes, shape: tuple[int, int], *, pool: HePool | None = None
) -> F64:
    """P: decrypt a ``FORWARD`` blob to ``H W + mask`` (rows x m) or a ``BACKWARD`` blob to
    ``H^T D + mask2`` (d x m). Values beyond the headroom mean a wrong key or a corrupt blob."""
    pool = pool or default_pool()
    p, ctx = keys.params, keys.secret
    plan = Plan(p)
    kind = blob.peek(data)[0]
    if kind not in (blob.Kind.FORWARD, blob.Kind.BACKWARD):
        raise HeKeyMismatch("only FORWARD and BACKWARD blobs decrypt to a matrix")
    what = "forward" if kind == blob.Kind.FORWARD else "backward"
    parsed = blob.unpack(
        data,
        kind=kind,
        fingerprint=keys.fingerprint,
        shape=(p.in_features, p.out_features),
        expected_count=lambda rows: plan.counts(rows)[what],
        limit=ciphertext_limit(p),
    )
    want = (
        (parsed.rows, p.out_features)
        if kind == blob.Kind.FORWARD
        else (p.in_features, p.out_features)
    )
    if tuple(shape) != want:
        raise HeRangeError(f"{what} blob decrypts to {want}, not {tuple(shape)}")
    attach_secret(pool, keys)
    parts = split(len(parsed.cts), pool.workers)
    results = pool.run(
        "decrypt",
        [
            (keys.fingerprint, [bytes(c) for c in parsed.cts[r.start : r.stop]], what)
            if r
            else None
            for r in parts
        ],
    )
    slots = np.concatenate([res for res in results if res is not None])
    if not np.isfinite(slots).all() or np.abs(slots).max() >= ctx.capacity:
        raise HeKeyMismatch(
            f"{what} blob does not decrypt under this key: wrong key, corrupted ciphertext, or "
            f"values beyond the +-2**{p.capacity_bits} headroom"
        )
    if kind == blob.Kind.FORWARD:
        return unpack_forward(plan, slots, parsed.rows)
    return reduce_backward(plan, slots) / p.grad_gain
