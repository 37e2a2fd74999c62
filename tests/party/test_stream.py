"""The step stream: a job's segment calls over one WebSocket, served by a real uvicorn server.

It must answer exactly what HTTP answers, refuse bad messages as HTTP refuses bad requests (a 4xx
with an error body; the stream stays open; the job unchanged), survive a dropped connection
(resent calls are answered by their idempotency keys, not applied twice), and give way to HTTP
where a peer offers no stream.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol import codec
from services.protocol.errors import ErrorBody, ErrorCode, PayloadTooLarge
from services.protocol.messages import PrepareJob
from services.protocol.peers import SegmentClient
from services.protocol.stream import (
    StreamRequest,
    pack_request,
    unpack_answer,
)
from services.protocol.stream_client import StepStream
from tests.party.live import serve_in_thread
from tests.party.test_bad_input import (
    JOB,
    MAX_BODY,
    MAX_ROWS,
    PROBE,
    bwd,
    frame,
    fwd,
    grad,
    handles,
    prepare_spec,
)
from tests.party.test_bad_input import table as table  # noqa: F401 - the module's data fixture


def _app(table: Path, data_dir: Path) -> FastAPI:
    settings = PartySettings(
        name="f0",
        table=table,
        key_column="lot",
        data_dir=data_dir,
        max_body_bytes=MAX_BODY,
        max_batch_rows=MAX_ROWS,
        key_master=SecretStr("stream-tests"),  # twins over HTTP and the stream start alike
    )
    return create_app(settings)


def _without_upgrades(app: ASGIApp) -> ASGIApp:
    """``app`` behind a proxy that answers every WebSocket upgrade 404."""

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"Not Found"})

    return proxy


@pytest.fixture
def party_url(table: Path, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    with serve_in_thread(_app(table, tmp_path / "p"), ws_max_size=64 * 1024) as url:
        resp = httpx.put(f"{url}/v1/jobs/{JOB}", json=prepare_spec())
        assert resp.status_code == 201, resp.text
        yield url


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + f"/v1/jobs/{JOB}/stream"


def _message(op: str, body: bytes, seq: int = 1, **envelope: Any) -> bytes:
    return pack_request(StreamRequest.model_validate({"op": op, "seq": seq, **envelope}), body)


async def _call(ws: ClientConnection, message: bytes | str) -> tuple[int, int, bytes]:
    await ws.send(message)
    raw = await ws.recv(decode=False)
    assert isinstance(raw, bytes)
    answer, body = unpack_answer(raw)
    return answer.seq, answer.status, body


def _error(status: int, body: bytes, want_status: int, want_code: ErrorCode) -> None:
    assert status == want_status, body
    err = ErrorBody.model_validate_json(body)
    assert err.code == want_code.value, err
    assert err.message and b"Traceback" not in body


def _state(url: str) -> tuple[dict[str, Any], bytes]:
    status = httpx.get(f"{url}/v1/jobs/{JOB}").json()
    emb = httpx.post(
        f"{url}/v1/jobs/{JOB}/embed",
        content=frame({"job_id": JOB}, handles=PROBE),
        headers={"content-type": "application/vnd.splice.tensors"},
    )
    assert emb.status_code == 200, emb.text
    return status, emb.content


async def test_stream_answers_what_http_answers(table: Path, tmp_path: Path) -> None:  # noqa: F811
    """The same calls, one party over the stream and a twin over HTTP: identical answers."""
    answers: dict[bool, list[bytes]] = {}
    for stream in (True, False):
        with serve_in_thread(_app(table, tmp_path / str(stream))) as url:
            client = SegmentClient(url, stream=stream)
            try:
                await client.prepare(PrepareJob.model_validate(prepare_spec()))
                got: list[bytes] = []
                for step in range(3):
                    grad_step = None if step == 0 else step - 1
                    g = None if step == 0 else grad(2, seed=step)
                    acts = await client.forward(
                        JOB, step, handles(step, step + 1), grad_step=grad_step, grad=g
                    )
                    got.append(acts.tobytes())
                ack = await client.backward(JOB, 2, grad(2, seed=9))
                assert ack.applied
                got.append((await client.embed(JOB, PROBE)).tobytes())
                answers[stream] = got
                assert client.stream is stream
                assert bool(client._streams) is stream  # the stream carried the calls
            finally:
                await client.aclose()
    assert answers[True] == answers[False]


def _bad_messages() -> list[tuple[str, bytes | str, int, ErrorCode]]:
    e = ErrorCode
    ok_fwd = frame(fwd(5), handles=handles(0, 1))
    fwd_of = lambda header, h: _message("forward", frame(header, handles=h))  # noqa: E731
    float_handles = frame({"job_id": JOB}, handles=PROBE.astype(np.float64))
    nan_grad = frame(bwd(1), grad=np.full((3, 4), np.nan, np.float32))
    unknown_op = json.dumps({"v": "1", "op": "delete", "seq": 1}).encode()
    return [
        ("empty", b"", 400, e.BAD_REQUEST),
        ("short-prefix", b"\x00\x00", 400, e.BAD_REQUEST),
        ("envelope-longer-than-message", struct.pack(">I", 50) + b"{}", 400, e.BAD_REQUEST),
        ("envelope-over-limit", struct.pack(">I", 5000) + b"x" * 5000, 400, e.BAD_REQUEST),
        ("envelope-not-json", struct.pack(">I", 3) + b"abc" + ok_fwd, 400, e.VALIDATION),
        ("unknown-op", struct.pack(">I", len(unknown_op)) + unknown_op, 400, e.VALIDATION),
        ("text-message", "forward please", 415, e.UNSUPPORTED_MEDIA_TYPE),
        ("oversized", _message("forward", bytes(MAX_BODY + 100)), 413, e.PAYLOAD_TOO_LARGE),
        ("malformed-frame", _message("forward", b"not a frame"), 400, e.MALFORMED_TENSORS),
        ("frame-of-other-job", fwd_of(fwd(5, job="job2"), handles(0)), 400, e.BAD_REQUEST),
        ("handle-out-of-range", fwd_of(fwd(5), handles(0, 99)), 400, e.UNKNOWN_HANDLES),
        ("handles-float", _message("embed", float_handles), 400, e.DTYPE_MISMATCH),
        ("nan-gradient", _message("backward", nan_grad), 400, e.NON_FINITE),
        ("header-unknown-field", fwd_of(fwd(5, lr=10.0), handles(0)), 422, e.VALIDATION),
        ("replayed-step", fwd_of(fwd(0), handles(0, 1)), 409, e.STEP_CONFLICT),
        ("past-deadline", _message("forward", ok_fwd, deadline_ms=0), 504, e.DEADLINE_EXCEEDED),
    ]


@pytest.mark.parametrize("case", _bad_messages(), ids=lambda c: c[0])
async def test_bad_message_is_refused_and_changes_nothing(
    party_url: str, case: tuple[str, bytes | str, int, ErrorCode]
) -> None:
    _, message, status, code = case
    # one trained step first, so a replay has something to conflict with
    step0 = _message("forward", frame(fwd(0, key="k-000000001"), handles=handles(0, 1, 2, 3)))
    async with connect(_ws_url(party_url), compression=None) as ws:
        seq, got, body = await _call(ws, step0)
        assert got == 200, body
        seq, got, body = await _call(ws, _message("backward", frame(bwd(0), grad=grad(4)), seq=2))
        assert got == 200, body
        # step 1 awaits its gradient (what a bad backward could spoil)
        seq, got, body = await _call(
            ws, _message("forward", frame(fwd(1), handles=handles(4, 5, 6)), seq=3)
        )
        assert got == 200, body
        before = await asyncio.to_thread(_state, party_url)
        seq, got, body = await _call(ws, message)
        _error(got, body, status, code)
        assert await asyncio.to_thread(_state, party_url) == before
        # the stream is still open and still trains
        seq, got, body = await _call(ws, _message("backward", frame(bwd(1), grad=grad(3)), seq=8))
        assert (seq, got) == (8, 200), body
        seq, got, body = await _call(
            ws, _message("forward", frame(fwd(7), handles=handles(1, 2)), seq=9)
        )
        assert (seq, got) == (9, 200), body
        acts = codec.decode(body).tensor("activations", dtype="float32", ndim=2)
        assert acts.shape == (2, 4)


async def test_unknown_job_and_bad_job_id_are_refused_at_the_upgrade(party_url: str) -> None:
    """Like HTTP: an upgrade for a job id that cannot exist is denied with an error body; an
    unknown job's messages get 404 unknown_job."""
    bad = party_url.replace("http://", "ws://") + "/v1/jobs/_bad/stream"
    with pytest.raises(Exception) as info:
        async with connect(bad):
            pass
    response = info.value.response  # type: ignore[attr-defined]
    assert response.status_code == 404
    assert ErrorBody.model_validate_json(response.body).code == ErrorCode.UNKNOWN_JOB.value
    other = party_url.replace("http://", "ws://") + "/v1/jobs/nojob/stream"
    async with connect(other) as ws:
        message = _message("forward", frame(fwd(0, job="nojob"), handles=handles(0)))
        _, status, body = await _call(ws, message)
        _error(status, body, 404, ErrorCode.UNKNOWN_JOB)


