"""Registry probes, metrics and correlation ids."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from services.registry.app import create_app
from services.registry.db import dispose, make_engine
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.oauth_util import secret_client, token_for
from tests.registry.usage_util import event, metered
from tests.web.prom import sample


async def test_probes_answer_when_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["database"] == {"ok": True, "error": None}
    assert (await client.get("/v1/health")).status_code == 200  # the document stays
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


async def test_readyz_is_503_on_a_database_behind_the_schema(
    migrated_url: str, tmp_path: Path
) -> None:
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app(registry_settings(migrated_url), engine=empty)
    try:
        async with _client(app) as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
    finally:
        dispose(empty)
    assert r.status_code == 503
    body = r.json()
    assert body["code"] == "not_ready" and set(body) == {"code", "message", "detail"}
    check = body["detail"]["checks"]["database"]
    assert check["ok"] is False and "schema" in check["error"]


async def test_metrics_count_requests_tokens_and_usage(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    world = await metered(app, client, admin_token)
    e = event(world.contract_id)
    assert (await world.post([e, e])).status_code == 200
    outsider = await secret_client(client, admin_token, "outsider-org")
    await token_for(app, outsider)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    ns = "splice_registry"
    assert sample(text, f"{ns}_usage_events_total", outcome="accepted") == 1
    assert sample(text, f"{ns}_usage_events_total", outcome="duplicate") == 1
    assert sample(text, f"{ns}_usage_events_total", outcome="refused") == 0
    issued = sample(text, f"{ns}_tokens_issued_total")
    assert issued is not None and issued >= 2
    usage = sample(
        text, f"{ns}_http_requests_total", method="POST", route="/v1/usage", status="200"
    )
    assert usage == 1
    count = sample(text, f"{ns}_http_request_duration_seconds_count", route="/v1/usage")
    assert count == 1
    # route templates, never raw paths (which carry ids)
    assert world.contract_id not in text


async def test_metrics_can_be_restricted_or_switched_off(migrated_url: str) -> None:
    app = create_app(registry_settings(migrated_url, metrics_token=SecretStr("scrape-me")))
    try:
        async with _client(app) as c:
            r = await c.get("/metrics")
            assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
            bad = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            ok = await c.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            assert ok.status_code == 200 and "splice_registry_http_requests_total" in ok.text
    finally:
        dispose(app.state.engine)
    off = create_app(registry_settings(migrated_url, metrics_enabled=False))
    try:
        async with _client(off) as c:
            r = await c.get("/metrics")
            assert r.status_code == 404 and r.json()["code"] == "not_found"
    finally:
        dispose(off.state.engine)


async def test_correlation_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Correlation-ID": "job-42.step:7"})
    assert r.headers["X-Correlation-ID"] == "job-42.step:7"
    made = (await client.get("/healthz", headers={"X-Correlation-ID": "bad id<>"})).headers
    assert made["X-Correlation-ID"] != "bad id" and len(made["X-Correlation-ID"]) == 32
    r = await client.get("/v1/nowhere")
    assert r.status_code == 404 and len(r.headers["X-Correlation-ID"]) == 32


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
