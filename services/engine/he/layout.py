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

Input gradient ``D W^T`` (rows x d, ``dp = next_pow2(d)``, ``c = min(mp, slots/dp)`` columns of W
per weight ciphertext, ``R = slots/dp``). Weight ciphertext ``g`` holds ``W[j, g*c + b % c]`` in
slot ``b*dp + j``; rotating by ``r*dp`` gives ``W[j, g*c + (b+r) % c]``. Output ciphertext ``o``
holds row ``2oR + b`` in the real and row ``2oR + R + b`` in the imaginary part of slots
``b*dp .. b*dp+d-1``::

    out_o = sum_g sum_{r<c} rot(w_g, r*dp) * P[o,g,r],
    P[o,g,r][b*dp+j] = D[2oR+b, g*c+(b+r)%c] + i D[2oR+R+b, g*c+(b+r)%c]

Baby-step/giant-step with ``r = g*b1 + b``: the baby rotations ``rot(w_g, b*dp)`` are shared by
every output, the plaintexts are pre-rotated by ``g*b1*dp``, and each output needs ``c/b1 - 1``
giant rotations (Horner); ``b1 = c`` (no giant step) once there are several output ciphertexts.
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
    def layer_steps(self) -> frozenset[int]:
        """Rotation steps (mod slots, non-zero) of the forward and the backward."""
        s, t_count = self.slots, self.blocks
        found = {b % s for b in self.fwd_babies}
        found |= {self.fwd_giant(g) % s for g in self.fwd_terms}
        found |= {b * t_count % s for b in range(min(self.bwd_b1, self.m_pad))}
        found |= {g * self.bwd_b1 * t_count % s for g in self.bwd_terms}
        found.discard(0)
        return frozenset(found)

    @cached_property
    def steps(self) -> tuple[int, ...]:
        """Every rotation step (mod slots, non-zero) the evaluation uses: one Galois key each."""
        found = set(self.layer_steps)
        found |= {step for step in self.ig_steps if step}
        return tuple(sorted(found))

    # Input gradient ``D W^T`` (rows x d) from one ``Enc(W)``: see :mod:`.igrad`.

    @property
    def ig_width(self) -> int:
        """Slots per output row: ``in_features`` rounded up to a power of two."""
        return next_pow2(self.params.in_features)

    @property
    def ig_cols(self) -> int:
        """Columns of W (gradient coordinates k) one weight ciphertext holds."""
        return min(self.m_pad, self.slots // self.ig_width)

    @property
    def ig_weights(self) -> int:
        """Weight ciphertexts: one whenever ``ig_width * m_pad <= slots``."""
        return self.m_pad // self.ig_cols

    @property
    def ig_rows(self) -> int:
        """Batch rows per output ciphertext (real and imaginary halves of the slots)."""
        return 2 * self.slots // self.ig_width

    def ig_outputs(self, rows: int) -> int:
        """Output ciphertexts for a batch of ``rows`` rows."""
        self.chunks(rows)
        return -(-rows // self.ig_rows)

    def _ig_pick(self, residue: int) -> int:
        """A rotation step congruent to ``residue`` modulo a weight ciphertext's period: one the
        layer already has a key for if any (a weight ciphertext is periodic)."""
        period = self.ig_width * self.ig_cols
        have = sorted(step for step in self.layer_steps if step % period == residue % period)
        return have[0] if have else residue % period

    def _ig_steps_for(self, b1: int) -> tuple[int, int, int]:
        width, half = self.ig_width, -(-b1 // 2)
        up = self._ig_pick(width) if b1 > 2 else 0
        start = self._ig_pick(half * width) if b1 > 1 else 0
        giant = self._ig_pick(b1 * width) if b1 < self.ig_cols else 0
        return up, start, giant

    @cached_property
    def ig_b1(self) -> int:
        """Baby steps (a power of two dividing ``ig_cols``) for the job's batch (``block_rows``).

        Two workers split the ``b1 - 1`` baby rotations and each rotates its partial sums by
        ``ig_cols / b1 - 1`` giant steps per output ciphertext; the choice minimises that per
        worker, then the Galois keys added, then the rotations in all."""
        n_out, n_w, cols = self.ig_outputs(self.block), self.ig_weights, self.ig_cols
        best: tuple[float, int, int, int] | None = None
        b1 = 1
        while b1 <= cols:
            giants = n_out * (cols // b1 - 1)
            added = len({s for s in self._ig_steps_for(b1) if s} - self.layer_steps)
            cost = (n_w * (b1 - 1) / 2 + giants, added, n_w * (b1 - 1) + giants, -b1)
            best = cost if best is None or cost < best else best
            b1 *= 2
        assert best is not None
        return -best[3]

    @cached_property
    def ig_steps(self) -> tuple[int, int, int]:
        """Rotation steps ``(up, start, giant)`` of the input gradient (0: unused): a baby step
        ``+dp``, the second chain's start ``ceil(b1/2)*dp`` and the giant step ``b1*dp``."""
        return self._ig_steps_for(self.ig_b1)

    @cached_property
    def ig_chains(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """Baby rotation chains ``(g, shifts)`` of weight ciphertext ``g``: ``0..h-1`` from the
        ciphertext itself, ``h..b1-1`` from its rotation by ``start`` (``h = ceil(b1/2)``), each
        by ``up`` steps: two independent chains, one per core."""
        b1 = self.ig_b1
        half = -(-b1 // 2)
        chains = []
        for g in range(self.ig_weights):
            chains.append((g, tuple(range(half))))
            if b1 > half:
                chains.append((g, tuple(range(half, b1))))
        return tuple(chains)

    def galois_elements(self) -> list[int]:
        """SEAL Galois elements (``3**step mod 2N``) for :attr:`steps`."""
        two_n = 2 * self.params.poly_modulus_degree
        return [pow(3, step, two_n) for step in self.steps]

    def counts(self, rows: int) -> dict[str, int]:
        """Ciphertext counts for a batch: upload, forward and backward download, the weight
        upload and the input gradient download."""
        chunks = self.chunks(rows)
        return {
            "chunks": chunks,
            "up": chunks * self.n_in,
            "forward": chunks * self.n_out,
            "backward": chunks * self.n_in,
            "weights": self.ig_weights,
            "input_grad": self.ig_outputs(rows),
        }
