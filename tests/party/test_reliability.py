"""Calls between services: retried steps are answered, not applied twice; Retry-After; deadlines.

Faults are injected by transports around the in-process feature party: an answer lost after the
party applied the request (a read error), 503s with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from safetensors.numpy import load as st_load

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol import deadline
from services.protocol.client import ServiceClient
from services.protocol.errors import DeadlineExceeded, ErrorCode, PeerError, SpliceError
from services.protocol.messages import JobState
from services.protocol.peers import SegmentClient
from tests.party.test_bad_input import JOB, OUT, prepare_spec
from tests.synthetic import make_vertical

H = np.array([0, 1, 2], dtype=np.int64)


class LoseAnswers(httpx.AsyncBaseTransport):
    """Pass requests to ``inner``; for the paths in ``lose``, drop the first answer after the
    party handled the request (the caller sees a read error and retries)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lose: set[str]) -> None:
        self.inner, self.lose = inner, lose
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        resp = await self.inner.handle_async_request(request)
        suffix = request.url.path.rsplit("/", 1)[-1]
        if suffix in self.lose:
            self.lose.discard(suffix)
            await resp.aread()
            raise httpx.ReadError("connection reset after the request was handled")
        return resp


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vertical(tmp_path_factory.mktemp("data"), rows=200, lots=30).features["f0"]


MASTER = SecretStr("reliability-tests")
"""Both parties of a comparison derive the same job keys: the same initial weights."""


@pytest.fixture
async def app_transport(table: Path, tmp_path: Path) -> AsyncIterator[httpx.ASGITransport]:
    settings = PartySettings(
        name="f0", table=table, key_column="lot", data_dir=tmp_path / "p", key_master=MASTER
    )
    yield httpx.ASGITransport(app=create_app(settings))


async def _steps(client: SegmentClient) -> tuple[dict[str, object], np.ndarray]:
    """Prepare, two training steps (piggybacked gradient, standalone backward); the job's
    status and its evaluation-mode activations."""
    from services.protocol.messages import PrepareJob

    await client.prepare(PrepareJob.model_validate(prepare_spec()))
    g = np.full((3, OUT), 0.25, dtype=np.float32)
    await client.forward(JOB, 1, H)
    await client.forward(JOB, 2, H, grad_step=1, grad=g)
    await client.backward(JOB, 2, g)
    status = (await client.request("GET", f"/v1/jobs/{JOB}")).json()
    return status, await client.embed(JOB, H)


async def test_retried_forward_and_backward_apply_once(
    app_transport: httpx.ASGITransport, table: Path, tmp_path: Path
) -> None:
    lossy = LoseAnswers(app_transport, {"forward", "backward"})
    async with SegmentClient("http://f0", transport=lossy, backoff=0.001) as client:
        status, emb = await _steps(client)
    # forward and backward were each sent twice (the first answer was lost) ...
    assert lossy.calls.count(f"/v1/jobs/{JOB}/forward") == 3
    assert lossy.calls.count(f"/v1/jobs/{JOB}/backward") == 2
    assert status["applied_step"] == 2 and status["pending_step"] is None
    # ... and the model is the one of a party that saw every request once
    clean_settings = PartySettings(
        name="f0", table=table, key_column="lot", data_dir=tmp_path / "clean", key_master=MASTER
    )
    clean = httpx.ASGITransport(app=create_app(clean_settings))
    async with SegmentClient("http://f0", transport=clean) as client:
        status_ref, emb_ref = await _steps(client)
    assert status == status_ref
    np.testing.assert_array_equal(emb, emb_ref)


async def test_retry_after_is_honoured_and_retries_are_bounded() -> None:
    answers = [503, 429, 200]
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        code = answers.pop(0)
        if code == 200:
            return httpx.Response(200, json={"ok": True})
        body = {"code": "rate_limited", "message": "later"}
        return httpx.Response(code, json=body, headers={"Retry-After": "0.2"})

    async with ServiceClient("http://x", transport=httpx.MockTransport(handler)) as client:
        assert await client.get_json("/v1/health") == {"ok": True}
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.19 and seen[2] - seen[1] >= 0.19

    def always_refused(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        raise httpx.ConnectError("refused")

    seen.clear()
    transport = httpx.MockTransport(always_refused)
    async with ServiceClient("http://x", transport=transport, retries=2, backoff=0.001) as client:
        with pytest.raises(PeerError) as err:
            await client.get_json("/v1/health")
    assert err.value.code is ErrorCode.PEER_UNAVAILABLE and len(seen) == 3


async def test_deadline_travels_and_late_work_is_refused(
    app_transport: httpx.ASGITransport,
) -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get(deadline.HEADER))
        return httpx.Response(200, json={})

    async with ServiceClient("http://x", transport=httpx.MockTransport(handler), timeout=5) as c:
        await c.get_json("/")
        with deadline.within(1.0):
            await c.get_json("/")
        with deadline.within(-1), pytest.raises(DeadlineExceeded):
            await c.get_json("/")
    assert headers[0] is not None and 4000 < int(headers[0]) <= 5000
    assert headers[1] is not None and 0 < int(headers[1]) <= 1000
    assert len(headers) == 2  # nothing is sent past the deadline

    async with httpx.AsyncClient(transport=app_transport, base_url="http://f0") as raw:
        resp = await raw.put(f"/v1/jobs/{JOB}", json=prepare_spec())
        assert resp.status_code == 201, resp.text
        late = await raw.get(f"/v1/jobs/{JOB}", headers={deadline.HEADER: "0"})
        assert late.status_code == 504 and late.json()["code"] == "deadline_exceeded"
        fine = await raw.get(f"/v1/jobs/{JOB}", headers={deadline.HEADER: "5000"})
        assert fine.status_code == 200


