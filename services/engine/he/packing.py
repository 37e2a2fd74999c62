"""Plain numpy side of the layout: slot vectors in and out, diagonals and backward patterns.

Nothing here touches SEAL, so every mapping is tested against numpy directly. The layout itself is
described in :mod:`services.engine.he.layout`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.he.layout import Plan

F64 = npt.NDArray[np.float64]
Diagonal = F64 | float
"""A forward plaintext operand: a slot vector, or one scalar when a block spans all slots."""


def pack_rows(plan: Plan, h: F64) -> F64:
    """H (rows x d) -> slot vectors ``(chunks * n_in, slots)`` in upload order."""
    rows = h.shape[0]
    chunks, t_count, block = plan.chunks(rows), plan.blocks, plan.block
    full = np.zeros((chunks * block, plan.n_in * t_count))
    full[:rows, : h.shape[1]] = h
    cube = full.reshape(chunks, block, plan.n_in, t_count).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(cube).reshape(chunks * plan.n_in, plan.slots)


def unpack_forward(plan: Plan, slots: F64, rows: int) -> F64:
    """Decrypted forward slots ``(chunks * n_out, slots)`` -> Z (rows x m)."""
    chunks, t_count, block = plan.chunks(rows), plan.blocks, plan.block
    cube = slots.reshape(chunks, plan.n_out, block, t_count).transpose(0, 2, 1, 3)
    flat = cube.reshape(chunks * block, plan.n_out * t_count)
    return np.ascontiguousarray(flat[:rows, : plan.params.out_features])


def forward_slots(plan: Plan, values: F64, rows: int) -> F64:
    """Inverse of :func:`unpack_forward` for a full ``(chunks*block, n_out*T)`` grid."""
    chunks, t_count, block = plan.chunks(rows), plan.blocks, plan.block
    cube = values.reshape(chunks, block, plan.n_out, t_count).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(cube).reshape(chunks * plan.n_out, plan.slots)


def backward_cube(plan: Plan, slots: F64) -> F64:
    """View backward slots as ``(chunks, n_in, block/m_pad, m_pad, T)``: axes 0 and 2 are summed."""
    chunks = slots.shape[0] // plan.n_in
    mp = plan.m_pad
    return slots.reshape(chunks, plan.n_in, plan.block // mp, mp, plan.blocks)


def group_sums(plan: Plan, slots: F64) -> F64:
    """Backward slots ``(chunks * n_in, slots)`` -> per ``(column, k)`` sums ``(n_in*T, m_pad)``.

    Sums run over chunks and over the rows ``u = k (mod m_pad)`` of each column, pairwise (numpy
    sums a contiguous last axis pairwise), so ~2**27-sized masks cancel to ~1e-8.
    """
    cube = backward_cube(plan, slots)
    chunks, n_in, q, mp, t_count = cube.shape
    lined = np.ascontiguousarray(cube.transpose(1, 4, 3, 0, 2)).reshape(
        n_in * t_count, mp, chunks * q
    )
    out: F64 = lined.sum(axis=-1)
    return out


def reduce_backward(plan: Plan, slots: F64) -> F64:
    """Decrypted backward slots -> ``H^T D + mask2`` (d x m)."""
    sums = group_sums(plan, slots)
    return np.ascontiguousarray(sums[: plan.params.in_features, : plan.params.out_features])


def forward_diagonals(
    plan: Plan, w: F64, inputs: list[int]
) -> dict[tuple[int, int, int, int], Diagonal]:
    """Pre-rotated diagonals ``(o, g, i, b) -> operand`` of W for input ciphertexts ``inputs``.

    All-zero diagonals are left out (SEAL refuses a product with a zero plaintext).
    """
    t_count, block = plan.blocks, plan.block
    d, m = w.shape
    padded = np.zeros((plan.n_in * t_count, plan.n_out * t_count))
    padded[:d, :m] = w
    t = np.arange(t_count)
    out: dict[tuple[int, int, int, int], Diagonal] = {}
    for o in range(plan.n_out):
        for g, babies in plan.fwd_terms.items():
            giant = plan.fwd_giant(g)
            for i in inputs:
                for b in babies:
                    src = t + giant + b
                    inside = (src >= 0) & (src < t_count)
                    vals = np.where(
                        inside,
                        padded[i * t_count + np.clip(src, 0, t_count - 1), o * t_count + t],
                        0.0,
                    )
                    if not vals.any():
                        continue
                    if t_count == 1:
                        out[(o, g, i, b)] = float(vals[0])
                    else:
                        out[(o, g, i, b)] = np.tile(np.roll(vals, giant % t_count), block)
    return out


def backward_patterns(plan: Plan, d_chunk: F64, valid: int) -> dict[tuple[int, int], F64]:
    """Pre-rotated masks ``(g, b) -> slot vector`` of one chunk of D for one input ciphertext.

    ``d_chunk`` is ``(block, m)`` (rows past the batch zero); ``valid`` is how many of the
    ciphertext's T columns are real (the rest are zeroed so padding contributes nothing).
    """
    block, mp, b1, t_count = plan.block, plan.m_pad, plan.bwd_b1, plan.blocks
    dp = np.zeros((block, mp))
    dp[:, : d_chunk.shape[1]] = d_chunk
    u = np.arange(block)
    keep = (np.arange(t_count) < valid).astype(np.float64)
    out: dict[tuple[int, int], F64] = {}
    for g, babies in plan.bwd_terms.items():
        for b in babies:
            rows = dp[(u + g * b1 + b) % block, u % mp]
            if not rows.any():
                continue
            out[(g, b)] = np.roll(np.outer(rows, keep).reshape(-1), g * b1 * t_count)
    return out
