"""Hostile numbers in a party's headers, paths and stream envelopes: a 4xx, never a 500.

Found in a penetration test: ``X-Splice-Deadline: 1`` followed by 400 zeros raised an
OverflowError before authentication (a 69-line traceback logged each time), over HTTP and over
the step stream. The header is now a declared, bounded integer parameter (422 naming it
otherwise), the stream envelope's numbers are bounded, and the property test sends
hypothesis-chosen hostile deadlines and path values to every operation of the party's OpenAPI
document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol import codec, deadline
from services.protocol.stream import StreamRequest, pack_request, unpack_answer
from tests.party.live import serve_in_thread
from tests.party.test_bad_input import JOB, PROBE, prepare_spec
from tests.synthetic import make_vertical

HUGE_DEADLINE = "1" + "0" * 400


@pytest.fixture(scope="module")
def party(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """One party for the module (its tests change nothing: that is what they check)."""
    tmp = tmp_path_factory.mktemp("hostile")
    table = make_vertical(tmp / "data", rows=50, lots=12).features["f0"]
    settings = PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp / "p")
    return create_app(settings)


@pytest.fixture(scope="module")
def party_url(party: FastAPI) -> Iterator[str]:
    with serve_in_thread(party) as url:
        r = httpx.put(f"{url}/v1/jobs/{JOB}", json=prepare_spec())
        assert r.status_code == 201, r.text
        yield url


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_400_digit_deadline_is_a_400_without_a_traceback(
    party_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=party_url) as c:
        for value in (HUGE_DEADLINE, "9" * 20, "-" + HUGE_DEADLINE, "12.5", "soon", "0x10"):
            r = await c.get(f"/v1/jobs/{JOB}", headers={deadline.HEADER: value})
            assert r.status_code == 422, (value, r.text)
            body = r.json()
            assert body["code"] == "validation_error", body
            assert body["detail"][0]["loc"] == ["header", deadline.HEADER], body
            assert "Traceback" not in r.text
        assert (
            await c.get(f"/v1/jobs/{JOB}", headers={deadline.HEADER: "5000"})
        ).status_code == 200
        # the connection was kept: the server did not fail on it
        assert (await c.get("/v1/health")).status_code == 200
    assert _errors(caplog) == []


def _message(**envelope: Any) -> bytes:
    body = codec.encode({"job_id": JOB}, {"handles": PROBE})
    head = {"op": "embed", "seq": 1, **envelope}
    raw = json.dumps(head).encode()
    return struct.pack(">I", len(raw)) + raw + body


async def test_hostile_envelope_numbers_on_the_stream_are_refused_and_it_stays_open(
    party_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = party_url.replace("http://", "ws://") + f"/v1/jobs/{JOB}/stream"
    async with connect(url, compression=None) as ws:
        for envelope in (
            {"deadline_ms": int(HUGE_DEADLINE)},
            {"deadline_ms": -int(HUGE_DEADLINE)},
            {"seq": 10**30},
        ):
            await ws.send(_message(**envelope))
            answer, body = unpack_answer(await ws.recv(decode=False))  # type: ignore[arg-type]
            assert answer.status in (400, 422), body
            assert b"Traceback" not in body
        ok = pack_request(
            StreamRequest(op="embed", seq=7, deadline_ms=5000),
            codec.encode({"job_id": JOB}, {"handles": PROBE}),
        )
        await ws.send(ok)
        answer, body = unpack_answer(await ws.recv(decode=False))  # type: ignore[arg-type]
        assert (answer.seq, answer.status) == (7, 200), body
    assert _errors(caplog) == []


# --- every operation ---------------------------------------------------------------------------

HOSTILE = st.one_of(
    st.integers(min_value=10**18, max_value=10**400).map(str),
    st.integers(min_value=-(10**30), max_value=0).map(str),
    st.text(min_size=100, max_size=1000),
    st.just(HUGE_DEADLINE),
)
HOSTILE_HEADER = st.one_of(
    st.integers(min_value=10**18, max_value=10**400).map(str),
    st.integers(min_value=-(10**30), max_value=0).map(str),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=1000),
)


async def test_no_operation_answers_5xx_to_hostile_headers_and_paths(
    party: FastAPI, party_url: str
) -> None:
    operations = []
    for path, item in party.openapi()["paths"].items():
        for method, op in item.items():
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            operations.append((method.upper(), path, names))
    seen: list[int] = []
    async with httpx.AsyncClient(base_url=party_url) as client:
        loop = asyncio.get_running_loop()

        @settings(
            max_examples=len(operations) * 8,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            method, path, names = data.draw(st.sampled_from(operations))
            for name in names:
                value = JOB if data.draw(st.booleans()) else data.draw(HOSTILE)
                path = path.replace("{" + name + "}", quote(value, safe=""))
            headers = {deadline.HEADER: data.draw(HOSTILE_HEADER)}
            kw: dict[str, Any] = {"headers": headers}
            if method in ("POST", "PUT"):
                kw["json"] = {}
            sent = asyncio.run_coroutine_threadsafe(client.request(method, path, **kw), loop)
            r = sent.result(timeout=60)
            seen.append(r.status_code)
            expired = r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
            assert r.status_code < 500 or expired, (method, path, r.status_code, r.text)

        await asyncio.to_thread(run)
    assert len(seen) >= len(operations) and 422 in seen


def test_accept_parses_only_bounded_whole_milliseconds() -> None:
    assert deadline.accept(None) is None
    assert deadline.accept("1000") is not None
    for bad in (HUGE_DEADLINE, "1e3", "", " ", "+", "0x10", str(10**19)):
        with pytest.raises(Exception) as info:
            deadline.accept(bad)
        assert getattr(info.value, "status", None) == 400, bad
    with pytest.raises(Exception) as info:
        deadline.accept("0")
    assert getattr(info.value, "status", None) == 504