async def test_shutdown_hands_back_a_settled_step(tmp_path: Path) -> None:
    """On shutdown a run finishes its step in flight, flushes the gradient and ends FAILED
    (interrupted); the feature party is left with no step awaiting a gradient."""
    from tests.party.test_training import spec_for

    v = make_vertical(tmp_path / "data", rows=1500, lots=120, seed=3, parties=1)
    feature = create_app(
        PartySettings(name="f0", table=v.features["f0"], key_column=v.keys["f0"], data_dir=tmp_path)
    )
    f0 = httpx.ASGITransport(app=feature)

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=f0)

    label = create_app(
        PartySettings(name="maker", table=v.label, data_dir=tmp_path / "maker"),
        client_factory=factory,
    )
    runs = label.state.runs
    spec = spec_for(v, epochs=50, batch_size=16)
    runs.start(spec)
    while runs.get(spec.job_id).step < 5:
        await asyncio.sleep(0.01)
    await runs.shutdown()
    status = runs.get(spec.job_id)
    assert status.state is JobState.FAILED
    assert status.error is not None and "interrupted" in status.error
    job = feature.state.party.job(spec.job_id).status()
    assert job["pending_step"] is None and job["applied_step"] == status.step


async def test_a_restarted_party_reloads_the_job_and_restores_a_cut(
    table: Path, tmp_path: Path
) -> None:
    settings = PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp_path / "p")
    first = httpx.ASGITransport(app=create_app(settings))
    async with SegmentClient("http://f0", transport=first) as client:
        status, emb = await _steps(client)
        await client.checkpoint(JOB, "step-2")
    # a new process on the same data directory: the job comes back from disk
    again = httpx.ASGITransport(app=create_app(settings))
    async with SegmentClient("http://f0", transport=again) as client:
        info = await client.restore(JOB, "step-2")
        assert info.step == 2
        np.testing.assert_array_equal(await client.embed(JOB, H), emb)
        await client.forward(JOB, 3, H)  # training goes on after the cut's step
        with pytest.raises(SpliceError) as err:
            await client.forward(JOB, 2, H)
        assert err.value.code is ErrorCode.STEP_CONFLICT


async def test_a_ckks_job_survives_a_restart_with_its_stored_keys(
    table: Path, tmp_path: Path
) -> None:
    settings = PartySettings(
        name="f0", table=table, key_column="lot", data_dir=tmp_path / "p", he_workers=1
    )
    spec = prepare_spec(protection={"mode": "ckks"}, interactive=4, batch_size=8)
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://f0") as c:
        resp = await c.put(f"/v1/jobs/{JOB}", json=spec)
        assert resp.status_code == 201, resp.text
        fingerprint = resp.json()["key_fingerprint"]
        bundle = (await c.get(f"/v1/jobs/{JOB}/keys")).content
        resp = await c.post(f"/v1/jobs/{JOB}/checkpoints", json={"tag": "step-0"})
        assert resp.status_code == 200, resp.text
    app.state.party.close()
    stored = settings.data_dir / "jobs" / JOB / "ckks-keys.bin"
    assert stored.stat().st_mode & 0o777 == 0o600  # the secret key: this party's disk only
    restarted = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=restarted), base_url="http://f0"
    ) as c:
        resp = await c.post(f"/v1/jobs/{JOB}/restore", json={"tag": "step-0"})
        assert resp.status_code == 200, resp.text
        again = (await c.get(f"/v1/jobs/{JOB}/keys")).content
        assert again == bundle and hashlib.sha256(again).hexdigest() == fingerprint
    restarted.state.party.close()
    stored.unlink()  # without its keys a ckks job cannot come back
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://f0"
    ) as c:
        resp = await c.post(f"/v1/jobs/{JOB}/restore", json={"tag": "step-0"})
        assert resp.status_code == 409
        assert "ckks" in resp.json()["message"] and "cannot resume" in resp.json()["message"]


async def test_a_restarted_party_serves_a_jobs_best_model(table: Path, tmp_path: Path) -> None:
    """Serving a deployed model after a feature party's restart: the reloaded job holds its best
    checkpoint's weights, not freshly initialised ones."""
    settings = PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp_path / "p")
    async with SegmentClient("http://f0", transport=httpx.ASGITransport(create_app(settings))) as c:
        await _steps(c)
        best = await c.checkpoint(JOB, "best")
        await c.forward(JOB, 3, H)
        await c.backward(JOB, 3, np.ones((3, OUT), dtype=np.float32))
        moved = await c.checkpoint(JOB, "later")
        assert moved.sha256 != best.sha256  # trained on after "best"
    async with SegmentClient("http://f0", transport=httpx.ASGITransport(create_app(settings))) as c:
        reloaded = await c.checkpoint(JOB, "reloaded")
    assert reloaded.step == best.step
    # the files' bytes may order the header differently: compare what they hold
    saved = settings.data_dir / "jobs" / JOB
    want, got = (st_load((saved / f"{t}.safetensors").read_bytes()) for t in ("best", "reloaded"))
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        np.testing.assert_array_equal(got[name], tensor, err_msg=name)


async def test_a_read_timeout_is_a_peer_error_and_not_retried() -> None:
    """A peer that does not answer in time (a million-key PSI reply under the default timeout)
    ends the call with 502 peer_unavailable, not an internal error, and is not asked again."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("no answer", request=request)

    async with ServiceClient("http://x", transport=httpx.MockTransport(handler), retries=3) as c:
        with pytest.raises(PeerError) as err:
            await c.request("POST", "/v1/jobs/j/psi", content=b"x")
    assert err.value.code is ErrorCode.PEER_UNAVAILABLE
    assert "peer timeouts" in err.value.message and calls == 1
