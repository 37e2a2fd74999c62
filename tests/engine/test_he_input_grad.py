"""The input gradient ``Enc(D W_P^T + addend)`` against numpy, and against bad blobs and operands.

Stated tolerance: absolute error below 1e-6 per coordinate for ``|D| <= 1`` (measured ~1e-7 at
the worst; the work runs on ``2**8 * D`` and P divides the gain out).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest

from services.engine.he import (
    HeBlobError,
    HeKeyMismatch,
    HeKeys,
    HeParams,
    HePool,
    HeRangeError,
    backward,
    decrypt_matrix,
    encrypt_rows,
    encrypt_weights,
    forward,
    input_grad,
    seal,
)
from services.engine.he import blob as blobs
from services.engine.he.igrad import addend_slots, holders, pack_weights, unpack
from services.engine.he.layout import Plan
from services.engine.he.params import WEIGHT_BOUND
from services.engine.he.shards import zero_demand

TOL = 1e-6


@cache
def keys_for(block: int, d: int, m: int) -> HeKeys:
    return HeKeys.generate(HeParams(block, d, m))


def operands(
    rows: int, d: int, m: int, seed: int = 0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, m)) / np.sqrt(d)
    g = rng.uniform(-scale, scale, (rows, m))
    addend = g @ (rng.standard_normal((d, m)) / np.sqrt(d)).T
    return w, g, addend


def check(
    keys: HeKeys, rows: int, pool: HePool | None = None, seed: int = 0, scale: float = 1.0
) -> float:
    p = keys.params
    d, m = p.in_features, p.out_features
    w, g, addend = operands(rows, d, m, seed, scale)
    enc_w = encrypt_weights(keys, w, pool=pool)
    out = input_grad(keys.public_bundle(), enc_w, g, addend, pool=pool)
    assert blobs.peek(out)[:3] == (blobs.Kind.INPUT_GRAD, keys.fingerprint, rows)
    got = decrypt_matrix(keys, out, (rows, d), pool=pool)
    err = float(np.abs(got - (g @ w.T + addend)).max())
    assert err <= TOL
    return err


@pytest.mark.parametrize(
    ("block", "rows", "d", "m"),
    [
        (256, 256, 32, 16),  # the study's size: one weight ciphertext, one output ciphertext
        (256, 600, 32, 16),  # three outputs, baby-step/giant-step (b1 = 4) planned for one
        (1024, 1024, 32, 16),
        (1024, 1000, 32, 16),  # rows not a multiple of anything
        (16, 1, 32, 16),  # a single row
        (128, 100, 10, 3),  # d and m not powers of two
        (128, 37, 100, 70),  # d * m > slots: four weight ciphertexts
        (16, 3, 2048, 4),  # one row per half ciphertext, two weight ciphertexts
    ],
)
def test_input_grad_matches_numpy(block: int, rows: int, d: int, m: int) -> None:
    check(keys_for(block, d, m), rows)


def test_realistic_gradients_and_a_4096_batch() -> None:
    keys = keys_for(4096, 32, 16)
    assert check(keys, 4096) <= TOL  # |D| <= 1
    assert check(keys, 4096, seed=1, scale=1e-2) <= 2e-7  # mean-loss gradients


@pytest.mark.parametrize(
    "overrides",
    [{"poly_modulus_degree": 16384}, {"coeff_mod_bit_sizes": (60, 40, 40, 60)}],
)
def test_other_parameters_work(overrides: dict[str, object]) -> None:
    check(HeKeys.generate(HeParams(64, 8, 4, **overrides)), 50)  # type: ignore[arg-type]


def test_zero_gradient_gives_the_addend() -> None:
    keys = keys_for(256, 32, 16)
    w, _, addend = operands(300, 32, 16)
    out = input_grad(keys.public_bundle(), encrypt_weights(keys, w), np.zeros((300, 16)), addend)
    np.testing.assert_allclose(decrypt_matrix(keys, out, (300, 32)), addend, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def pool2() -> Iterator[HePool]:
    with HePool(2) as pool:
        yield pool


@pytest.mark.parametrize(("block", "rows", "d", "m"), [(1024, 1000, 32, 16), (128, 37, 100, 70)])
def test_two_workers_give_the_same_results(
    pool2: HePool, block: int, rows: int, d: int, m: int
) -> None:
    check(keys_for(block, d, m), rows, pool=pool2)


def test_subprocess_shards_give_the_same_results() -> None:
    with HePool(2, in_process=False) as pool:
        check(keys_for(256, 32, 16), 513, pool=pool)


def test_results_are_re_randomised() -> None:
    keys = keys_for(256, 32, 16)
    w, g, addend = operands(256, 32, 16)
    enc_w = encrypt_weights(keys, w)
    one, two = (input_grad(keys.public_bundle(), enc_w, g, addend) for _ in range(2))
    assert one != two and len(one) == len(two)
    np.testing.assert_allclose(
        decrypt_matrix(keys, one, (256, 32)), decrypt_matrix(keys, two, (256, 32)), atol=TOL
    )


def test_weights_blob_is_one_seeded_ciphertext_without_the_secret_key() -> None:
    keys = keys_for(1024, 32, 16)
    enc_w = encrypt_weights(keys, operands(1, 32, 16)[0])
    kind, fp, rows, d, m, count = blobs.peek(enc_w)
    assert (kind, fp, rows, d, m, count) == (blobs.Kind.WEIGHTS, keys.fingerprint, 32, 32, 16, 1)
    assert len(enc_w) < 125_000  # seeded: about half a full ciphertext
    sk = seal.dump(keys.secret.secret_key)
    assert sk not in enc_w and sk[16:80] not in enc_w and sk[-64:] not in enc_w
    assert sk[16:80] not in keys.public_bundle()
    out = input_grad(keys.public_bundle(), enc_w, np.zeros((1024, 16)), np.zeros((1024, 32)))
    assert blobs.peek(out)[5] == Plan(keys.params).ig_outputs(1024) == 4  # rows * d / 2 slots


def test_galois_keys_cover_the_input_gradient() -> None:
    for block, d, m in [(256, 32, 16), (1024, 32, 16), (4096, 32, 16), (128, 10, 3), (16, 32, 16)]:
        plan = Plan(HeParams(block, d, m))
        up, start, giant = plan.ig_steps
        width, b1 = plan.ig_width, plan.ig_b1
        period = width * plan.ig_cols
        assert up == 0 or up % period == width
        assert start % period == -(-b1 // 2) * width
        assert giant == 0 or giant % period == b1 * width
        assert {up, start, giant} - {0} <= set(plan.steps)
        assert len(plan.steps) - len(plan.layer_steps) <= 2
    at_256 = Plan(HeParams(256, 32, 16))  # one output: baby-step/giant-step, b1 = 4
    assert at_256.ig_b1 == 4 and set(at_256.steps) == at_256.layer_steps  # no key added
    assert Plan(HeParams(1024, 32, 16)).ig_b1 == 16  # four outputs share 15 rotations


def test_packing_rotates_into_place() -> None:
    plan = Plan(HeParams(256, 10, 3))
    w = np.arange(30.0).reshape(10, 3) + 1
    vec = pack_weights(plan, w)[0]
    width, cols = plan.ig_width, plan.ig_cols
    for r in range(cols):
        grid = np.roll(vec, -r * width).reshape(-1, width)
        b = np.arange(grid.shape[0])
        k = (b + r) % cols
        expect = np.where(k[:, None] < 3, np.pad(w, ((0, 6), (0, 1)))[:, k].T, 0.0)
        np.testing.assert_array_equal(grid, expect)
    addend = np.random.default_rng(0).standard_normal((700, 10))
    np.testing.assert_array_equal(unpack(plan, addend_slots(plan, addend), 700), addend)


def test_randomisers_are_precomputed_for_the_input_gradient() -> None:
    plan = Plan(HeParams(1024, 32, 16))
    base = sum(zero_demand(plan, 2, 1024)) - len(holders(plan, 2, 1024))
    assert base == plan.counts(1024)["forward"] + plan.counts(1024)["backward"]
    assert holders(plan, 2, 1024) == [0, 1, 0, 1]


Fixture = tuple[HeKeys, bytes, bytes, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def blobs_256() -> Fixture:
    keys = keys_for(256, 32, 16)
    w, g, addend = operands(256, 32, 16)
    enc_w = encrypt_weights(keys, w)
    return keys, enc_w, input_grad(keys.public_bundle(), enc_w, g, addend), g, addend


def test_weights_under_another_key_are_refused(blobs_256: Fixture) -> None:
    keys, enc_w, out, g, addend = blobs_256
    other = HeKeys.generate(HeParams(256, 32, 16))
    with pytest.raises(HeKeyMismatch):  # P's weights under another bundle's fingerprint
        input_grad(other.public_bundle(), enc_w, g, addend)
    with pytest.raises(HeKeyMismatch):
        decrypt_matrix(other, out, (256, 32))
    forged = out[:8] + bytes.fromhex(other.fingerprint) + out[40:]
    with pytest.raises(HeKeyMismatch, match="does not decrypt under this key"):
        decrypt_matrix(other, forged, (256, 32))


@pytest.mark.parametrize("cut", [0, 10, 56, 60, 61, 1000, -1])
def test_truncated_weights_are_refused(blobs_256: Fixture, cut: int) -> None:
    keys, enc_w, _, g, addend = blobs_256
    with pytest.raises(HeBlobError):
        input_grad(keys.public_bundle(), enc_w[:cut], g, addend)


def test_malformed_and_misused_blobs_are_refused(blobs_256: Fixture) -> None:
    keys, enc_w, out, g, addend = blobs_256
    public = keys.public_bundle()
    p = keys.params
    h = np.ones((256, 32))
    rows_blob = encrypt_rows(keys, h)
    ct = blobs.unpack(
        rows_blob,
        kind=blobs.Kind.ROWS,
        fingerprint=keys.fingerprint,
        shape=(32, 16),
        expected_count=lambda r: Plan(p).counts(r)["up"],
        limit=seal.ciphertext_limit(p),
    ).cts[0]
    cases = [
        enc_w + b"\x00",  # padded
        b"SPHE" + bytes(200),
        np.random.default_rng(1).bytes(len(enc_w)),  # garbage
        enc_w[:-20] + bytes(20),  # payload tail zeroed
        enc_w[:40] + struct.pack("<I", 31) + enc_w[44:],  # names 31 rows, not d = 32
        enc_w[:56] + struct.pack("<I", 10**9) + enc_w[60:],  # lying length table
        rows_blob,  # an upload of H is not W
        out,  # a result is not W
        blobs.pack(blobs.Kind.WEIGHTS, keys.fingerprint, 32, 32, 16, [bytes(ct)]),  # wrong scale
    ]
    for bad in cases:
        with pytest.raises(HeBlobError):
            input_grad(public, bad, g, addend)
    with pytest.raises(HeBlobError):  # W is not an upload of H
        forward(public, enc_w, np.zeros((32, 16)), np.zeros((32, 16)))
    with pytest.raises(HeBlobError):
        backward(public, out, g, np.zeros((32, 16)))
    with pytest.raises(HeKeyMismatch):  # W is not a result
        decrypt_matrix(keys, enc_w, (32, 16))
    with pytest.raises(HeRangeError):  # wrong shape asked for
        decrypt_matrix(keys, out, (256, 16))
    with pytest.raises(HeBlobError):
        decrypt_matrix(keys, out[:-1], (256, 32))


def test_bad_operands_are_refused(blobs_256: Fixture) -> None:
    keys, enc_w, _, g, addend = blobs_256
    public = keys.public_bundle()
    w = operands(1, 32, 16)[0]
    for bad_w in [w[:, :15], np.full((32, 16), np.nan), np.full((32, 16), WEIGHT_BOUND * 2)]:
        with pytest.raises(HeRangeError):
            encrypt_weights(keys, bad_w)
    bad_d = g.copy()
    bad_d[3, 4] = np.inf
    cases = [
        (bad_d, addend),  # non-finite D
        (g[:, :15], addend),  # D is not rows x m
        (g[0], addend[0]),  # not a matrix
        (g[:0], addend[:0]),  # no rows
        (g, addend[:100]),  # addend rows differ
        (g, addend[:, :31]),
        (g, np.full_like(addend, np.nan)),
        (np.full_like(g, 600.0), addend),  # |D| row sums x WEIGHT_BOUND beyond the headroom
        (g, np.full_like(addend, 2.0**22)),  # addend beyond the headroom
    ]
    for d_plain, add in cases:
        with pytest.raises(HeRangeError):
            input_grad(public, enc_w, d_plain, add)
