"""PSI library: exact intersections and handles, unlinkable jobs, refused bad messages."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import rbcl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.engine.psi import (
    Alignment,
    BlindedKeys,
    FeatureParty,
    FeatureReply,
    Intersection,
    LabelParty,
    PsiCountError,
    PsiDuplicateError,
    PsiError,
    PsiJobMismatch,
    PsiMalformedError,
    PsiPointError,
    PsiPool,
    PsiReplayError,
    decode,
    group,
)
from services.engine.psi.group import IDENTITY, POINT_SIZE

JOB = "job-psi-1"


def align(
    xs: Iterable[str], ys: Iterable[str], pool: PsiPool | None = None, job: str = JOB
) -> tuple[Alignment, Alignment]:
    """Run the protocol through the wire encoding; return (label, feature) alignments."""
    label, feature = LabelParty(job, xs, pool), FeatureParty(job, ys, pool)
    m1 = decode(label.start().encode())
    assert isinstance(m1, BlindedKeys)
    m2 = decode(feature.reply(m1).encode())
    assert isinstance(m2, FeatureReply)
    notice, la = label.finish(m2)
    m3 = decode(notice.encode())
    assert isinstance(m3, Intersection)
    return la, feature.finish(m3)


def check(xs: list[str], ys: list[str], la: Alignment, fa: Alignment) -> None:
    shared = set(xs) & set(ys)
    assert set(la.keys) == shared and len(la.keys) == len(shared)
    assert la.keys == fa.keys  # same handle -> same key on both sides
    assert (la.local_size, la.peer_size) == (len(set(xs)), len(set(ys)))
    assert (fa.local_size, fa.peer_size) == (len(set(ys)), len(set(xs)))
    for h, key in enumerate(la.keys):
        assert la.handle(key) == fa.handle(key) == h
    assert all(la.handle(x) is None for x in set(xs) - shared)


keys = st.text(max_size=12)

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
NOT_ELEMENTS = [
    IDENTITY,
    b"\xff" * 32,  # s >= p
    _P.to_bytes(32, "little"),  # s == p (non-canonical zero)
    (1).to_bytes(32, "little"),  # s = 1 is negative (odd): not canonical
    (2).to_bytes(32, "little"),  # canonical field element, but no ristretto255 point
]
"""Encodings that are not ristretto255 elements (or are the identity)."""


def test_hash_to_group_matches_the_rfc_vectors() -> None:
    """RFC 9380 K.3 (expand_message_xmd, SHA-512) and RFC 9496 A.3 (the one-way map)."""
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert group.expand_message_xmd(b"", dst, 32).hex() == (
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    )
    assert group.expand_message_xmd(b"abc", dst, 32).hex() == (
        "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"
    )
    uniform = bytes.fromhex(
        "5d1be09e3d0c82fc538112490e35701979d99e06ca3e2b5b54bffe8b4dc772c1"
        "4d98b696a1bbfb5ca32c436cc61c16563790306c79eaca7705668b47dffe5bb6"
    )
    assert rbcl.crypto_core_ristretto255_from_hash(uniform).hex() == (
        "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46"
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_every_hashed_key_lies_in_the_prime_order_group(key: bytes) -> None:
    """No twist bit by construction: every hash is a canonical element of the group of prime
    order l (l * P is the identity, and P is not), and so is every blinded point."""
    point = group.hash_key(key)
    assert group.is_group_element(point)
    order = _L.to_bytes(32, "little")
    assert rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(order, point) == IDENTITY
    blinded = group.multiply(group.new_scalar(), point)
    assert group.is_group_element(blinded)
    assert rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(order, blinded) == IDENTITY


def test_no_encoding_outside_the_group_is_multiplied() -> None:
    for encoding in NOT_ELEMENTS:
        assert not group.is_group_element(encoding)
        with pytest.raises(PsiPointError):
            group.multiply(group.new_scalar(), encoding)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xs=st.lists(keys, max_size=25),
    ys_extra=st.lists(keys, max_size=25),
    pick=st.lists(st.integers(0, 1000), max_size=25),
)
def test_intersection_matches_set_intersection(
    xs: list[str], ys_extra: list[str], pick: list[int]
) -> None:
    ys = ys_extra + [xs[i % len(xs)] for i in pick] if xs else ys_extra
    xs = xs + xs[: len(xs) // 2]  # duplicates on the label side (many boards, one lot)
    check(xs, ys, *align(xs, ys))


def test_edge_keys_are_exact_and_distinct() -> None:
    long_a, long_b = "a" * 10_000, "a" * 9_999 + "b"
    xs = ["Lot-1", "lot-1", "LOT-1", " lot-1", "lot-1 ", "lot\t1", "Ünïcødé-λ", "日本-42", long_a]
    xs += ["", "\x00", "e\u0301", "\u00e9"]  # empty, NUL, and two normal forms of é
    ys = ["lot-1", "lot-1 ", "日本-42", long_a, long_b, "", "\u00e9", "x"]
    la, fa = align(xs, ys)
    check(xs, ys, la, fa)
    assert set(la.keys) == {"lot-1", "lot-1 ", "日本-42", long_a, "", "\u00e9"}


@pytest.mark.parametrize(("xs", "ys"), [([], []), ([], ["a", "b"]), (["a", "a"], [])])
def test_empty_sides(xs: list[str], ys: list[str]) -> None:
    la, fa = align(xs, ys)
    assert la.size == fa.size == 0
    check(xs, ys, la, fa)


def test_two_workers_agree_with_plain_intersection() -> None:
    xs = [f"lot-{i}" for i in range(3000)] + ["lot-7"] * 5
    ys = [f"lot-{i}" for i in range(1500, 4500)]
    with PsiPool(2) as pool:
        la, fa = align(xs, ys, pool)
    check(xs, ys, la, fa)
    assert la.size == 1500


def test_jobs_are_unlinkable() -> None:
    one, two = LabelParty("job-a", ["lot-1"]), LabelParty("job-b", ["lot-1"])
    assert one.start().points != two.start().points
    assert one.session != two.session
    again = LabelParty("job-a", ["lot-1"])  # a rerun of the same job is fresh as well
    assert again.start().points != LabelParty("job-a", ["lot-1"]).start().points


def test_feature_party_sees_only_blinded_points() -> None:
    xs = ["secret-lot-123", "lot-shared"]
    m1 = LabelParty(JOB, xs).start().encode()
    assert b"secret-lot-123" not in m1 and b"lot-shared" not in m1
    assert len(m1) == 8 + len(JOB) + 16 + 4 + 2 * POINT_SIZE  # header, count, two points


# -- bad messages -----------------------------------------------------------------------------


def started(
    xs: list[str] | None = None, ys: list[str] | None = None
) -> tuple[LabelParty, FeatureParty, BlindedKeys]:
    label = LabelParty(JOB, xs or ["a", "b", "c"])
    feature = FeatureParty(JOB, ys or ["b", "c", "d", "e"])
    return label, feature, label.start()


def test_framing_errors() -> None:
    _, _, m1 = started()
    frame = m1.encode()
    for bad in (frame[:-1], frame[:10], frame + b"\x00", b"XPSI" + frame[4:], b""):
        with pytest.raises(PsiMalformedError):
            decode(bad)
    with pytest.raises(PsiMalformedError):
        decode(frame[:5] + b"\x09" + frame[6:])  # unknown step
    with pytest.raises(PsiMalformedError):
        BlindedKeys(JOB, m1.session, m1.points + b"\x01")  # wrong point size
    with pytest.raises(PsiMalformedError):
        BlindedKeys(JOB, b"short", m1.points)
    with pytest.raises(PsiMalformedError):
        BlindedKeys("", m1.session, m1.points)


def test_wrong_job_and_session() -> None:
    _, feature, m1 = started()
    with pytest.raises(PsiJobMismatch):
        feature.reply(BlindedKeys("other-job", m1.session, m1.points))
    reply = feature.reply(m1)  # the refusal left the feature party ready
    label2, _, _ = started()
    with pytest.raises(PsiJobMismatch):
        label2.finish(reply)  # a reply to another session of the same job


def test_replayed_and_out_of_order_steps() -> None:
    label, feature, m1 = started()
    with pytest.raises(PsiReplayError):
        feature.finish(Intersection(JOB, m1.session, b""))  # before step 2
    reply = feature.reply(m1)
    with pytest.raises(PsiReplayError):
        feature.reply(m1)
    with pytest.raises(PsiReplayError):
        label.start()
    notice, _ = label.finish(reply)
    with pytest.raises(PsiReplayError):
        label.finish(reply)
    feature.finish(notice)
    with pytest.raises(PsiReplayError):
        feature.finish(notice)
    with pytest.raises(PsiReplayError):
        feature.finish(reply)  # type: ignore[arg-type]


def test_bad_points_are_refused() -> None:
    _, feature, m1 = started()
    p = m1.points
    dup = BlindedKeys(JOB, m1.session, p[:POINT_SIZE] + p[:POINT_SIZE])
    for bad, err in ((dup, PsiDuplicateError),):
        with pytest.raises(err):
            feature.reply(bad)
    for encoding in NOT_ELEMENTS:
        with pytest.raises(PsiPointError):
            feature.reply(BlindedKeys(JOB, m1.session, p[POINT_SIZE:] + encoding))
    feature.reply(m1)  # still fresh after all the refusals


def test_bad_replies_are_refused() -> None:
    label, feature, m1 = started()
    reply = feature.reply(m1)
    lp, fp = reply.label_points, reply.feature_points
    cases: list[tuple[FeatureReply, type[PsiError]]] = [
        (FeatureReply(JOB, m1.session, lp[POINT_SIZE:], fp), PsiCountError),
        (FeatureReply(JOB, m1.session, lp + lp[:POINT_SIZE], fp), PsiCountError),
        (FeatureReply(JOB, m1.session, lp[:POINT_SIZE] * 3, fp), PsiDuplicateError),
        (FeatureReply(JOB, m1.session, lp, fp + fp[:POINT_SIZE]), PsiDuplicateError),
        (FeatureReply(JOB, m1.session, lp, fp[:-POINT_SIZE] + NOT_ELEMENTS[1]), PsiPointError),
        (FeatureReply(JOB, m1.session, lp, fp[:-POINT_SIZE] + IDENTITY), PsiPointError),
    ]
    for bad, err in cases:
        with pytest.raises(err):
            label.finish(bad)
    _, la = label.finish(reply)
    assert set(la.keys) == {"b", "c"}


def test_bad_positions_are_refused() -> None:
    label, feature, m1 = started()
    notice, _ = label.finish(feature.reply(m1))

    def pos(*ps: int) -> Intersection:
        return Intersection(JOB, m1.session, b"".join(p.to_bytes(4, "little") for p in ps))

    for bad, err in (
        (pos(4), PsiCountError),  # out of range (feature has 4 keys)
        (pos(0, 1, 2, 3), PsiCountError),  # more than the label's 3 keys
        (pos(1, 1), PsiDuplicateError),
        (Intersection(JOB, bytes(16), notice.positions), PsiJobMismatch),
    ):
        with pytest.raises(err):
            feature.finish(bad)
    with pytest.raises(PsiMalformedError):
        Intersection(JOB, m1.session, b"\x00\x00\x00")
    assert set(feature.finish(notice).keys) == {"b", "c"}


def test_pool_falls_back_to_this_process_when_workers_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller whose __main__ cannot be re-imported by spawn still gets the right answer."""
    from concurrent.futures import ProcessPoolExecutor

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("bootstrapping phase")

    monkeypatch.setattr(ProcessPoolExecutor, "submit", refuse)
    xs = [f"k{i}" for i in range(50)]
    ys = [f"k{i}" for i in range(25, 90)]
    with PsiPool(2) as pool:
        label, feature = LabelParty("job-fb", xs, pool), FeatureParty("job-fb", ys, pool)
        notice, mine = label.finish(feature.reply(label.start()))
        theirs = feature.finish(notice)
    assert sorted(mine.keys) == sorted(set(xs) & set(ys)) and mine.keys == theirs.keys
