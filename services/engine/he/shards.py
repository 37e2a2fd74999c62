"""How kernel work is spread over a pool's workers, plus helpers shared by both parties' calls.

Input ciphertext ``i`` of row chunk ``c`` belongs to one worker for the forward *and* the backward,
so the upload is loaded once per worker and reused: contiguous ranges of ``i`` when there are at
least as many input ciphertexts as workers, otherwise whole chunks round-robin.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from services.engine.he import igrad, ops
from services.engine.he.bundle import PublicBundle
from services.engine.he.errors import HeRangeError
from services.engine.he.keys import HeKeys
from services.engine.he.layout import Plan
from services.engine.he.pool import HePool
from services.engine.he.state import State

F64 = npt.NDArray[np.float64]
Public = PublicBundle | bytes
_PARSED: OrderedDict[bytes, PublicBundle] = OrderedDict()


def public_bundle(public: Public) -> PublicBundle:
    """Parse (and cache) a public bundle."""
    if isinstance(public, PublicBundle):
        return public
    if public not in _PARSED:
        _PARSED[public] = PublicBundle.parse(public)
        while len(_PARSED) > 4:
            _PARSED.popitem(last=False)
    return _PARSED[public]


def checked_matrix(value: npt.ArrayLike, shape: tuple[int, int], what: str, bound: float) -> F64:
    """``value`` as a contiguous float64 array of ``shape``, finite and within ``+-bound``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise HeRangeError(f"{what} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all() or (arr.size and np.abs(arr).max() > bound):
        raise HeRangeError(f"{what} must be finite and within +-{bound:g}")
    return np.ascontiguousarray(arr)


def owner(plan: Plan, workers: int, c: int, i: int) -> int:
    """Which worker owns input ciphertext ``i`` of chunk ``c`` (same for forward and backward)."""
    if plan.n_in >= workers:
        return i * workers // plan.n_in
    return c % workers


def owned_inputs(plan: Plan, workers: int, w: int) -> list[int]:
    """Input ciphertext indices worker ``w`` may own (whatever the chunk count)."""
    return [i for i in range(plan.n_in) if plan.n_in < workers or owner(plan, workers, 0, i) == w]


def mask_holders(plan: Plan, workers: int, chunks: int) -> dict[tuple[int, int], int]:
    """The one worker per forward output that adds its randomiser and mask."""
    out = {}
    for c in range(chunks):
        owners = sorted({owner(plan, workers, c, i) for i in range(plan.n_in)})
        for o in range(plan.n_out):
            out[(c, o)] = owners[(c * plan.n_out + o) % len(owners)]
    return out


def split(count: int, workers: int) -> list[range]:
    """Contiguous ranges of ``count`` items, one per worker."""
    return [range(count * w // workers, count * (w + 1) // workers) for w in range(workers)]


def zero_demand(plan: Plan, workers: int, rows: int) -> list[int]:
    """Randomisers each worker uses for one forward, one backward and one input gradient of
    ``rows`` rows."""
    chunks = plan.chunks(rows)
    demand = [0] * workers
    for w in mask_holders(plan, workers, chunks).values():
        demand[w] += 1
    for c in range(chunks):
        for i in range(plan.n_in):
            demand[owner(plan, workers, c, i)] += 1
    for w in igrad.holders(plan, workers, rows):
        demand[w] += 1
    return demand


def attach_public(pool: HePool, bundle: PublicBundle) -> None:
    """Load the public bundle in every worker of ``pool`` (once)."""

    def local(state: State) -> None:
        ops.op_public(state, bundle.fingerprint, bundle.raw)

    pool.attach(bundle.fingerprint, "public", lambda: bundle.raw, local)


def attach_secret(pool: HePool, keys: HeKeys) -> None:
    """Give the pool's workers (this party's own processes) the secret key (once)."""

    def local(state: State) -> None:
        state.secrets[keys.fingerprint] = keys.secret

    pool.attach(keys.fingerprint, "secret", keys.export_secret, local)
