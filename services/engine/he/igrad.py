"""Plain numpy side of the input gradient ``D W^T``: slot vectors in and out, and who does what.

The layout is described in :mod:`services.engine.he.layout` (``ig_*`` of :class:`Plan`). Nothing
here touches SEAL, so every mapping is tested against numpy directly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.he.layout import Plan

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]
Chain = tuple[int, tuple[int, ...]]
"""(weight ciphertext g, baby column shifts b in rotation order)."""


def pack_weights(plan: Plan, w: F64) -> F64:
    """W (d x m) -> weight slot vectors ``(ig_weights, slots)``: ``W[j, g*c + b % c]`` in slot
    ``b*dp + j``, zero for ``j >= d`` and ``k >= m``."""
    width, cols = plan.ig_width, plan.ig_cols
    padded = np.zeros((width, plan.m_pad))
    padded[: w.shape[0], : w.shape[1]] = w
    lanes = np.arange(plan.slots // width) % cols
    out = np.empty((plan.ig_weights, plan.slots))
    for g in range(plan.ig_weights):
        out[g] = padded[:, g * cols + lanes].T.reshape(-1)
    return out


def padded_rows(plan: Plan, d_plain: F64) -> F64:
    """D (rows x m) zero-padded to ``(outputs * ig_rows, m_pad)``."""
    rows = d_plain.shape[0]
    out = np.zeros((plan.ig_outputs(rows) * plan.ig_rows, plan.m_pad))
    out[:rows, : d_plain.shape[1]] = d_plain
    return out


def patterns(plan: Plan, d_padded: F64, o: int, g: int, shifts: tuple[int, ...]) -> C128:
    """Plaintext operands ``(len(shifts), slots)`` of output ``o`` for weight ciphertext ``g``
    rotated by ``r*dp``, ``r`` in ``shifts``: ``D[row(b), g*c + (b+r) % c]`` in slots
    ``b*dp + j`` (``j < d``), real part rows ``2oR + b``, imaginary part rows ``2oR + R + b``."""
    width, cols, half = plan.ig_width, plan.ig_cols, plan.ig_rows // 2
    block = d_padded[o * plan.ig_rows : (o + 1) * plan.ig_rows]
    lanes = np.arange(half)
    cols_of = g * cols + (lanes[None, :] + np.asarray(shifts)[:, None]) % cols  # (n, R)
    vals = block[:half][lanes, cols_of] + 1j * block[half:][lanes, cols_of]  # (n, R)
    keep = np.zeros(width)
    keep[: plan.params.in_features] = 1.0
    out: C128 = (vals[:, :, None] * keep[None, None, :]).reshape(len(shifts), plan.slots)
    return out


def giant_patterns(
    plan: Plan, d_padded: F64, o: int, g: int, babies: tuple[int, ...], giant_step: int
) -> C128:
    """:func:`patterns` ``(giants, len(babies), slots)`` for the shifts ``r = k*b1 + b``, each
    pre-rotated by ``-k * giant_step`` (its giant rotation undoes it)."""
    b1, giants = plan.ig_b1, plan.ig_cols // plan.ig_b1
    shifts = tuple(k * b1 + b for k in range(giants) for b in babies)
    vecs = patterns(plan, d_padded, o, g, shifts).reshape(giants, len(babies), plan.slots)
    for k in range(1, giants):
        vecs[k] = np.roll(vecs[k], k * giant_step, axis=-1)
    return vecs


def addend_slots(plan: Plan, addend: F64) -> C128:
    """Addend (rows x d) -> complex slot vectors ``(outputs, slots)`` in the output layout."""
    rows, width, half = addend.shape[0], plan.ig_width, plan.ig_rows // 2
    n_out = plan.ig_outputs(rows)
    grid = np.zeros((n_out * plan.ig_rows, width))
    grid[:rows, : addend.shape[1]] = addend
    cube = grid.reshape(n_out, 2, half * width)
    out: C128 = cube[:, 0] + 1j * cube[:, 1]
    return out


def unpack(plan: Plan, slots: C128, rows: int) -> F64:
    """Decrypted output slots ``(outputs, slots)`` -> the rows x d matrix they carry."""
    n_out, width = slots.shape[0], plan.ig_width
    cube = np.stack([slots.real, slots.imag], axis=1)  # (n_out, 2, slots)
    flat = cube.reshape(n_out * plan.ig_rows, width)
    return np.ascontiguousarray(flat[:rows, : plan.params.in_features])


def chain_owners(plan: Plan, workers: int) -> list[list[Chain]]:
    """Rotation chains per worker: contiguous, so a worker loads only its weight ciphertexts."""
    chains = plan.ig_chains
    out: list[list[Chain]] = [[] for _ in range(workers)]
    for u, chain in enumerate(chains):
        out[u * workers // len(chains)].append(chain)
    return out


def holders(plan: Plan, workers: int, rows: int) -> list[int]:
    """Per output ciphertext, the one worker that adds the randomiser and the addend."""
    active = [w for w, chains in enumerate(chain_owners(plan, workers)) if chains]
    return [active[o % len(active)] for o in range(plan.ig_outputs(rows))]
