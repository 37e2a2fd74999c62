"""The token endpoint with standard OAuth2 clients: both client authentication methods, the
issued JWTs and their claims, scopes, audiences, and the refusals."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from fastapi import FastAPI
from joserfc.jwk import ECKey
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.protocol.jwt_verify import verify_access_token
from services.registry.app import create_app
from services.registry.db import dispose, make_engine
from services.registry.models import utcnow
from services.registry.models_oauth import UsedClientAssertion
from services.registry.store import tokens
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.oauth_util import (
    TOKEN_URL,
    OAuthError,
    Registered,
    decode_unverified,
    key_client,
    oauth_client,
    secret_client,
    token_for,
)

GRANT = {"grant_type": "client_credentials"}


async def _verified(
    client: httpx.AsyncClient, token: str, audience: str = ISSUER
) -> dict[str, object]:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    return verify_access_token(token, jwks, issuer=ISSUER, audience=audience)


async def test_standard_clients_get_verifiable_tokens(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    basic = await secret_client(client, admin_token, "Paste Works", "jobs:run contracts:sign")
    signed = await key_client(client, admin_token, "Board Makers", "party:call jobs:run")
    for who, scope in ((basic, "contracts:sign jobs:run"), (signed, "jobs:run party:call")):
        async with oauth_client(app, who) as session:
            token = await session.fetch_token(TOKEN_URL, **GRANT)
            assert token["token_type"] == "Bearer" and token["scope"] == scope
            assert 0 < token["expires_in"] <= 600
            # The standard client then calls the registry with it: a JWT caller.
            r = await session.get(f"/v1/organisations/{who.org_id}")
            assert r.status_code == 200, r.text
            r = await session.get("/v1/organisations")
            assert r.status_code == 403  # operators only
        header, _ = decode_unverified(token["access_token"])
        assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
        claims = await _verified(client, token["access_token"])
        assert claims["iss"] == ISSUER and claims["aud"] == ISSUER
        assert claims["sub"] == claims["client_id"] == who.client_id
        assert claims["org_id"] == who.org_id and claims["scope"] == scope
        assert claims["exp"] - claims["iat"] == 600 and abs(claims["iat"] - time.time()) < 30
        assert claims["jti"] and "contract_id" not in claims and "job_id" not in claims


async def test_scopes_audience_and_claims(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "OEM", "party:call jobs:run reports:read")
    token = await token_for(
        app,
        who,
        scope="party:call",
        resource="pcb-maker",
        contract_id="c-0001",
        job_id="2b8f6f1e-5a3c-4d7e-9f00-0123456789ab",
    )
    claims = await _verified(client, token, audience="pcb-maker")
    assert claims["scope"] == "party:call" and claims["aud"] == "pcb-maker"
    assert claims["contract_id"] == "c-0001"
    assert claims["job_id"] == "2b8f6f1e-5a3c-4d7e-9f00-0123456789ab"
    # A token for a party is no token for the registry.
    r = await client.get(
        f"/v1/organisations/{who.org_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    claims = await _verified(client, await token_for(app, who, scope="reports:read jobs:run"))
    assert claims["scope"] == "jobs:run reports:read"
    claims = await _verified(
        client, await token_for(app, who, audience="paste-works"), "paste-works"
    )
    assert claims["scope"] == "jobs:run party:call reports:read"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"scope": "contracts:write"}, "invalid_scope"),  # not registered
        ({"scope": "jobs:run admin"}, "invalid_scope"),  # never for clients
        ({"scope": "jobs:run  party:call"}, "invalid_scope"),  # empty scope token
        ({"scope": 'jobs:run "x'}, "invalid_scope"),
        ({"scope": "jobs:run\n"}, "invalid_scope"),
        ({"resource": "a", "audience": "b"}, "invalid_target"),
        ({"resource": "has space"}, "invalid_target"),
        ({"contract_id": "../etc"}, "invalid_request"),
        ({"contract_id": "c-1\n"}, "invalid_request"),
        ({"audience": "party\n"}, "invalid_target"),
        ({"job_id": "x" * 65}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
)
async def test_refused_token_requests(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_token: str,
    params: dict[str, str],
    error: str,
) -> None:
    who = await secret_client(client, admin_token, "Refused", "jobs:run party:call")
    body = {**GRANT, **params}
    r = await client.post(TOKEN_URL, data=body, auth=(who.client_id, who.secret or ""))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error
    assert r.headers["cache-control"] == "no-store"


async def test_client_authentication_failures(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "Basic Co")
    for auth in ((who.client_id, who.secret + "x"), ("no-such-client", who.secret), None):
        r = await client.post(TOKEN_URL, data=GRANT, auth=auth)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
    # A secret client cannot pretend to sign, nor a signing client use a secret.
    signer = await key_client(client, admin_token, "Key Co")
    pretender = Registered(org_id=who.org_id, client_id=who.client_id, key=signer.key)
    with pytest.raises(OAuthError, match="invalid_client"):
        await token_for(app, pretender)
    r = await client.post(TOKEN_URL, data=GRANT, auth=(signer.client_id, "spl_cs_guess"))
    assert r.status_code == 401
    # Repeated parameters and other media types are refused.
    r = await client.post(
        TOKEN_URL,
        content="grant_type=client_credentials&scope=jobs:run&scope=jobs:run",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(who.client_id, who.secret),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post(TOKEN_URL, json=GRANT, auth=(who.client_id, who.secret))
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"


async def test_client_assertions_are_single_use(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await key_client(client, admin_token, "Replay Co")
    sent: list[bytes] = []

    async def remember(request: httpx.Request) -> None:
        sent.append(request.content)

    async with oauth_client(app, who) as session:
        session.event_hooks["request"].append(remember)
        await session.fetch_token(TOKEN_URL, **GRANT)
    replay = sent[-1]
    for _ in range(2):
        r = await client.post(
            TOKEN_URL,
            content=replay,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
    # An assertion signed by another key, or for another audience, fails too.
    stranger = Registered(who.org_id, who.client_id, key=ECKey.generate_key("P-256", private=True))
    with pytest.raises(OAuthError, match="invalid_client"):
        await token_for(app, stranger)
    with app.state.sessions() as session:
        assert session.query(UsedClientAssertion).count() == 1


async def test_metadata_describes_the_server(client: httpx.AsyncClient) -> None:
    r = await client.get("/.well-known/oauth-authorization-server")
    meta = r.json()
    assert meta["issuer"] == ISSUER and meta["token_endpoint"] == TOKEN_URL
    assert meta["grant_types_supported"] == ["client_credentials", "authorization_code"]
    # people sign in with the authorization code grant, PKCE S256 only (issue 19)
    assert meta["authorization_endpoint"] == f"{ISSUER}/oauth/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "private_key_jwt",
        "none",
    }
    assert "admin" not in meta["scopes_supported"]
    checked = AuthorizationServerMetadata(meta)
    for key in checked.REGISTRY_KEYS:
        getattr(checked, f"validate_{key}")()
    # A new registry makes its first keys when they are first asked for: active and next.
    r = await client.get("/.well-known/jwks.json")
    assert r.status_code == 200 and len(r.json()["keys"]) == 2
    assert {k["kty"] for k in r.json()["keys"]} == {"EC"}
    assert not any("d" in k for k in r.json()["keys"])


async def test_replays_are_refused_across_workers(
    client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    """Two workers (engines) spending one jti at the same time: exactly one succeeds."""
    who = await key_client(client, admin_token, "Race Co")
    expires = utcnow() + timedelta(minutes=5)
    engines = [make_engine(migrated_url) for _ in range(2)]
    try:
        first = Session(engines[0])
        assert tokens.spend_assertion(first, client_id=who.client_id, jti="j", expires_at=expires)

        def second_worker() -> bool:
            with Session(engines[1]) as session:
                spent = tokens.spend_assertion(
                    session, client_id=who.client_id, jti="j", expires_at=expires
                )
                session.commit()
                return spent

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(second_worker)
            time.sleep(0.3)  # the second worker now waits for the first one's transaction
            assert not pending.done()
            first.commit()
            first.close()
            assert pending.result(timeout=30) is False
    finally:
        for engine in engines:
            engine.dispose()


async def test_the_issuer_must_be_https_or_loopback(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-http issuer on another host is refused at start-up; an operator who allows it
    (a trusted private network) gets a working token endpoint."""
    with pytest.raises(ValidationError, match="plain http to another host"):
        registry_settings(migrated_url, public_url="http://registry.internal")
    # unset for this test and absent again after it (create_app sets it)
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "0")
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT")
    settings = registry_settings(
        migrated_url, public_url="http://registry.internal", allow_insecure_http=True
    )
    app = create_app(settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.internal") as c:
            r = await c.post("/oauth/token", data=GRANT, auth=("someone", "secret"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    finally:
        dispose(app.state.engine)


async def test_hostile_parameters_get_oauth_errors(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "Hostile Co")
    nasty = ['"', "\\", "\n", "\x00", "\x7f", "é", "a b", " ", "", "x" * 3000, "%00", "{}"]
    for field in ("scope", "resource", "audience", "contract_id", "job_id", "grant_type"):
        for value in nasty:
            body = {**GRANT, field: value}
            r = await client.post(TOKEN_URL, data=body, auth=(who.client_id, who.secret or ""))
            if r.status_code == 200:  # an empty optional parameter counts as absent
                assert value == "" and field != "grant_type", (field, value)
                continue
            assert r.status_code == 400, (field, value, r.text)
            assert set(r.json()) <= {"error", "error_description"}, (field, value)
