"""Introspection (RFC 7662) and revocation (RFC 7009) with standard clients; revoked clients and
suspended organisations lose their tokens and get no new ones. Introspection answers the client
that serves a token's audience (a claimed resource) only: test_oauth_hardening.py."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.registry.oauth_util import (
    INTROSPECT_URL,
    REVOKE_URL,
    TOKEN_URL,
    OAuthError,
    Registered,
    claims_for,
    key_client,
    oauth_client,
    registry_key,
    secret_client,
    sign,
    token_for,
)
from tests.registry.util import bearer


async def _introspect(app: FastAPI, asker: Registered, token: str) -> dict[str, object]:
    async with oauth_client(app, asker) as session:
        r = await session.introspect_token(INTROSPECT_URL, token=token)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def claim(client: httpx.AsyncClient, app: FastAPI, who: Registered, resource: str) -> None:
    """``who`` serves ``resource``: it may introspect tokens for it."""
    auth = bearer(await token_for(app, who, scope="party:call"))
    r = await client.post(
        f"/v1/oauth/clients/{who.client_id}/resources", json={"resource": resource}, headers=auth
    )
    assert r.status_code == 200, r.text


async def _revoke(app: FastAPI, who: Registered, token: str) -> httpx.Response:
    async with oauth_client(app, who) as session:
        response: httpx.Response = await session.revoke_token(REVOKE_URL, token=token)
    return response


async def test_introspection_and_revocation(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    owner = await key_client(client, admin_token, "Owner Co", "jobs:run party:call")
    party = await secret_client(client, admin_token, "Party Co", "party:call")
    await claim(client, app, party, "party-co")
    token = await token_for(app, owner, scope="party:call", resource="party-co", job_id="j-1")

    # The client serving the token's audience asks; the answer carries the claims. The token's
    # own client is no resource server of it: it learns nothing.
    body = await _introspect(app, party, token)
    assert body["active"] is True and body["client_id"] == owner.client_id
    assert body["aud"] == "party-co" and body["scope"] == "party:call"
    assert body["org_id"] == owner.org_id and body["job_id"] == "j-1"
    assert await _introspect(app, owner, token) == {"active": False}
    # Garbage, foreign signatures and expired tokens are simply inactive.
    key = registry_key(app)
    expired = sign(key, claims_for(owner, exp=1_000_000, iat=999_000))
    for value in ("not-a-token", token[:-4] + "AAAA", expired):
        assert await _introspect(app, party, value) == {"active": False}
    # Unauthenticated introspection is refused.
    r = await client.post(INTROSPECT_URL, data={"token": token})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    # Only the token's own client may revoke it.
    r = await _revoke(app, party, token)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert (await _introspect(app, party, token))["active"] is True
    for _ in range(2):  # idempotent
        r = await _revoke(app, owner, token)
        assert r.status_code == 200, r.text
    assert await _introspect(app, party, token) == {"active": False}
    r = await _revoke(app, owner, "not-a-token")
    assert r.status_code == 200

    # A revoked token no longer works at the registry; a fresh one does.
    registry_token = await token_for(app, owner)
    r = await client.get(f"/v1/organisations/{owner.org_id}", headers=bearer(registry_token))
    assert r.status_code == 200
    assert (await _revoke(app, owner, registry_token)).status_code == 200
    r = await client.get(f"/v1/organisations/{owner.org_id}", headers=bearer(registry_token))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"

    r = await client.get("/v1/audit", headers=bearer(admin_token))
    assert [e["action"] for e in r.json()].count("access_token.revoked") == 2


@pytest.mark.parametrize("method", ["client_secret_basic", "private_key_jwt"])
async def test_revoked_clients_and_suspended_orgs(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, method: str
) -> None:
    make = secret_client if method == "client_secret_basic" else key_client
    who = await make(client, admin_token, "Wayward Co")
    witness = await secret_client(client, admin_token, "Witness Co", "party:call")
    await claim(client, app, witness, "witness-co")
    token = await token_for(app, who)  # for the registry
    seen = await token_for(app, who, resource="witness-co")  # for the witness's service
    assert (await _introspect(app, witness, seen))["active"] is True
    admin = bearer(admin_token)

    r = await client.post(
        f"/v1/organisations/{who.org_id}/suspend", json={"reason": "audit"}, headers=admin
    )
    assert r.status_code == 200
    with pytest.raises(OAuthError, match="invalid_client"):
        await token_for(app, who)
    assert await _introspect(app, witness, seen) == {"active": False}
    r = await client.get(f"/v1/organisations/{who.org_id}", headers=bearer(token))
    assert r.status_code == 401
    async with oauth_client(app, who) as session:  # nor may it introspect
        r = await session.introspect_token(INTROSPECT_URL, token=token)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    r = await client.post(f"/v1/organisations/{who.org_id}/reinstate", headers=admin)
    assert r.status_code == 200
    assert (await _introspect(app, witness, seen))["active"] is True
    token = await token_for(app, who)
    seen = await token_for(app, who, resource="witness-co")

    r = await client.post(f"/v1/oauth/clients/{who.client_id}/revoke", headers=admin)
    assert r.status_code == 200
    with pytest.raises(OAuthError, match="invalid_client"):
        await token_for(app, who)
    r = await client.post(TOKEN_URL, data={"grant_type": "client_credentials"})
    assert r.status_code == 401
    assert await _introspect(app, witness, seen) == {"active": False}
    r = await client.get(f"/v1/organisations/{who.org_id}", headers=bearer(token))
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
