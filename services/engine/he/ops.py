"""Shard operations: the SEAL work of one worker (the calling process or a pool subprocess).

Each operation takes a :class:`State` and picklable arguments and returns picklable results, so the
same code runs in-process and in a worker. Which shard gets which ciphertexts is decided by
:mod:`services.engine.he.shards`; shards never talk to each other.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from services.engine.he import seal
from services.engine.he.bundle import PublicBundle
from services.engine.he.contexts import PublicContext
from services.engine.he.errors import HeError, HeKeyMismatch
from services.engine.he.ops_igrad import op_input_grad
from services.engine.he.packing import backward_patterns, forward_diagonals
from services.engine.he.state import KEEP_INPUTS, KEEP_WEIGHTS, State, remember

F64 = npt.NDArray[np.float64]
C128 = npt.NDArray[np.complex128]
Item = tuple[int, int, bytes]
"""(chunk, input ciphertext index, serialised ciphertext)."""


def op_public(state: State, fp: str, raw: bytes) -> None:
    """Load a public bundle (once per worker)."""
    if fp not in state.publics:
        parsed = PublicBundle.parse(raw)
        if parsed.fingerprint != fp:
            raise HeKeyMismatch("public bundle does not match its fingerprint")
        state.publics[fp] = PublicContext(parsed)


def op_secret(state: State, fp: str, exported: bytes) -> None:
    """Load the feature party's own secret key into a local worker."""
    from services.engine.he.keys import HeKeys

    if fp not in state.secrets:
        keys = HeKeys.import_secret(exported)
        if keys.fingerprint != fp:
            raise HeKeyMismatch("secret key does not match its fingerprint")
        state.secrets[fp] = keys.secret


def op_forget(state: State, fp: str) -> None:
    """Drop everything kept for key ``fp``."""
    state.publics.pop(fp, None)
    state.secrets.pop(fp, None)
    for cache in (state.weights, state.inputs, state.babies):
        for key in [k for k in cache if k[0] == fp]:
            del cache[key]


def op_zeros(state: State, fp: str, count: int) -> None:
    """Top up the pool of public-key encryptions of zero to ``count``."""
    state.public(fp).fill_zeros(count)


def op_encrypt(state: State, fp: str, vectors: F64, weights: bool = False) -> list[bytes]:
    """Encrypt slot vectors (feature party): H, or with ``weights`` W at its own scale."""
    ctx = state.secret(fp)
    scale = ctx.wt_scale if weights else ctx.in_scale
    return [ctx.encrypt(v, scale) for v in vectors]


def op_decrypt(
    state: State, fp: str, cts: list[bytes], what: str, complex_slots: bool = False
) -> npt.NDArray[Any]:
    """Decrypt results to real (or complex) slot values (feature party)."""
    ctx = state.secret(fp)
    return np.stack(
        [
            ctx.decrypt(ct, f"{what} ciphertext {k}", complex_slots=complex_slots)
            for k, ct in enumerate(cts)
        ]
    )


def op_prepare(state: State, fp: str, wid: str, w: F64, inputs: list[int]) -> None:
    """Encode the forward diagonals of W for the input ciphertexts this shard owns."""
    ctx = state.public(fp)
    encoded = {}
    for key, diag in forward_diagonals(ctx.plan, w, inputs).items():
        pt = ctx.encode(diag, ctx.w_scale)
        if not pt.is_zero():
            encoded[key] = pt
    remember(state.weights, (fp, wid), encoded, KEEP_WEIGHTS)


def _inputs(state: State, ctx: PublicContext, digest: str, items: list[Item]) -> dict[Any, Any]:
    key = (ctx.fingerprint, digest)
    loaded = state.inputs.get(key, {})
    for c, i, data in items:
        if (c, i) not in loaded:
            loaded[(c, i)] = ctx.load_ct(data, top=True, what=f"uploaded ciphertext {c}/{i}")
    remember(state.inputs, key, loaded, KEEP_INPUTS)
    return loaded


def _accumulate(ctx: PublicContext, acc: Any, terms: list[tuple[Any, Any]], step: int) -> Any:
    """``acc + rot(sum ct*pt, step)``; returns ``acc`` unchanged for no terms.

    The giant-step rotation runs before the rescale, at scale ~2**70: key switching adds ~2**17 of
    noise, which after the rescale is ~2**-23 of a unit instead of ~2**-13 at scale 2**30.
    """
    inner = None
    for ct, pt in terms:
        prod = sealapi.Ciphertext()
        ctx.evaluator.multiply_plain(ct, pt, prod)
        if inner is None:
            inner = prod
        else:
            ctx.evaluator.add_inplace(inner, prod)
    if inner is None:
        return acc
    inner = ctx.rotate(inner, step)
    if acc is None:
        return inner
    ctx.evaluator.add_inplace(acc, inner)
    return acc


