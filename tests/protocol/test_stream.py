"""The step stream's envelope: round trips, and refusal of anything that is not one."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.protocol.bounds import MAX_DEADLINE_MS
from services.protocol.errors import BadRequest
from services.protocol.stream import (
    ENVELOPE_LIMIT,
    STREAM_OPS,
    StreamAnswer,
    StreamRequest,
    pack_answer,
    pack_request,
    unpack_answer,
    unpack_request,
)


@given(
    op=st.sampled_from(STREAM_OPS),
    seq=st.integers(0, 2**53),
    deadline_ms=st.none() | st.integers(1, MAX_DEADLINE_MS),
    cid=st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True),
    body=st.binary(max_size=4096),
)
def test_request_round_trip(
    op: str, seq: int, deadline_ms: int | None, cid: str | None, body: bytes
) -> None:
    envelope = StreamRequest.model_validate(
        {"op": op, "seq": seq, "deadline_ms": deadline_ms, "correlation_id": cid}
    )
    assert unpack_request(pack_request(envelope, body)) == (envelope, body)


@given(
    seq=st.integers(-1, 2**53),
    status=st.integers(100, 599),
    media=st.sampled_from(["application/json", "application/vnd.splice.tensors"]),
    body=st.binary(max_size=4096),
)
def test_answer_round_trip(seq: int, status: int, media: str, body: bytes) -> None:
    envelope = StreamAnswer(seq=seq, status=status, media_type=media)
    assert unpack_answer(pack_answer(envelope, body)) == (envelope, body)


def _raw(head: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", len(head)) + head + body


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00\x00\x00",
        struct.pack(">I", 10) + b"{}",
        struct.pack(">I", ENVELOPE_LIMIT + 1) + b"{" * (ENVELOPE_LIMIT + 1),
        _raw(b"not json"),
        _raw(b'{"op": "forward"}'),
        _raw(b'{"op": "checkpoint", "seq": 1}'),
        _raw(b'{"op": "forward", "seq": -1}'),
        _raw(b'{"op": "forward", "seq": 1, "v": "2"}'),
        _raw(b'{"op": "forward", "seq": 1, "extra": true}'),
        _raw(b'{"op": "forward", "seq": 1, "correlation_id": "' + b"x" * 200 + b'"}'),
    ],
    ids=[
        "empty",
        "short-prefix",
        "truncated-envelope",
        "envelope-over-limit",
        "not-json",
        "no-seq",
        "unknown-op",
        "negative-seq",
        "other-version",
        "unknown-field",
        "long-correlation-id",
    ],
)
def test_bad_requests_are_refused(message: bytes) -> None:
    with pytest.raises(BadRequest):
        unpack_request(message)