async def test_dropped_connection_is_reopened_and_a_resent_step_is_not_applied_twice(
    party_url: str,
) -> None:
    stream = StepStream(party_url, JOB, auth=None, tls=None, connect_timeout=5, read_timeout=10)
    body = frame(fwd(0, key="k-resent-0001"), handles=handles(0, 1, 2))
    try:
        status, first = await stream.call("forward", body, deadline_ms=None)
        assert status == 200, first
        assert stream._ws is not None
        await stream._ws.close()  # the connection drops after the answer
        status, again = await stream.call("forward", body, deadline_ms=None)
        assert status == 200, again
        assert again == first  # answered from the idempotency record
        status_doc = await asyncio.to_thread(lambda: httpx.get(f"{party_url}/v1/jobs/{JOB}").json())
        assert status_doc["pending_step"] == 0
    finally:
        await stream.aclose()


async def test_a_message_above_the_servers_frame_limit_is_payload_too_large(party_url: str) -> None:
    stream = StepStream(party_url, JOB, auth=None, tls=None, connect_timeout=5, read_timeout=10)
    try:
        with pytest.raises(PayloadTooLarge):
            await stream.call("forward", b"\x00" * (128 * 1024), deadline_ms=None)
    finally:
        await stream.aclose()


async def test_a_party_without_the_stream_is_called_over_http(table: Path, tmp_path: Path) -> None:  # noqa: F811
    with serve_in_thread(_without_upgrades(_app(table, tmp_path / "p"))) as url:
        client = SegmentClient(url, stream=True)
        try:
            await client.prepare(PrepareJob.model_validate(prepare_spec()))
            acts = await client.forward(JOB, 0, handles(0, 1))
            assert acts.shape == (2, 4)
            assert client.stream is False  # gave way to HTTP for good
            acts = await client.embed(JOB, PROBE)
            assert acts.shape == (PROBE.shape[0], 4)
        finally:
            await client.aclose()
