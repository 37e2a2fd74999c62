"""Additive masks that the label party adds under encryption, and what they hide.

The label party A adds ``Enc(R)`` to each result before the feature party P decrypts it. A draws
every real mask coordinate uniformly in ``[-2**k, 2**k]`` (``k = HeParams.mask_bits``, default 26),
and every slot's imaginary part too (P could otherwise decode the imaginary parts, which carry only
the W-dependent CKKS noise); padded slots get fresh masks as well.

Statistical bound. For one real coordinate, ``x + R`` and ``x' + R`` with ``R ~ U[-2**k, 2**k]`` are
at statistical distance ``|x - x'| / 2**(k+1)``. What P decrypts is, per slot, ``value + noise +
mask``; so the view of P for two different label-party operands (W or D) differs by at most

    sum over revealed coordinates of (|value - value'| + |noise - noise'|) / 2**(k+1)

(the CKKS encoding is a linear bijection, so rounding the encoded mask cannot add to it). With the
defaults and |value| ~ 1, a forward of B=256, m=16 reveals at most ~2**-15 statistically; the
W-dependent CKKS noise (~2**-19 per slot) contributes ~2**-46 per slot, which is the *noise
flooding*: it is on by default and free, because the mask's randomiser is a fresh public-key
encryption of zero (precomputed off the critical path). Each extra bit of ``k`` halves the bound
but costs precision: the capacity is fixed (:mod:`.params`) and float64 decoding keeps ~52 bits,
so masks of ``2**k`` leave an absolute precision of about ``2**(k-52)``; ``k`` is capped at 40.

Backward. P receives ``B/m`` masked partial products per gradient coordinate and sums them.
A draws ``u_l ~ U[-2**k, 2**k]`` for each of the ``n`` slots of a group and shifts them all by
``c = (M - sum u) / n`` so that they sum to the coordinate's mask ``M`` (itself uniform, scaled by
the public gain of :mod:`.params`). The map ``(u, M) -> u + c`` is the same for ``x`` and ``x'``,
so the bound above (plus ``M``'s own coordinate) still holds by the data-processing inequality.
Slot masks reach at most ``3 * 2**k``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.he.errors import HeRangeError
from services.engine.he.layout import Plan
from services.engine.he.packing import backward_cube, forward_slots, group_sums
from services.engine.he.params import HeParams

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]


def draw_mask(
    params: HeParams,
    shape: tuple[int, ...],
    *,
    grad: bool = False,
    rng: np.random.Generator | None = None,
) -> F64:
    """A forward mask uniform in ``+-params.mask_bound`` or, with ``grad``, a backward one in
    ``+-params.grad_mask_bound`` (OS entropy unless ``rng`` is given)."""
    gen = rng if rng is not None else np.random.default_rng()
    bound = params.grad_mask_bound if grad else params.mask_bound
    return gen.uniform(-bound, bound, size=shape)


def check_mask(mask: npt.ArrayLike, shape: tuple[int, int], bound: float) -> F64:
    """Validate a caller's mask: shape, finiteness and ``|mask| <= bound``."""
    arr = np.asarray(mask, dtype=np.float64)
    if arr.shape != shape:
        raise HeRangeError(f"mask has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all() or (arr.size and np.abs(arr).max() > bound):
        raise HeRangeError(f"mask must be finite and within +-{bound:g}")
    return arr


def _imaginary(params: HeParams, shape: tuple[int, ...], gen: np.random.Generator) -> F64:
    return gen.uniform(-params.mask_bound, params.mask_bound, size=shape)


def forward_mask_slots(plan: Plan, mask: F64, gen: np.random.Generator) -> C128:
    """Slot masks ``(chunks * n_out, slots)`` whose real parts at the live slots are ``mask``."""
    rows, m = mask.shape
    chunks = plan.chunks(rows)
    p = plan.params
    grid = gen.uniform(
        -p.mask_bound, p.mask_bound, size=(chunks * plan.block, plan.n_out * plan.blocks)
    )
    grid[:rows, :m] = mask
    real = forward_slots(plan, grid, rows)
    return real + 1j * _imaginary(p, real.shape, gen)


def backward_mask_slots(plan: Plan, mask: F64, chunks: int, gen: np.random.Generator) -> C128:
    """Slot masks ``(chunks * n_in, slots)`` whose group sums (as P takes them) equal ``mask``."""
    p = plan.params
    per_group = chunks * (plan.block // plan.m_pad)
    u = gen.uniform(-p.mask_bound, p.mask_bound, size=(chunks * plan.n_in, plan.slots))
    sums = group_sums(plan, u)
    target = sums.copy()
    target[: mask.shape[0], : mask.shape[1]] = mask
    cube = backward_cube(plan, u)  # a view: (chunks, n_in, q, m_pad, T)

    def spread(x: F64) -> F64:  # (n_in*T, m_pad) -> (n_in, m_pad, T)
        return x.reshape(plan.n_in, plan.blocks, plan.m_pad).transpose(0, 2, 1)

    cube += spread((target - sums) / per_group)[None, :, None, :, :]
    cube[0, :, 0, :, :] += spread(target - group_sums(plan, u))
    return u + 1j * _imaginary(p, u.shape, gen)
