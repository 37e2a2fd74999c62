"""Bad input gets a 422 naming the field, or a 413/415, as an error body; nothing is written."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.registry.oauth_util import Registered, token_for
from tests.registry.util import (
    bearer,
    dump_tables,
    ec_jwk,
    invite,
    onboard,
    register,
    row_counts,
    rsa_jwk,
)

APPLICATION = {
    "name": "Solder Paste GmbH",
    "kind": "supplier",
    "contact_email": "ops@paste.example",
}
# (body changes, the path the 422 must name)
BAD_APPLICATIONS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"kind": "bank"}, ["body", "kind"]),
    ({"contact_email": "not-an-email"}, ["body", "contact_email"]),
    ({"name": "   "}, ["body", "name"]),
    ({"name": "x" * 201}, ["body", "name"]),
    ({"name": None}, ["body", "name"]),
    ({"invitation_code": ""}, ["body", "invitation_code"]),
    ({"website": "https://paste.example"}, ["body", "website"]),
]
ENC_KEY = {**ec_jwk("enc"), "use": "enc"}
PRIVATE_KEY = {**rsa_jwk("leak"), "d": "c2VjcmV0"}
BAD_REGISTRATIONS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"token_endpoint_auth_method": "client_secret_post"}, ["body", "token_endpoint_auth_method"]),
    ({"scope": "jobs:run admin"}, ["body", "scope"]),
    ({"scope": "jobs:run  usage:write"}, ["body", "scope"]),
    ({"scope": "jobs:run jobs:run"}, ["body", "scope"]),
    ({"scope": ""}, ["body", "scope"]),
    ({"token_endpoint_auth_method": "private_key_jwt"}, ["body", "jwks"]),
    ({"jwks": {"keys": [ec_jwk("k")]}}, ["body", "jwks"]),
    (
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [PRIVATE_KEY]}},
        ["body", "jwks", "keys", 0],
    ),
    (
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [rsa_jwk("s", 1024)]}},
        ["body", "jwks", "keys", 0],
    ),
    (
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [ENC_KEY]}},
        ["body", "jwks", "keys", 0, "use"],
    ),
    (
        {
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [ec_jwk("same"), ec_jwk("same")]},
        },
        ["body", "jwks"],
    ),
    (
        {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}},
        ["body", "jwks", "keys"],
    ),
    ({"grant_types": ["authorization_code"]}, ["body", "grant_types", 0]),
    ({"redirect_uris": ["https://evil.example"]}, ["body", "redirect_uris"]),
]


def _assert_422(response: httpx.Response, path: list[Any]) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    locations = [e["loc"] for e in body["detail"]]
    assert path in locations, locations


async def test_bad_applications(
    client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    code = await invite(client, admin_token)
    before = dump_tables(migrated_url)
    for change, path in BAD_APPLICATIONS:
        body = {**APPLICATION, "invitation_code": code, **change}
        r = await client.post("/v1/organisations/applications", json=body)
        _assert_422(r, path)
    assert dump_tables(migrated_url) == before
    r = await client.post(
        "/v1/organisations/applications", json={**APPLICATION, "invitation_code": code}
    )
    assert r.status_code == 201, "bad attempts must not spend the invitation"


async def test_bad_registrations(
    client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    _, initial_token = await onboard(client, admin_token, "Board Maker", "manufacturer")
    before = dump_tables(migrated_url)
    for change, path in BAD_REGISTRATIONS:
        _assert_422(await register(client, initial_token, **change), path)
    assert dump_tables(migrated_url) == before
    r = await register(client, initial_token)
    assert r.status_code == 201, "bad attempts must not spend the initial access token"


async def test_bad_invitations_and_rotations(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    admin = bearer(admin_token)
    org_id, initial_token = await onboard(client, admin_token, "Housing Co")
    basic = (await register(client, initial_token)).json()
    own = bearer(
        await token_for(app, Registered(org_id, basic["client_id"], basic["client_secret"]))
    )
    before = row_counts(migrated_url)
    r = await client.post("/v1/invitations", json={"ttl_hours": 24 * 365}, headers=admin)
    _assert_422(r, ["body", "ttl_hours"])
    r = await client.post("/v1/invitations", json={"ttl_hours": 0}, headers=admin)
    _assert_422(r, ["body", "ttl_hours"])
    r = await client.post(
        f"/v1/oauth/clients/{basic['client_id']}/rotate",
        json={"jwks": {"keys": [PRIVATE_KEY]}},
        headers=own,
    )
    _assert_422(r, ["body", "jwks", "keys", 0])
    r = await client.post(
        f"/v1/oauth/clients/{basic['client_id']}/rotate",
        json={"jwks": {"keys": [ec_jwk("k")]}},
        headers=own,
    )
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    r = await client.get("/v1/organisations", params={"status": "gone"}, headers=admin)
    _assert_422(r, ["query", "status"])
    assert row_counts(migrated_url) == before


MALFORMED: list[tuple[bytes, str, int]] = [
    (b"name=acme", "application/x-www-form-urlencoded", 415),
    (b"{not json", "application/json", 422),
    (b"[]", "application/json", 422),
    (b'{"name": "' + b"x" * 2_000_000 + b'"}', "application/json", 413),
]


async def test_malformed_bodies(client: httpx.AsyncClient, migrated_url: str) -> None:
    before = row_counts(migrated_url)
    for content, media, status in MALFORMED:
        r = await client.post(
            "/v1/organisations/applications", content=content, headers={"content-type": media}
        )
        assert r.status_code == status, (media, status, r.text)
        assert set(r.json()) == {"code", "message", "detail"}
    assert row_counts(migrated_url) == before
