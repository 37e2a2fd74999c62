"""Settings, health and the OpenAPI description of the registry."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from services.registry import migrate
from services.registry.settings import RegistrySettings


def test_settings_come_from_the_environment_and_hide_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://splice:hunter2@db.internal/registry"
    monkeypatch.setenv("SPLICE_REGISTRY_DATABASE_URL", url)
    monkeypatch.setenv("SPLICE_REGISTRY_PORT", "8300")
    settings = RegistrySettings()
    assert settings.database_url.get_secret_value() == url
    assert settings.port == 8300
    assert "hunter2" not in repr(settings)
    assert (
        RegistrySettings.model_fields["database_url"]
        .default.get_secret_value()
        .startswith("sqlite:///")
    )


async def test_health_and_openapi(app: FastAPI, client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["schema_revision"] == migrate.head()
    spec = (await client.get("/openapi.json")).json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert len(operations) >= 14
    assert all(op.get("description") for op in operations), "route docstrings are the API docs"
    schemes = spec["components"]["securitySchemes"]
    assert {"RegistryToken", "InitialAccessToken"} <= set(schemes)
    r = await client.get("/v1/nowhere")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
