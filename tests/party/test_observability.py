"""Party probes, metrics, and one job's correlation id across the label and a feature party."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from services.engine.tabular import read_table
from services.party.app import create_app
from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.protocol import correlation
from services.protocol.messages import JobState
from services.protocol.peers import PartyClient, SegmentClient
from services.web.logs import make_handler
from tests.party.test_protection import protected
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical
from tests.web.prom import sample


class Recording:
    """ASGI wrapper noting the ``X-Correlation-ID`` of every request to the app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.seen: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"x-correlation-id")
            self.seen.append(None if raw is None else raw.decode())
        await self.app(scope, receive, send)


@pytest.fixture
def feature_log() -> Iterator[io.StringIO]:
    """JSON access-log lines of the feature party ``f0``."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("splice.access.party.f0")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


@pytest.fixture
async def parties(
    vertical: Vertical, tmp_path: Path
) -> AsyncIterator[tuple[PartyClient, FastAPI, Recording]]:
    """A label party and one feature party, in process; the feature party's requests recorded."""
    ((name, table),) = vertical.features.items()
    feature = create_app(
        PartySettings(
            name=name,
            table=table,
            key_column=vertical.keys[name],
            data_dir=tmp_path / name,
            he_workers=1,
        )
    )
    recording = Recording(feature)

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=httpx.ASGITransport(app=recording))

    label = create_app(
        PartySettings(name="maker", table=vertical.label, data_dir=tmp_path / "maker"),
        client_factory=factory,
    )
    client = PartyClient("http://maker", transport=httpx.ASGITransport(app=label))
    yield client, label, recording
    await client.aclose()


async def test_a_job_id_follows_the_training_to_the_feature_party(
    vertical: Vertical,
    parties: tuple[PartyClient, FastAPI, Recording],
    feature_log: io.StringIO,
) -> None:
    client, label, recording = parties
    spec = spec_for(vertical, epochs=1, batch_size=256).model_copy(update={"job_id": "job-obs-1"})
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error
    assert recording.seen and set(recording.seen) == {"job-obs-1"}
    lines = [json.loads(line) for line in feature_log.getvalue().splitlines()]
    assert lines, "the feature party logs each request"
    assert {line["correlation_id"] for line in lines} == {"job-obs-1"}
    assert {line.get("job_id") for line in lines} == {"job-obs-1"}
    assert any("/v1/jobs/job-obs-1/forward 200" in str(line["message"]) for line in lines)

    # A prediction request's own correlation id goes on to the feature party it calls.
    trainer = label.state.runs.runs["job-obs-1"]
    assert trainer.data is not None
    columns = label.state.predictor.model_for(trainer).schema.columns
    rows = read_table(vertical.label).take(pa.array(trainer.data.rows[:3])).select(columns)
    recording.seen.clear()
    r = await _post(label, rows.to_pylist(), "req-123")
    assert r.status_code == 200, r.text
    assert r.headers["X-Correlation-ID"] == "req-123"
    assert recording.seen and set(recording.seen) == {"req-123"}

    # the label party's metrics: HTTP, training, peer bytes, serving and metering
    text = (await client.request("GET", "/metrics")).text
    ns = "splice_party"
    steps = sample(text, f"{ns}_training_steps_total")
    assert steps is not None and steps >= status.steps_per_epoch > 0
    assert sample(text, f"{ns}_training_samples_total") == status.train_samples > 0
    # training traffic, and since then the prediction's
    sent = sample(text, f"{ns}_peer_bytes_total", direction="sent")
    received = sample(text, f"{ns}_peer_bytes_total", direction="received")
    assert sent is not None and sent > status.bytes_sent > 0
    assert received is not None and received > status.bytes_received > 0
    assert sample(text, f"{ns}_predictions_total") == 1
    assert sample(text, f"{ns}_prediction_rows_total") == 3
    assert sample(text, f"{ns}_usage_events_written_total") == 1
    assert sample(text, f"{ns}_outbox_events", state="pending") == 1
    polls = sample(text, f"{ns}_http_requests_total", method="GET", route="/v1/trainings/{job_id}")
    assert polls is not None and polls >= 1
    assert "job-obs-1" not in text  # route templates only


async def _post(app: FastAPI, rows: list[dict[str, object]], cid: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://maker"
    ) as c:
        return await c.post(
            "/v1/contracts/job-obs-1/predict",
            json={"rows": rows},
            headers={"X-Correlation-ID": cid},
        )


async def test_probes(parties: tuple[PartyClient, FastAPI, Recording]) -> None:
    client = parties[0]
    r = await client.request("GET", "/healthz")
    assert r.json() == {"status": "ok", "service": "party"}
    r = await client.request("GET", "/readyz")
    assert r.json()["checks"] == {"table": {"ok": True, "error": None}}
    assert (await client.health())["status"] == "ok"  # the /v1/health document stays
    paths = (await client.get_json("/openapi.json"))["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


async def test_not_ready_without_its_table_or_registry(vertical: Vertical, tmp_path: Path) -> None:
    settings = PartySettings(
        name="maker",
        table=tmp_path / "missing.csv",
        data_dir=tmp_path / "maker",
        registry_url="http://127.0.0.1:9",
        org_id="org-1",
        client_id="client-1",
        client_secret=SecretStr("s3cr3t"),
        readiness_timeout_seconds=1.0,
        metrics_enabled=False,
    )
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://maker"
    ) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert (await c.get("/metrics")).status_code == 404
    assert r.status_code == 503
    body = r.json()
    assert body["code"] == "not_ready"
    checks = body["detail"]["checks"]
    assert set(checks) == {"table", "registry", "credentials"}
    assert not checks["table"]["ok"] and not checks["registry"]["ok"]
    assert not checks["credentials"]["ok"]
    assert "s3cr3t" not in r.text


async def test_he_time_is_measured_on_both_sides(
    vertical: Vertical, parties: tuple[PartyClient, FastAPI, Recording]
) -> None:
    client, _, recording = parties
    spec = protected(vertical, "ckks", defence=False, epochs=1, batch_size=512)
    status = await train(client, spec.model_copy(update={"job_id": "job-he"}))
    assert status.state is JobState.FINISHED, status.error
    label_text = (await client.request("GET", "/metrics")).text
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=recording.app), base_url="http://f0"
    ) as c:
        feature_text = (await c.get("/metrics")).text
    for text, op in ((label_text, "forward"), (feature_text, "encrypt")):
        spent = sample(text, "splice_party_he_seconds_total", op=op)
        assert spent is not None and spent > 0, (op, text)


async def test_calls_to_the_registry_carry_the_correlation_id(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Correlation-ID"))
        return httpx.Response(200, json={"status": "ok"})

    settings = PartySettings(
        name="maker",
        table=tmp_path / "t.csv",
        data_dir=tmp_path,
        registry_url="http://registry",
        allow_insecure_http=True,
        org_id="org-1",
        client_id="client-1",
        client_secret=SecretStr("s3cr3t"),
    )
    link = RegistryLink(settings, httpx.MockTransport(answer))
    try:
        await link.http.get("/healthz")
        token = correlation.correlation_id.set("job-9")
        try:
            await link.http.get("/healthz")
        finally:
            correlation.correlation_id.reset(token)
    finally:
        await link.aclose()
    assert seen == [None, "job-9"]
