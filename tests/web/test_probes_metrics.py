"""The shared probe and metrics plumbing on a minimal app."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from services.web.correlation import CorrelationId
from services.web.metrics import UNMATCHED, AppMetrics, install_metrics
from services.web.probes import Check, install_probes
from tests.web.prom import sample


def build(checks: dict[str, Check], token: SecretStr | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    install_probes(app, lambda: checks, timeout=0.2, service="demo")
    install_metrics(
        app, AppMetrics("demo"), enabled=True, token=token, realm="demo", access_log="demo"
    )
    app.add_middleware(CorrelationId)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")


async def test_readyz_reports_each_check_and_bounds_it() -> None:
    async def ok() -> None:
        return None

    async def slow() -> None:
        await asyncio.sleep(5)

    async def broken() -> None:
        raise ConnectionError("refused")

    async with client(build({"a": ok})) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ready",
            "service": "demo",
            "checks": {"a": {"ok": True, "error": None}},
        }
    async with client(build({"a": ok, "b": slow, "c": broken})) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await asyncio.wait_for(c.get("/readyz"), 2)
    assert r.status_code == 503
    body = r.json()
    assert body["code"] == "not_ready" and body["message"] == "demo is not ready"
    checks = body["detail"]["checks"]
    assert checks["a"]["ok"] and not checks["b"]["ok"] and not checks["c"]["ok"]
    assert "0.2 s" in checks["b"]["error"] and "ConnectionError: refused" == checks["c"]["error"]


async def test_requests_are_counted_by_route_template() -> None:
    app = build({})
    async with client(app) as c:
        for i in (1, 2, 3):
            assert (await c.get(f"/items/{i}")).status_code == 200
        assert (await c.get("/items/nope")).status_code == 422
        assert (await c.get("/elsewhere/9")).status_code == 404
        text = (await c.get("/metrics")).text
    assert sample(text, "demo_http_requests_total", route="/items/{item_id}", status="200") == 3
    assert sample(text, "demo_http_requests_total", route="/items/{item_id}", status="422") == 1
    assert sample(text, "demo_http_requests_total", route=UNMATCHED, status="404") == 1
    assert sample(text, "demo_http_request_duration_seconds_count", route="/items/{item_id}") == 4
    assert "/items/1" not in text and "/elsewhere" not in text


async def test_two_apps_in_one_process_keep_their_own_metrics() -> None:
    first, second = build({}), build({})
    async with client(first) as a, client(second) as b:
        await a.get("/items/1")
        text = (await b.get("/metrics")).text
    assert sample(text, "demo_http_requests_total", route="/items/{item_id}") is None


async def test_metrics_behind_a_token() -> None:
    async with client(build({}, SecretStr("t0k"))) as c:
        r = await c.get("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="demo"'
        r = await c.get("/metrics", headers={"Authorization": "Bearer t0k"})
        assert r.status_code == 200
