"""Helpers of the registry tests: onboarding steps over HTTP, key sets, raw table dumps."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import httpx
from sqlalchemy import select

from services.registry.db import make_engine
from services.registry.models import Base


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def b64url(raw: bytes) -> str:
    """Unpadded base64url, as JWKs write numbers and coordinates."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(kid: str, bits: int = 2048) -> dict[str, Any]:
    """A structurally valid public RSA JWK (random modulus: the registry does not sign with it)."""
    modulus = bytes([0x80 | secrets.randbits(7)]) + secrets.token_bytes(bits // 8 - 1)
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64url(modulus),
        "e": "AQAB",
    }


def ec_jwk(kid: str) -> dict[str, Any]:
    """A structurally valid public P-256 JWK."""
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "alg": "ES256",
        "x": b64url(secrets.token_bytes(32)),
        "y": b64url(secrets.token_bytes(32)),
    }


async def invite(client: httpx.AsyncClient, admin_token: str, note: str = "test") -> str:
    """A fresh invitation code."""
    r = await client.post("/v1/invitations", json={"note": note}, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    code: str = r.json()["code"]
    return code


async def apply(
    client: httpx.AsyncClient, code: str, name: str, kind: str = "supplier"
) -> httpx.Response:
    """Apply to join with ``code``."""
    body = {"name": name, "kind": kind, "contact_email": "ops@example.com", "invitation_code": code}
    return await client.post("/v1/organisations/applications", json=body)


async def onboard(
    client: httpx.AsyncClient, admin_token: str, name: str, kind: str = "supplier"
) -> tuple[str, str]:
    """Invite, apply and approve an organisation: its id and initial access token."""
    r = await apply(client, await invite(client, admin_token), name, kind)
    assert r.status_code == 201, r.text
    org_id: str = r.json()["id"]
    r = await client.post(f"/v1/organisations/{org_id}/approve", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    return org_id, r.json()["initial_access_token"]


async def register(
    client: httpx.AsyncClient, initial_token: str, **metadata: Any
) -> httpx.Response:
    """``POST /v1/oauth/register`` (defaults: a client_secret_basic client for jobs:run)."""
    body = {"token_endpoint_auth_method": "client_secret_basic", "scope": "jobs:run", **metadata}
    return await client.post("/v1/oauth/register", json=body, headers=bearer(initial_token))


def dump_tables(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every registry table, as plain values."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: [dict(row._mapping) for row in conn.execute(select(table))]
                for name, table in Base.metadata.tables.items()
            }
    finally:
        engine.dispose()


def row_counts(url: str) -> dict[str, int]:
    """How many rows each registry table has."""
    return {name: len(rows) for name, rows in dump_tables(url).items()}
