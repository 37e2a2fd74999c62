"""Label party calls: compute on the feature party's ciphertexts with plaintext W and D.

::

    prepared = prepare_weights(public, w, rows=batch)   # while the upload is on its way
    fwd_blob = forward(public, enc, prepared, mask)     # Enc(H W + mask)
    bwd_blob = backward(public, enc, d_plain, mask2)    # Enc(H^T D + mask2), same upload
    ig_blob = input_grad(public, enc_w, d_plain, addend) # Enc(D W_P^T + addend)

``public`` is the feature party's bundle (bytes or a parsed :class:`PublicBundle`). Every call takes
an optional :class:`HePool`; prepared weights live in the workers of the pool that prepared them.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.engine.he import blob, igrad, ops
from services.engine.he.bundle import PublicBundle
from services.engine.he.errors import HeParamsError, HeRangeError
from services.engine.he.layout import Plan
from services.engine.he.masks import backward_mask_slots, check_mask, forward_mask_slots
from services.engine.he.params import MAX_ROWS, WEIGHT_BOUND
from services.engine.he.pool import HePool, default_pool
from services.engine.he.seal import ciphertext_limit
from services.engine.he.shards import (
    F64,
    Public,
    attach_public,
    checked_matrix,
    mask_holders,
    owned_inputs,
    owner,
    public_bundle,
    zero_demand,
)


@dataclass(frozen=True)
class PreparedWeights:
    """W encoded as plaintext diagonals in the workers of one pool (:func:`prepare_weights`)."""

    fingerprint: str
    wid: str
    weights: F64
    pool_token: str


def prepare_weights(
    public: Public, w: npt.ArrayLike, *, pool: HePool | None = None, rows: int | None = None
) -> PreparedWeights:
    """A: encode W's diagonals in the workers (and, given ``rows``, precompute the randomisers of
    one forward + backward of that many rows). Run it while the upload is on its way."""
    pool = pool or default_pool()
    bundle = public_bundle(public)
    p, plan = bundle.params, bundle.plan
    weights = checked_matrix(w, (p.in_features, p.out_features), "W", 2.0**p.capacity_bits)
    attach_public(pool, bundle)
    wid = uuid.uuid4().hex
    fp = bundle.fingerprint
    pool.run(
        "prepare",
        [(fp, wid, weights, owned_inputs(plan, pool.workers, k)) for k in range(pool.workers)],
    )
    if rows is not None:
        demand = zero_demand(plan, pool.workers, rows)
        pool.run("zeros", [(fp, n) if n else None for n in demand])
    return PreparedWeights(fp, wid, weights, pool.token)


def _items(plan: Plan, pool: HePool, parsed: blob.Blob) -> list[list[ops.Item]]:
    """Per worker ``(chunk, i, ciphertext)``; only an in-process shard gets views, not copies."""
    chunks = plan.chunks(parsed.rows)
    items: list[list[Any]] = [[] for _ in range(pool.workers)]
    for c in range(chunks):
        for i in range(plan.n_in):
            w = owner(plan, pool.workers, c, i)
            ct = parsed.cts[c * plan.n_in + i]
            items[w].append((c, i, ct if w == 0 and pool.in_process else bytes(ct)))
    return items


def _upload(bundle: PublicBundle, enc: bytes) -> blob.Blob:
    p, plan = bundle.params, bundle.plan
    return blob.unpack(
        enc,
        kind=blob.Kind.ROWS,
        fingerprint=bundle.fingerprint,
        shape=(p.in_features, p.out_features),
        expected_count=lambda rows: plan.counts(rows)["up"],
        limit=ciphertext_limit(p),
    )


def forward(
    public: Public,
    enc: bytes,
    weights: PreparedWeights | npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    pool: HePool | None = None,
    warm_backward: bool = False,
) -> bytes:
    """A: ``Enc(H W + mask)`` as a ``FORWARD`` blob; ``mask`` is rows x m within +-2**mask_bits.

    ``warm_backward`` (training): the workers then rotate the upload for :func:`backward` as work
    deferred past this call; in a subprocess worker it overlaps whatever the caller does next.
    """
    pool = pool or default_pool()
    bundle = public_bundle(public)
    p, plan, fp = bundle.params, bundle.plan, bundle.fingerprint
    parsed = _upload(bundle, enc)
    if not (
        isinstance(weights, PreparedWeights)
        and weights.fingerprint == fp
        and weights.pool_token == pool.token
    ):
        raw = weights.weights if isinstance(weights, PreparedWeights) else weights
        weights = prepare_weights(bundle, raw, pool=pool)
    mask_arr = check_mask(mask, (parsed.rows, p.out_features), p.mask_bound)
    attach_public(pool, bundle)
    slot_masks = forward_mask_slots(plan, mask_arr, np.random.default_rng())
    digest = hashlib.sha256(enc).hexdigest()
    chunks = plan.chunks(parsed.rows)
    holders = mask_holders(plan, pool.workers, chunks)
    items = _items(plan, pool, parsed)
    shards: list[tuple[Any, ...] | None] = []
    for w in range(pool.workers):
        masks = {k: slot_masks[k[0] * plan.n_out + k[1]] for k, h in holders.items() if h == w}
        ref = (weights.wid, weights.weights, owned_inputs(plan, pool.workers, w))
        args = (fp, ref, digest, items[w], masks, warm_backward)
        shards.append(args if items[w] or masks else None)
    results = pool.run("forward", shards)
    outs = []
    for c in range(chunks):
        for o in range(plan.n_out):
            parts = [res[(c, o)] for res in results if res and (c, o) in res]
            outs.append(parts[0] if len(parts) == 1 else pool.run_local("combine", (fp, parts)))
    return blob.pack(blob.Kind.FORWARD, fp, parsed.rows, p.in_features, p.out_features, outs)


def backward(
    public: Public,
    enc: bytes,
    d_plain: npt.ArrayLike,
    mask2: npt.ArrayLike,
    *,
    pool: HePool | None = None,
) -> bytes:
    """A: ``Enc(H^T D + mask2)`` (in masked partials) as a ``BACKWARD`` blob, from the same upload.

    ``mask2`` is d x m within ``+-params.grad_mask_bound``; the work runs on ``grad_gain * D``.
    """
    pool = pool or default_pool()
    bundle = public_bundle(public)
    p, plan, fp = bundle.params, bundle.plan, bundle.fingerprint
    parsed = _upload(bundle, enc)
    rows, block = parsed.rows, plan.block
    gain = p.grad_gain
    grad = checked_matrix(d_plain, (rows, p.out_features), "D", 2.0**p.capacity_bits / gain) * gain
    shape = (p.in_features, p.out_features)
    mask_arr = check_mask(mask2, shape, p.grad_mask_bound) * gain
    attach_public(pool, bundle)
    chunks = plan.chunks(rows)
    slot_masks = backward_mask_slots(plan, mask_arr, chunks, np.random.default_rng())
    digest = hashlib.sha256(enc).hexdigest()
    items = _items(plan, pool, parsed)
    shards: list[tuple[Any, ...] | None] = []
    for w in range(pool.workers):
        if not items[w]:
            shards.append(None)
            continue
        d_chunks = {}
        for c in sorted({c for c, _, _ in items[w]}):
            part = np.zeros((block, p.out_features))
            src = grad[c * block : (c + 1) * block]
            part[: len(src)] = src
            d_chunks[c] = part
        masks = {(c, i): slot_masks[c * plan.n_in + i] for c, i, _ in items[w]}
        shards.append((fp, digest, items[w], d_chunks, masks))
    results = pool.run("backward", shards)
    merged: dict[tuple[int, int], bytes] = {}
    for res in results:
        merged.update(res or {})
    outs = [merged[(c, i)] for c in range(chunks) for i in range(plan.n_in)]
    if len(outs) != chunks * plan.n_in:
        raise HeParamsError("a worker returned an incomplete backward")
    return blob.pack(blob.Kind.BACKWARD, fp, rows, p.in_features, p.out_features, outs)


def input_grad(
    public: Public,
    enc_w: bytes,
    d_plain: npt.ArrayLike,
    addend: npt.ArrayLike,
    *,
    pool: HePool | None = None,
) -> bytes:
    """A: ``Enc(D W_P^T + addend)`` (rows x d) as an ``INPUT_GRAD`` blob, from P's ``WEIGHTS`` blob.

    ``d_plain`` is rows x m, ``addend`` rows x d (A passes ``D W_A^T``); the work runs on
    ``grad_gain * D``. The result is re-randomised: it reveals nothing beyond its decryption.
    """
    pool = pool or default_pool()
    bundle = public_bundle(public)
    p, plan, fp = bundle.params, bundle.plan, bundle.fingerprint
    parsed = blob.unpack(
        enc_w,
        kind=blob.Kind.WEIGHTS,
        fingerprint=fp,
        shape=(p.in_features, p.out_features),
        expected_count=lambda rows: _weight_count(plan, rows),
        limit=ciphertext_limit(p),
    )
    gain, room = p.grad_gain, 2.0**p.capacity_bits / p.grad_gain
    arr = np.asarray(d_plain, dtype=np.float64)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= MAX_ROWS:
        raise HeRangeError(f"D must be rows x {p.out_features} with 1..{MAX_ROWS} rows")
    rows = arr.shape[0]
    grad = checked_matrix(arr, (rows, p.out_features), "D", room / WEIGHT_BOUND)
    add = checked_matrix(addend, (rows, p.in_features), "addend", room)
    if float(np.abs(grad).sum(axis=1).max()) * WEIGHT_BOUND + float(np.abs(add).max()) >= room:
        raise HeRangeError(
            f"|D| row sums x {WEIGHT_BOUND:g} + |addend| must stay below {room:g} (the headroom)"
        )
    attach_public(pool, bundle)
    d_padded = igrad.padded_rows(plan, grad * gain)
    addends = igrad.addend_slots(plan, add * gain)
    owners = igrad.chain_owners(plan, pool.workers)
    holder = igrad.holders(plan, pool.workers, rows)
    shards: list[tuple[Any, ...] | None] = []
    for w in range(pool.workers):
        mine = {o: addends[o] for o, h in enumerate(holder) if h == w}
        if not owners[w] and not mine:
            shards.append(None)
            continue
        local = w == 0 and pool.in_process
        cts = {g: parsed.cts[g] if local else bytes(parsed.cts[g]) for g, _ in owners[w]}
        shards.append((fp, cts, owners[w], d_padded, mine, local))
    results = pool.run("input_grad", shards)
    outs = []
    for o in range(len(holder)):
        parts = [res[o] for res in results if res and o in res]
        single = len(parts) == 1 and isinstance(parts[0], bytes)
        outs.append(parts[0] if single else pool.run_local("combine", (fp, parts)))
    return blob.pack(blob.Kind.INPUT_GRAD, fp, rows, p.in_features, p.out_features, outs)


def _weight_count(plan: Plan, rows: int) -> int:
    if rows != plan.params.in_features:
        raise HeParamsError(f"a WEIGHTS blob names {plan.params.in_features} rows, not {rows}")
    return plan.ig_weights
