"""The party's per-organisation rate limit, strict content types and no tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.errors import RateLimited
from services.web.ratelimit import LocalRateLimiter
from tests.synthetic import make_vertical


class Clock:
    def __init__(self) -> None:
        self.now = 1000.25

    def __call__(self) -> float:
        return self.now


def test_local_limiter_counts_per_key_per_window() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(2, window_seconds=1, clock=clock)
    limiter.hit("a", "a")
    limiter.hit("a", "a")
    limiter.hit("b", "b")
    with pytest.raises(RateLimited) as err:
        limiter.hit("a", "organisation a")
    assert err.value.status == 429 and err.value.retry_after == 1
    assert err.value.detail == {"limit": 2, "window_seconds": 1}
    clock.now += 1  # next window
    limiter.hit("a", "a")
    limiter.hit("a", "a")


def test_local_limiter_off() -> None:
    limiter = LocalRateLimiter(0)
    for _ in range(100):
        limiter.hit("a", "a")


@pytest.fixture
def party(tmp_path: Path) -> FastAPI:
    table = make_vertical(tmp_path / "data", rows=50, lots=10).features["f0"]
    settings = PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp_path / "p")
    return create_app(settings)


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://f0")


async def test_rate_limited_answer_has_retry_after(party: FastAPI) -> None:
    party.state.caller_limiter = LocalRateLimiter(1, window_seconds=60)

    @party.get("/v1/limited")
    def limited() -> None:
        party.state.caller_limiter.hit("org-1", "organisation org-1")

    async with _client(party) as c:
        assert (await c.get("/v1/limited")).status_code == 200
        r = await c.get("/v1/limited")
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["code"] == "rate_limited"


async def test_every_json_endpoint_refuses_other_content_types(party: FastAPI) -> None:
    accepted = []
    for path, item in party.openapi()["paths"].items():
        for method, op in item.items():
            content: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            url = path.replace("{", "x").replace("}", "x")
            async with _client(party) as c:
                r = await c.request(
                    method, url, content=b"{}", headers={"content-type": "text/plain"}
                )
            if r.status_code != 415 or r.json()["code"] != "unsupported_media_type":
                accepted.append((method, path, r.status_code))
    assert accepted == [], accepted


async def test_an_unhandled_exception_answers_500_without_a_traceback(party: FastAPI) -> None:
    @party.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /srv/party/table.parquet")

    async with _client(party) as c:
        r = await c.get("/v1/boom")
    assert r.status_code == 500
    assert r.json() == {"code": "internal_error", "message": "internal error", "detail": None}
    assert b"Traceback" not in r.content and b"secret" not in r.content
