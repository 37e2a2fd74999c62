"""Shard operation of the input gradient ``Enc(D W^T + addend)`` (label party).

Registered in :data:`services.engine.he.ops.OPS`; the layout is in :mod:`.layout` and
:mod:`.igrad`, which chains and outputs a shard gets in :func:`.igrad.chain_owners` and
:func:`.igrad.holders`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from services.engine.he import igrad, seal
from services.engine.he.state import State

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]


def _babies(ctx: Any, base: dict[int, Any], chains: list[igrad.Chain]) -> list[Any]:
    """``(g, shifts, ciphertexts)``: each chain's rotated weight ciphertexts, in order."""
    up, start, _ = ctx.plan.ig_steps
    out = []
    for g, shifts in chains:
        cur = base[g] if shifts[0] == 0 else ctx.rotate(base[g], start)
        cts = [cur]
        for _ in shifts[1:]:
            cur = ctx.rotate(cur, up)
            cts.append(cur)
        out.append((g, shifts, cts))
    return out


def _product(ctx: Any, acc: Any, ct: Any, vec: C128) -> Any:
    """``acc + ct * vec`` (``acc`` unchanged for an all-zero ``vec``)."""
    if not vec.any():
        return acc
    pt = ctx.encode(vec, ctx.dg_scale)
    if pt.is_zero():
        return acc
    prod = sealapi.Ciphertext()
    ctx.evaluator.multiply_plain(ct, pt, prod)
    if acc is None:
        return prod
    ctx.evaluator.add_inplace(acc, prod)
    return acc


def op_input_grad(
    state: State,
    fp: str,
    weights: dict[int, bytes],
    chains: list[igrad.Chain],
    d_padded: F64,
    addends: dict[int, C128],
    live: bool = False,
) -> dict[int, Any]:
    """Partial (or, for a sole contributor, whole) outputs ``o -> ciphertext`` over this shard's
    baby rotation chains; the holder of an output adds a fresh randomiser and the addend.

    ``d_padded`` is ``gain * D`` padded to whole output ciphertexts (:func:`igrad.padded_rows`).
    With ``live`` (the calling process's own shard) the outputs stay SEAL objects for
    :func:`~services.engine.he.ops.op_combine`, which serialises them. The giant rotations run
    before the rescale, where their key-switching noise is negligible.
    """
    ctx = state.public(fp)
    plan = ctx.plan
    giant_step, giants = plan.ig_steps[2], plan.ig_cols // plan.ig_b1
    base = {
        g: ctx.load_ct(data, top=True, scale=ctx.wt_scale, what=f"weight ciphertext {g}")
        for g, data in weights.items()
    }
    babies = _babies(ctx, base, chains)
    out: dict[int, Any] = {}
    for o in range(d_padded.shape[0] // plan.ig_rows):
        inner: list[Any] = [None] * giants
        for g, shifts, cts in babies:
            vecs = igrad.giant_patterns(plan, d_padded, o, g, shifts, giant_step)
            for k in range(giants):
                for ct, vec in zip(cts, vecs[k], strict=True):
                    inner[k] = _product(ctx, inner[k], ct, vec)
        acc = None
        for k in reversed(range(giants)):  # Horner: sum_k rot(inner_k, k * giant_step)
            if acc is not None:
                acc = ctx.rotate(acc, giant_step)
            if acc is None:
                acc = inner[k]
            elif inner[k] is not None:
                ctx.evaluator.add_inplace(acc, inner[k])
        addend = addends.get(o)
        if acc is not None or addend is not None:
            done = ctx.finish(acc, addend)
            out[o] = done if live else seal.dump(done)
    return out
