"""Registry endpoints accept the registry's access tokens, and nothing that only looks like one."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from services.protocol.jwt_verify import InvalidToken, verify_access_token
from tests.registry.conftest import ISSUER
from tests.registry.oauth_util import (
    bad_tokens,
    claims_for,
    registry_key,
    secret_client,
    sign,
    token_for,
)
from tests.registry.util import bearer, row_counts


async def test_forged_tokens_are_refused(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    who = await secret_client(client, admin_token, "Target Co", "jobs:run reports:read")
    other = await secret_client(client, admin_token, "Other Co")
    await token_for(app, who)  # the registry has signing keys from here on
    key = registry_key(app)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    own = f"/v1/organisations/{who.org_id}"

    # The forging is right: the same claims, properly signed, are accepted.
    good = sign(key, claims_for(who))
    assert verify_access_token(good, jwks, issuer=ISSUER, audience=ISSUER)["sub"] == who.client_id
    r = await client.get(own, headers=bearer(good))
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/organisations/{other.org_id}", headers=bearer(good))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await client.get("/v1/audit", headers=bearer(good))
    assert r.status_code == 403

    before = row_counts(migrated_url)
    for name, token in bad_tokens(key, who).items():
        with pytest.raises(InvalidToken):
            verify_access_token(token, jwks, issuer=ISSUER, audience=ISSUER)
        for method, path, body in (
            ("GET", own, None),
            ("POST", f"/v1/oauth/clients/{who.client_id}/rotate", None),
            ("POST", "/v1/invitations", {"note": "x"}),
        ):
            r = await client.request(method, path, json=body, headers=bearer(token))
            assert r.status_code == 401, (name, path, r.text)
            assert r.json()["code"] == "invalid_token", name
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert row_counts(migrated_url) == before  # no side effect


async def test_a_client_token_is_not_an_admin_token(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "Ambitious Co")
    token = await token_for(app, who)
    for method, path in (
        ("GET", "/v1/organisations"),
        ("POST", f"/v1/organisations/{who.org_id}/initial-access-tokens"),
        ("GET", "/v1/audit/verify"),
    ):
        r = await client.request(method, path, headers=bearer(token))
        assert r.status_code == 403, (path, r.text)
    # It acts for its own organisation, as the client it is.
    r = await client.post(f"/v1/oauth/clients/{who.client_id}/rotate", headers=bearer(token))
    assert r.status_code == 200, r.text
    r = await client.get("/v1/audit", headers=bearer(admin_token))
    assert r.json()[-1]["actor"] == f"client:{who.client_id}"
    # The rotated secret no longer authenticates, but the token stands until it expires.
    r = await client.get(f"/v1/organisations/{who.org_id}", headers=bearer(token))
    assert r.status_code == 200
