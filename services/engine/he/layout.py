"""The packed row-interleaved layout and its baby-step/giant-step rotation plan.

A ciphertext holds ``T = slots / block`` columns of ``block`` rows, interleaved row by row:
ciphertext ``i`` of row chunk ``c`` holds ``H[c*block + u, i*T + t]`` in slot ``u*T + t``. Rows and
columns beyond the batch are zero.

Forward ``Z = H W``: output ciphertext ``o`` holds ``Z[c*block + u, o*T + t]`` in the same layout.
Rotating by ``delta`` moves column ``t + delta`` of the same row to column ``t`` (slots that would
cross a row are masked out by the plaintext)::

    out_o = sum_i sum_delta rot(c_i, delta) * P[o,i,delta],
    P[o,i,delta][u*T+t] = W[i*T+t+delta, o*T+t]   if 0 <= t+delta < T, else 0

over the offsets ``delta`` in ``(-T, T)`` that can be non-zero for the layer shape, split as
``delta = g*b1 + b`` (``0 <= b < b1``, ``g`` of either sign): the baby rotations
``rot(c_i, b)`` are shared by every output, the plaintexts are pre-rotated so that one giant
rotation per ``(o, g)`` suffices.

Backward ``G = H^T D`` (hybrid diagonals, ``mp = next_pow2(m)``). Rotating by ``r*T`` moves every
column cyclically by ``r`` rows (``T * block = slots``), so no row ever crosses a block::

    w_i[u*T+t] = sum_{r<mp} H[(u+r) % block, i*T+t] * D[(u+r) % block, u % mp]

and the feature party decrypts ``w_i + mask`` and sums the slots with ``u = k (mod mp)`` of each
column to get ``G[i*T+t, k] + mask2[i*T+t, k]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from services.engine.he.errors import HeParamsError
from services.engine.he.params import MAX_ROWS, HeParams, next_pow2


def _best_split(diagonals: np.ndarray, baby_weight: float, giant_weight: float, limit: int) -> int:
    """Baby-step size ``b1`` minimising the weighted rotation count for these diagonals."""
    best, best_cost = 1, math.inf
    for b1 in range(1, limit + 1):
        babies = np.unique(diagonals % b1)
        giants = np.unique(diagonals // b1)
        cost = baby_weight * int((babies != 0).sum()) + giant_weight * int((giants != 0).sum())
        if cost < best_cost - 1e-9:
            best, best_cost = b1, cost
    return best


@dataclass(frozen=True)
class Plan:
    """Layout and rotation schedule; a pure function of :class:`HeParams`."""

    params: HeParams

    @property
    def slots(self) -> int:
        """Slots per ciphertext."""
        return self.params.slots

    @property
    def block(self) -> int:
        """Rows per block."""
        return self.params.block_rows

    @property
    def blocks(self) -> int:
        """Blocks (columns) per ciphertext, ``T``."""
        return self.slots // self.block

    @property
    def n_in(self) -> int:
        """Input ciphertexts per row chunk (columns of H)."""
        return -(-self.params.in_features // self.blocks)

    @property
    def n_out(self) -> int:
        """Forward output ciphertexts per row chunk (columns of Z)."""
        return -(-self.params.out_features // self.blocks)

    @property
    def m_pad(self) -> int:
        """Backward diagonal count: ``out_features`` rounded up to a power of two."""
        return next_pow2(self.params.out_features)

    def chunks(self, rows: int) -> int:
        """Row chunks for a batch of ``rows`` rows."""
        if not 1 <= rows <= MAX_ROWS:
            raise HeParamsError(f"a batch must have 1..{MAX_ROWS} rows, got {rows}")
        return -(-rows // self.block)

    @cached_property
    def fwd_offsets(self) -> tuple[int, ...]:
        """Column offsets ``delta`` that can be non-zero for the layer shape."""
        t_count = self.blocks
        outs = np.arange(min(t_count, self.params.out_features))
        ins = np.arange(min(t_count, self.params.in_features))
        return tuple(int(x) for x in np.unique(ins[None, :] - outs[:, None]))

    @cached_property
    def fwd_b1(self) -> int:
        """Forward baby-step size."""
        diags = np.asarray(self.fwd_offsets)
        return _best_split(diags, float(self.n_in), float(self.n_out), min(len(diags), 512))

    @cached_property
    def fwd_terms(self) -> dict[int, tuple[int, ...]]:
        """Giant step ``g`` (may be negative) -> baby steps ``b`` with an offset ``g*b1 + b``."""
        terms: dict[int, list[int]] = {}
        for delta in self.fwd_offsets:
            g, b = divmod(delta, self.fwd_b1)
            terms.setdefault(g, []).append(b)
        return {g: tuple(sorted(bs)) for g, bs in sorted(terms.items())}

    def fwd_giant(self, g: int) -> int:
        """Rotation of giant step ``g`` (slots)."""
        return g * self.fwd_b1

    @cached_property
    def fwd_babies(self) -> tuple[int, ...]:
        """Forward baby steps used (slots)."""
        return tuple(sorted({b for bs in self.fwd_terms.values() for b in bs}))

    @cached_property
    def bwd_b1(self) -> int:
        """Backward baby-step size (in rows)."""
        return _best_split(np.arange(self.m_pad), 1.0, 1.0, self.m_pad)

    @cached_property
    def bwd_terms(self) -> dict[int, tuple[int, ...]]:
        """Backward giant step -> baby steps (row shift ``r = g*b1 + b < m_pad``)."""
        b1 = self.bwd_b1
        return {
            g: tuple(b for b in range(b1) if g * b1 + b < self.m_pad)
            for g in range(-(-self.m_pad // b1))
        }

    @cached_property
    def steps(self) -> tuple[int, ...]:
        """Every rotation step (mod slots, non-zero) the evaluation uses: one Galois key each."""
        s, t_count = self.slots, self.blocks
        found = {b % s for b in self.fwd_babies}
        found |= {self.fwd_giant(g) % s for g in self.fwd_terms}
        found |= {b * t_count % s for b in range(min(self.bwd_b1, self.m_pad))}
        found |= {g * self.bwd_b1 * t_count % s for g in self.bwd_terms}
        found.discard(0)
        return tuple(sorted(found))

    def galois_elements(self) -> list[int]:
        """SEAL Galois elements (``3**step mod 2N``) for :attr:`steps`."""
        two_n = 2 * self.params.poly_modulus_degree
        return [pow(3, step, two_n) for step in self.steps]

    def counts(self, rows: int) -> dict[str, int]:
        """Ciphertext counts for a batch: upload, forward and backward download."""
        chunks = self.chunks(rows)
        return {
            "chunks": chunks,
            "up": chunks * self.n_in,
            "forward": chunks * self.n_out,
            "backward": chunks * self.n_in,
        }
