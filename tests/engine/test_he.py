"""The CKKS kernel against numpy, and against bad keys, blobs and parameters.

Stated tolerance: with the default parameters the forward's absolute error stays below 1e-4 per
coordinate (CKKS noise std ~2e-6, max over a batch ~3e-5) and the backward's below 1e-5 (its noise
is divided by the public gradient gain 2**8); values here are O(1) for Z and O(0.01..1) for G, so
that is 1e-4 relative or better.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from services.engine.he import (
    HeBlobError,
    HeError,
    HeKeyMismatch,
    HeKeys,
    HeParams,
    HeParamsError,
    HePool,
    HeRangeError,
    HeWorkerError,
    PublicBundle,
    backward,
    decrypt_matrix,
    draw_mask,
    encrypt_rows,
    fingerprint,
    forward,
    prepare_weights,
    seal,
)
from services.engine.he import blob as blobs
from services.engine.he.contexts import PublicContext
from services.engine.he.layout import Plan
from services.engine.he.masks import backward_mask_slots
from services.engine.he.packing import group_sums

FWD_TOL = 1e-4
BWD_TOL = 1e-5


@cache
def keys_for(block: int, d: int, m: int) -> HeKeys:
    """Keys are the slow part (~0.15 s): one set per layer shape for the whole module."""
    return HeKeys.generate(HeParams(block, d, m))


def data(rows: int, d: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.standard_normal((rows, d)), 0.0)
    w = rng.standard_normal((d, m)) / np.sqrt(d)
    g = rng.standard_normal((rows, m)) / rows
    return h, w, g


def roundtrip(
    keys: HeKeys, rows: int, pool: HePool | None = None, seed: int = 0, warm: bool = False
) -> None:
    p = keys.params
    d, m = p.in_features, p.out_features
    h, w, g = data(rows, d, m, seed)
    public = keys.public_bundle()
    enc = encrypt_rows(keys, h, pool=pool)
    prepared = prepare_weights(public, w, pool=pool, rows=rows)
    mask = draw_mask(p, (rows, m))
    fwd = forward(public, enc, prepared, mask, pool=pool, warm_backward=warm)
    z = decrypt_matrix(keys, fwd, (rows, m), pool=pool)
    np.testing.assert_allclose(z - mask, h @ w, rtol=0, atol=FWD_TOL)
    mask2 = draw_mask(p, (d, m), grad=True)
    gm = decrypt_matrix(keys, backward(public, enc, g, mask2, pool=pool), (d, m), pool=pool)
    np.testing.assert_allclose(gm - mask2, h.T @ g, rtol=0, atol=BWD_TOL)


@pytest.mark.parametrize(
    ("block", "rows", "d", "m"),
    [
        (256, 256, 32, 16),  # the study's size: 16 columns per ciphertext
        (16, 1, 32, 16),  # a single row
        (128, 100, 7, 3),  # rows not a multiple of the block, m not a power of two
        (256, 600, 32, 16),  # three row chunks, the last one partial
        (1024, 1000, 64, 32),  # d and m at their largest
        (4096, 4096, 32, 16),  # one column per ciphertext: no forward rotation
    ],
)
def test_forward_and_backward_match_numpy(block: int, rows: int, d: int, m: int) -> None:
    roundtrip(keys_for(block, d, m), rows)


@pytest.fixture(scope="module")
def pool2() -> Iterator[HePool]:
    with HePool(2) as pool:
        yield pool


@pytest.mark.parametrize(("block", "rows"), [(256, 256), (256, 600), (4096, 3000), (16, 1)])
def test_two_workers_give_the_same_results(pool2: HePool, block: int, rows: int) -> None:
    roundtrip(keys_for(block, 32, 16), rows, pool=pool2)


@pytest.mark.parametrize("in_process", [True, False])
def test_warmed_backward_gives_the_same_results(in_process: bool) -> None:
    keys = keys_for(256, 32, 16)
    with HePool(2, in_process=in_process) as pool:
        roundtrip(keys, 600, pool=pool, warm=True)
        roundtrip(keys, 256, pool=pool, seed=1, warm=True)
    roundtrip(keys, 100, warm=True)


def test_prepared_weights_from_another_pool_are_re_prepared(pool2: HePool) -> None:
    keys = keys_for(256, 32, 16)
    h, w, _ = data(256, 32, 16)
    enc = encrypt_rows(keys, h)
    prepared = prepare_weights(keys.public_bundle(), w, pool=pool2)
    out = forward(keys.public_bundle(), enc, prepared, np.zeros((256, 16)))
    np.testing.assert_allclose(decrypt_matrix(keys, out, (256, 16)), h @ w, atol=FWD_TOL)


def test_a_dead_worker_is_reported_and_replaced() -> None:
    keys = keys_for(256, 32, 16)
    h, _, _ = data(256, 32, 16)
    with HePool(2) as pool:
        encrypt_rows(keys, h, pool=pool)
        proc = pool._procs[0]
        assert proc is not None
        proc.proc.kill()
        proc.proc.wait()
        proc.alive = lambda: True  # type: ignore[method-assign]  # as if it died mid-call
        with pytest.raises(HeWorkerError):
            pool.run("zeros", [None, ("nope", 1)])
        roundtrip(keys, 256, pool=pool)  # a fresh worker, keys sent again


def test_worker_errors_keep_their_type(pool2: HePool) -> None:
    keys = keys_for(256, 32, 16)
    h, _, _ = data(256, 32, 16)
    good = encrypt_rows(keys, h, pool=pool2)
    first = struct.unpack_from("<I", good, 56)[0]
    at = 56 + 8 + first  # the second ciphertext, which worker 1 (a subprocess) loads
    bad = good[:at] + b"\x00" * 64 + good[at + 64 :]
    with pytest.raises(HeBlobError):
        forward(keys.public_bundle(), bad, np.zeros((32, 16)), np.zeros((256, 16)), pool=pool2)


def test_public_bundle_carries_no_secret_key() -> None:
    keys = keys_for(256, 32, 16)
    public = keys.public_bundle()
    parsed = PublicBundle.parse(public)
    assert fingerprint(public) == keys.fingerprint == parsed.fingerprint
    sections = [parsed.params.to_json().encode(), parsed.parms, parsed.public_key, parsed.galois]
    assert sum(map(len, sections)) + struct.calcsize("<4sBBH4I") == len(public)
    sk = seal.dump(keys.secret.secret_key)
    assert sk not in public and sk[16:80] not in public
    # No section loads as a secret key that decrypts: try each one as the secret key.
    ctx = keys.secret.ctx
    h = np.ones((1, 32))
    out = forward(public, encrypt_rows(keys, h), np.ones((32, 16)), np.zeros((1, 16)))
    parsed_out = blobs.unpack(
        out,
        kind=blobs.Kind.FORWARD,
        fingerprint=keys.fingerprint,
        shape=(32, 16),
        expected_count=lambda r: Plan(keys.params).counts(r)["forward"],
        limit=seal.ciphertext_limit(keys.params),
    )
    probe = keys.secret.load_ct(parsed_out.cts[0], top=False, what="probe")

    def first_slot(secret_key: object) -> float:
        pt = sealapi.Plaintext()
        sealapi.Decryptor(ctx, secret_key).decrypt(probe, pt)
        return float(keys.secret.encoder.decode_double(pt)[0])

    assert first_slot(keys.secret.secret_key) == pytest.approx(32.0, abs=1e-3)  # control
    for section in sections:
        try:
            candidate = seal.load(
                sealapi.SecretKey, lambda o, p: o.load(ctx, p), section, "candidate", 1 << 26
            )
        except HeError:
            continue
        assert abs(first_slot(candidate) - 32.0) > 1.0
    # The label party's context has no decryptor at all.
    assert not hasattr(PublicContext(parsed), "decryptor")


def test_secret_export_round_trips() -> None:
    keys = keys_for(256, 32, 16)
    again = HeKeys.import_secret(keys.export_secret())
    assert again.fingerprint == keys.fingerprint
    h, w, _ = data(10, 32, 16)
    out = forward(keys.public_bundle(), encrypt_rows(again, h), w, np.zeros((10, 16)))
    np.testing.assert_allclose(decrypt_matrix(keys, out, (10, 16)), h @ w, atol=FWD_TOL)


def test_wrong_key_is_rejected_or_detected() -> None:
    mine, other = keys_for(256, 32, 16), HeKeys.generate(HeParams(256, 32, 16))
    h, w, _ = data(256, 32, 16)
    enc = encrypt_rows(mine, h)
    with pytest.raises(HeKeyMismatch):  # upload names another key than the bundle's
        forward(other.public_bundle(), enc, w, np.zeros((256, 16)))
    out = forward(mine.public_bundle(), enc, w, np.zeros((256, 16)))
    with pytest.raises(HeKeyMismatch):  # result names another key than the decryptor's
        decrypt_matrix(other, out, (256, 16))
    forged = out[:8] + bytes.fromhex(other.fingerprint) + out[40:]  # lie about the key
    with pytest.raises(HeKeyMismatch, match="does not decrypt under this key"):
        decrypt_matrix(other, forged, (256, 16))


@pytest.mark.parametrize("cut", [0, 10, 56, 63, 64, 200, -1])
def test_truncated_uploads_are_refused(cut: int) -> None:
    keys = keys_for(256, 32, 16)
    enc = encrypt_rows(keys, data(256, 32, 16)[0])
    with pytest.raises(HeBlobError):
        forward(keys.public_bundle(), enc[:cut], np.zeros((32, 16)), np.zeros((256, 16)))


def test_oversized_garbage_and_misused_blobs_are_refused() -> None:
    keys = keys_for(256, 32, 16)
    public = keys.public_bundle()
    h, w, g = data(256, 32, 16)
    enc = encrypt_rows(keys, h)
    zeros = np.zeros((256, 16))
    cases = [
        enc + b"\x00",  # trailing bytes
        b"SPHE" + bytes(200),  # plausible magic, nonsense
        np.random.default_rng(1).bytes(len(enc)),  # garbage of the right size
        enc[:56] + struct.pack("<II", 10**9, 10) + enc[64:],  # lying length table
        enc[:-20] + bytes(20),  # payload tail zeroed
    ]
    for bad in cases:
        with pytest.raises(HeBlobError):
            forward(public, bad, w, zeros)
    fwd = forward(public, enc, w, zeros)
    with pytest.raises(HeBlobError):  # a result is not an upload
        backward(public, fwd, g, np.zeros((32, 16)))
    with pytest.raises(HeKeyMismatch):  # an upload is not a result
        decrypt_matrix(keys, enc, (256, 16))
    with pytest.raises(HeRangeError):  # wrong shape asked for
        decrypt_matrix(keys, fwd, (255, 16))
    flipped = bytearray(fwd)
    flipped[-5000] ^= 0xFF  # corrupt one coefficient of a valid result
    with pytest.raises(HeError):
        decrypt_matrix(keys, bytes(flipped), (256, 16))


def test_bad_operands_and_masks_are_refused() -> None:
    keys = keys_for(256, 32, 16)
    public = keys.public_bundle()
    h, w, g = data(256, 32, 16)
    enc = encrypt_rows(keys, h)
    with pytest.raises(HeRangeError):
        encrypt_rows(keys, h[:, :31])
    with pytest.raises(HeRangeError):
        encrypt_rows(keys, np.full((2, 32), np.nan))
    with pytest.raises(HeRangeError):
        forward(public, enc, w, np.full((256, 16), 2.0**27))  # mask beyond 2**mask_bits
    with pytest.raises(HeRangeError):
        forward(public, enc, w[:, :15], np.zeros((256, 16)))
    with pytest.raises(HeRangeError):
        backward(public, enc, g, np.full((32, 16), keys.params.grad_mask_bound * 2))
    with pytest.raises(HeRangeError):
        backward(public, enc, g[:100], np.zeros((32, 16)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"poly_modulus_degree": 4096},
        {"coeff_mod_bit_sizes": (60, 60, 60, 60)},  # 240 bits > 218: below 128-bit security
        {"coeff_mod_bit_sizes": (60, 40)},
        {"coeff_mod_bit_sizes": (60, 40, 30)},  # special prime smaller than a data prime
        {"mask_bits": 27},  # no room for the backward's split masks
        {"output_scale_bits": 55},
        {"input_scale_bits": 70},
        {"block_rows": 300},
        {"block_rows": 8},  # smaller than m rounded up
        {"in_features": 0},
        {"grad_gain_bits": 30},
    ],
)
def test_bad_parameters_are_refused(overrides: dict[str, object]) -> None:
    base: dict[str, object] = {"block_rows": 256, "in_features": 32, "out_features": 16}
    with pytest.raises(HeParamsError):
        HeParams(**{**base, **overrides})  # type: ignore[arg-type]


def test_parameters_round_trip_and_16384_works() -> None:
    p = HeParams.for_layer(5000, 32, 16, poly_modulus_degree=16384)
    assert (p.block_rows, p.slots) == (8192, 8192)
    assert HeParams.from_json(p.to_json()) == p
    roundtrip(HeKeys.generate(HeParams(64, 8, 4, poly_modulus_degree=16384)), 50)
    for text in ["{", "[]", '{"block_rows": 1}', p.to_json().replace("8192", "8193", 1)]:
        with pytest.raises(HeParamsError):
            HeParams.from_json(text)


def test_bad_public_bundles_are_refused() -> None:
    public = keys_for(256, 32, 16).public_bundle()
    h = np.zeros((1, 32))
    enc = encrypt_rows(keys_for(256, 32, 16), h)
    for bad in [
        public[:100],
        public + b"x",
        b"SPHK" + bytes(40),
        public[:30] + bytes(50) + public[80:],
    ]:
        with pytest.raises(HeParamsError):
            forward(bad, enc, np.zeros((32, 16)), np.zeros((1, 16)))
    other = keys_for(128, 7, 3).public_bundle()  # a valid bundle for another layer
    with pytest.raises(HeKeyMismatch):
        forward(other, enc, np.zeros((7, 3)), np.zeros((1, 3)))


def test_sizes_are_deterministic() -> None:
    keys = keys_for(256, 32, 16)
    plan = Plan(keys.params)
    sizes = []
    for seed in range(2):
        h, w, g = data(600, 32, 16, seed)
        enc = encrypt_rows(keys, h)
        fwd = forward(keys.public_bundle(), enc, w, np.zeros((600, 16)))
        bwd = backward(keys.public_bundle(), enc, g, np.zeros((32, 16)))
        counts = [blobs.peek(b)[5] for b in (enc, fwd, bwd)]
        assert counts == [plan.counts(600)[k] for k in ("up", "forward", "backward")] == [6, 3, 6]
        sizes.append((len(enc), len(fwd), len(bwd)))
    assert sizes[0][1:] == sizes[1][1:]  # results: fixed size
    assert abs(sizes[0][0] - sizes[1][0]) < 0.02 * sizes[0][0]  # upload: zstd-compressed, ~fixed


def test_backward_masks_sum_to_the_callers_mask() -> None:
    plan = Plan(HeParams(256, 20, 12))
    mask = draw_mask(plan.params, (20, 12), rng=np.random.default_rng(0))
    slots = backward_mask_slots(plan, mask, 3, np.random.default_rng(1))
    sums = group_sums(plan, slots.real)
    np.testing.assert_allclose(sums[:20, :12], mask, rtol=0, atol=1e-6)
    assert np.abs(slots.real).max() <= 3 * plan.params.mask_bound
    assert np.abs(slots.imag).max() <= plan.params.mask_bound
    drawn = draw_mask(plan.params, (1000, 3))
    assert np.abs(drawn).max() <= plan.params.mask_bound


def test_forgotten_keys_are_reloaded_on_use(pool2: HePool) -> None:
    keys = keys_for(256, 32, 16)
    roundtrip(keys, 64, pool=pool2)
    pool2.forget(keys.fingerprint)
    assert keys.fingerprint not in pool2.local.publics
    roundtrip(keys, 64, pool=pool2, seed=1)


def test_evicted_prepared_weights_are_prepared_again(pool2: HePool) -> None:
    keys = keys_for(256, 32, 16)
    public = keys.public_bundle()
    h, w, _ = data(64, 32, 16)
    first = prepare_weights(public, w, pool=pool2)
    for k in range(4):  # workers keep the last 3 prepared weights
        prepare_weights(public, w + k, pool=pool2)
    out = forward(public, encrypt_rows(keys, h, pool=pool2), first, np.zeros((64, 16)), pool=pool2)
    np.testing.assert_allclose(decrypt_matrix(keys, out, (64, 16)), h @ w, atol=FWD_TOL)
