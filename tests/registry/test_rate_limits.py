"""Rate limits per client and per source address, counted in the registry database."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from services.registry.app import create_app
from services.registry.db import dispose
from services.registry.settings import RegistrySettings
from services.registry.store import rate_limits
from services.registry.store.admins import bootstrap_admin
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.oauth_util import TOKEN_URL, secret_client
from tests.registry.util import bearer

LIMIT = 3


@pytest.fixture
def limited(migrated_url: str) -> Iterator[FastAPI]:
    """A registry allowing LIMIT requests per caller per (long) window."""
    app = create_app(_settings(migrated_url))
    yield app
    dispose(app.state.engine)


def _settings(url: str, **over: object) -> RegistrySettings:
    values: dict[str, object] = {
        "rate_limits": True,
        "rate_window_seconds": 3600,  # one window for the whole test
        "api_rate_per_client": LIMIT,
        "token_rate_per_client": LIMIT,
        "token_rate_per_ip": 10 * LIMIT,
    }
    return registry_settings(url, **(values | over))


@asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        yield c


def _admin(app: FastAPI) -> str:
    with app.state.sessions() as session:
        token = bootstrap_admin(session).token
        session.commit()
    return token


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _assert_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["code"] == "rate_limited"
    assert body["detail"]["limit"] == LIMIT


async def test_api_caller_over_its_limit_gets_429(limited: FastAPI) -> None:
    admin = _admin(limited)
    async with _client(limited) as c:
        for _ in range(LIMIT):
            assert (await c.get("/v1/organisations", headers=bearer(admin))).status_code == 200
        _assert_limited(await c.get("/v1/organisations", headers=bearer(admin)))
        # Unauthenticated requests are not counted against (or blocked by) the caller's bucket.
        assert (await c.get("/v1/organisations")).status_code == 401


async def test_token_requests_per_client(migrated_url: str) -> None:
    app = create_app(_settings(migrated_url, api_rate_per_client=1000))
    try:
        admin = _admin(app)
        async with _client(app) as c:
            who = await secret_client(c, admin, "lumen-pcb")
            assert who.secret is not None
            form = {"grant_type": "client_credentials"}
            for _ in range(LIMIT):
                r = await c.post(TOKEN_URL, data=form, headers=_basic(who.client_id, who.secret))
                assert r.status_code == 200, r.text
            r = await c.post(TOKEN_URL, data=form, headers=_basic(who.client_id, who.secret))
            _assert_limited(r)
            # Another client from the same address still gets its tokens.
            other = await secret_client(c, admin, "solvia-paste")
            assert other.secret is not None
            r = await c.post(TOKEN_URL, data=form, headers=_basic(other.client_id, other.secret))
            assert r.status_code == 200, r.text
    finally:
        dispose(app.state.engine)


async def test_token_requests_per_address(migrated_url: str) -> None:
    app = create_app(_settings(migrated_url, token_rate_per_ip=LIMIT))
    try:
        async with _client(app) as c:
            form = {"grant_type": "client_credentials"}
            for n in range(LIMIT):  # failed attempts under made-up client ids count too
                r = await c.post(TOKEN_URL, data=form, headers=_basic(f"nobody-{n}", "x"))
                assert r.status_code == 401, r.text
            _assert_limited(await c.post(TOKEN_URL, data=form, headers=_basic("nobody-x", "x")))
    finally:
        dispose(app.state.engine)


async def test_two_instances_share_the_count(migrated_url: str) -> None:
    """Two apps with their own engines on one database: one budget per caller."""
    first = create_app(_settings(migrated_url))
    second = create_app(_settings(migrated_url))
    try:
        admin = _admin(first)
        async with _client(first) as a, _client(second) as b:
            for n in range(LIMIT):
                r = await (a if n % 2 else b).get("/v1/organisations", headers=bearer(admin))
                assert r.status_code == 200, r.text
            _assert_limited(await a.get("/v1/organisations", headers=bearer(admin)))
            _assert_limited(await b.get("/v1/organisations", headers=bearer(admin)))
    finally:
        dispose(first.state.engine)
        dispose(second.state.engine)


async def test_limits_can_be_turned_off(migrated_url: str) -> None:
    app = create_app(_settings(migrated_url, rate_limits=False))
    try:
        admin = _admin(app)
        async with _client(app) as c:
            for _ in range(LIMIT + 2):
                assert (await c.get("/v1/organisations", headers=bearer(admin))).status_code == 200
    finally:
        dispose(app.state.engine)


def test_a_new_window_starts_from_zero(limited: FastAPI) -> None:
    with limited.state.sessions() as session:
        assert rate_limits.count_hits(session, ["a", "b"], 10, now=100.0) == {"a": 1, "b": 1}
        assert rate_limits.count_hits(session, ["a"], 10, now=109.9) == {"a": 2}
        assert rate_limits.count_hits(session, ["a", "b"], 10, now=110.0) == {"a": 1, "b": 1}
        assert rate_limits.count_hits(session, ["b", "b"], 10, now=111.0) == {"b": 2}