def op_forward(
    state: State,
    fp: str,
    weights_ref: tuple[str, F64, list[int]],
    digest: str,
    items: list[Item],
    masks: dict[tuple[int, int], C128],
    warm_backward: bool = False,
) -> dict[tuple[int, int], bytes]:
    """Partial (or, for a sole contributor, whole) forward outputs ``(chunk, o) -> ciphertext``.

    The shard that holds the mask of an output adds a fresh randomiser and the mask. With
    ``warm_backward`` the backward's baby-step rotations of the same upload are deferred work.
    ``weights_ref`` is ``(wid, W, owned inputs)``: W is prepared here if this worker lacks it
    (evicted, or the worker was restarted).
    """
    ctx = state.public(fp)
    plan = ctx.plan
    wid, w, owned = weights_ref
    if (fp, wid) not in state.weights:
        op_prepare(state, fp, wid, w, owned)
    weights = state.weights[(fp, wid)]
    loaded = _inputs(state, ctx, digest, items)
    out: dict[tuple[int, int], bytes] = {}
    for c in sorted({c for c, _, _ in items}):
        mine = sorted(i for cc, i, _ in items if cc == c)
        babies = {
            (i, b): ctx.rotate(loaded[(c, i)], b)
            for i in mine
            for b in plan.fwd_babies
            if any((o, g, i, b) in weights for o in range(plan.n_out) for g in plan.fwd_terms)
        }

        for o in range(plan.n_out):
            acc = None
            for g, bs in plan.fwd_terms.items():
                terms = [
                    (babies[(i, b)], weights[(o, g, i, b)])
                    for i in mine
                    for b in bs
                    if (o, g, i, b) in weights
                ]
                acc = _accumulate(ctx, acc, terms, plan.fwd_giant(g))
            mask = masks.get((c, o))
            if acc is not None or mask is not None:
                out[(c, o)] = seal.dump(ctx.finish(acc, mask))
    if warm_backward:
        keys = [(c, i) for c, i, _ in items]
        state.deferred.append(partial(_backward_babies, state, ctx, digest, keys, loaded))
    return out


def _backward_babies(
    state: State,
    ctx: PublicContext,
    digest: str,
    keys: list[tuple[int, int]],
    loaded: dict[tuple[int, int], Any],
) -> dict[tuple[int, int], dict[int, Any]]:
    """Rotations ``rot(c_i, b*T)`` the backward needs, cached per upload."""
    plan = ctx.plan
    cache = state.babies.get((ctx.fingerprint, digest), {})
    for key in keys:
        if key not in cache:
            ct = loaded[key]
            steps = range(min(plan.bwd_b1, plan.m_pad))
            cache[key] = {b: ctx.rotate(ct, b * plan.blocks) for b in steps}
    remember(state.babies, (ctx.fingerprint, digest), cache, KEEP_INPUTS)
    return cache


def op_backward(
    state: State,
    fp: str,
    digest: str,
    items: list[Item],
    d_chunks: dict[int, F64],
    masks: dict[tuple[int, int], C128],
) -> dict[tuple[int, int], bytes]:
    """Masked backward partials ``(chunk, i) -> ciphertext`` for the owned input ciphertexts."""
    ctx = state.public(fp)
    plan = ctx.plan
    loaded = _inputs(state, ctx, digest, items)
    rotated = _backward_babies(state, ctx, digest, [(c, i) for c, i, _ in items], loaded)
    patterns: dict[tuple[int, int], dict[Any, Any]] = {}
    out: dict[tuple[int, int], bytes] = {}
    d_in, t_count = plan.params.in_features, plan.blocks
    for c, i, _ in items:
        valid = min(t_count, d_in - i * t_count)
        if (c, valid) not in patterns:
            encoded = {}
            for key, vec in backward_patterns(plan, d_chunks[c], valid).items():
                pt = ctx.encode(vec, ctx.w_scale)
                if not pt.is_zero():
                    encoded[key] = pt
            patterns[(c, valid)] = encoded
        pats = patterns[(c, valid)]
        babies = rotated[(c, i)]
        acc = None
        for g, bs in plan.bwd_terms.items():
            terms = [(babies[b], pats[(g, b)]) for b in bs if (g, b) in pats]
            acc = _accumulate(ctx, acc, terms, g * plan.bwd_b1 * t_count)
        out[(c, i)] = seal.dump(ctx.finish(acc, masks[(c, i)]))
    state.babies.pop((fp, digest), None)  # the backward is their last use
    return out


def op_combine(state: State, fp: str, parts: list[Any]) -> bytes:
    """Sum partial outputs (label party, calling process); a part is bytes or, from this
    process's own shard, a live ciphertext."""
    ctx = state.public(fp)
    acc = None
    for k, data in enumerate(parts):
        if isinstance(data, sealapi.Ciphertext):
            ct = data
        else:
            ct = ctx.load_ct(data, top=False, what=f"partial output {k}")
        if acc is None:
            acc = ct
        else:
            ctx.evaluator.add_inplace(acc, ct)
    return seal.dump(acc)


OPS: dict[str, Callable[..., Any]] = {
    "public": op_public,
    "secret": op_secret,
    "forget": op_forget,
    "zeros": op_zeros,
    "encrypt": op_encrypt,
    "decrypt": op_decrypt,
    "prepare": op_prepare,
    "forward": op_forward,
    "backward": op_backward,
    "combine": op_combine,
    "input_grad": op_input_grad,
}


def run(state: State, op: str, args: tuple[Any, ...]) -> Any:
    """Run one operation; anything but a :class:`HeError` is wrapped into one."""
    state.flush()
    try:
        return OPS[op](state, *args)
    except HeError:
        raise
    except Exception as exc:  # SEAL and numpy errors on bad input
        raise HeError(f"HE operation {op!r} failed: {type(exc).__name__}: {exc}") from None
