"""Strict content types on every JSON endpoint, and no traceback in any answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.registry.app import create_app
from services.registry.db import dispose
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.contract_util import OWNER, onboard_example_orgs


@pytest.fixture
def app(migrated_url: str) -> Iterator[FastAPI]:
    """The registry with rate limits counted (out of reach), so every request here also goes
    through the counting."""
    limits = {"token_rate_per_client": 10**6, "token_rate_per_ip": 10**6}
    application = create_app(
        registry_settings(migrated_url, rate_limits=True, api_rate_per_client=10**6, **limits)
    )
    yield application
    dispose(application.state.engine)


def _json_operations(app: FastAPI) -> list[tuple[str, str]]:
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            content: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                ops.append((method.upper(), path))
    return ops


async def test_every_json_endpoint_refuses_other_content_types(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    """Checked before anything else, or (contract documents, JSON or YAML) right after the
    caller is authenticated: an organisation's token is sent."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    ops = _json_operations(app)
    assert len(ops) > 10
    accepted = []
    for method, path in ops:
        url = path.replace("{", "x").replace("}", "x")  # no such object: the type is checked first
        for media in ("text/plain", "application/x-www-form-urlencoded"):
            headers = {"content-type": media, **orgs.auth(OWNER)}
            r = await client.request(method, url, content=b"{}", headers=headers)
            if r.status_code != 415 or r.json()["code"] != "unsupported_media_type":
                accepted.append((method, path, media, r.status_code))
    assert accepted == [], "\n".join(map(str, accepted))


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_unhandled_exception_answers_500_without_a_traceback(
    app: FastAPI, backend: str
) -> None:
    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /etc/splice/key.pem")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as c:
        r = await c.get("/v1/boom")
    assert r.status_code == 500
    assert r.json() == {"code": "internal_error", "message": "internal error", "detail": None}
    assert b"Traceback" not in r.content and b"secret" not in r.content
