"""Helpers of the OAuth2 tests: onboarded clients, standard Authlib OAuth2 clients, forged tokens.

The OAuth2 clients are Authlib's own ``AsyncOAuth2Client`` configured with nothing but standard
OAuth parameters: whatever they can do, any standard client can.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey

from services.registry.store.signing_keys import active_signing_key
from tests.registry.conftest import ISSUER
from tests.registry.util import onboard, register

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and says so when it falls back to httpx.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

__all__ = ["AsyncOAuth2Client", "OAuthError", "PrivateKeyJWT"]

TOKEN_URL = f"{ISSUER}/oauth/token"
INTROSPECT_URL = f"{ISSUER}/oauth/introspect"
REVOKE_URL = f"{ISSUER}/oauth/revoke"


@dataclass(frozen=True)
class Registered:
    """An onboarded organisation's client and the credential it authenticates with."""

    org_id: str
    client_id: str
    secret: str | None = None
    key: ECKey | None = None


async def secret_client(
    client: httpx.AsyncClient, admin_token: str, name: str, scope: str = "jobs:run"
) -> Registered:
    """Onboard ``name`` and register a ``client_secret_basic`` client for ``scope``."""
    org_id, initial = await onboard(client, admin_token, name)
    r = await register(client, initial, scope=scope)
    assert r.status_code == 201, r.text
    return Registered(
        org_id=org_id, client_id=r.json()["client_id"], secret=r.json()["client_secret"]
    )


async def key_client(
    client: httpx.AsyncClient, admin_token: str, name: str, scope: str = "jobs:run"
) -> Registered:
    """Onboard ``name``; generate a P-256 key and register a ``private_key_jwt`` client with it."""
    org_id, initial = await onboard(client, admin_token, name)
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    public = {**key.as_dict(private=False), "alg": "ES256", "use": "sig"}
    r = await register(
        client,
        initial,
        scope=scope,
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [public]},
    )
    assert r.status_code == 201, r.text
    return Registered(org_id=org_id, client_id=r.json()["client_id"], key=key)


def oauth_client(app: FastAPI, who: Registered) -> AsyncOAuth2Client:
    """A standard Authlib OAuth2 client for ``who``, talking to ``app`` in-process."""
    transport = httpx.ASGITransport(app=app)
    if who.key is None:
        return AsyncOAuth2Client(
            client_id=who.client_id,
            client_secret=who.secret,
            token_endpoint_auth_method="client_secret_basic",
            revocation_endpoint_auth_method="client_secret_basic",
            transport=transport,
            base_url=ISSUER,
        )
    session = AsyncOAuth2Client(
        client_id=who.client_id,
        client_secret=who.key,
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
        transport=transport,
        base_url=ISSUER,
    )
    session.register_client_auth_method(PrivateKeyJWT(TOKEN_URL, alg="ES256"))
    return session


async def token_for(app: FastAPI, who: Registered, **params: Any) -> str:
    """A fresh access token for ``who`` (client credentials), asserting success."""
    async with oauth_client(app, who) as session:
        token = await session.fetch_token(TOKEN_URL, grant_type="client_credentials", **params)
    access: str = token["access_token"]
    return access


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unverified (for looking at what was issued)."""
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
    )


def registry_key(app: FastAPI) -> ECKey:
    """The registry's active private signing key, to forge tokens that differ in one way only."""
    with app.state.sessions() as session:
        row = active_signing_key(session, app.state.vault)
        session.commit()
        key: ECKey = app.state.vault.private_key(row.kid, row.alg, row.private_key)
    return key


def claims_for(who: Registered, **changes: Any) -> dict[str, Any]:
    """Valid access token claims for ``who`` with the registry as audience, then ``changes``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": who.client_id,
        "aud": ISSUER,
        "exp": now + 300,
        "iat": now,
        "jti": f"forged-{now}-{time.perf_counter_ns()}",
        "scope": "jobs:run",
        "client_id": who.client_id,
        "org_id": who.org_id,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: ECKey, claims: dict[str, Any], **header: Any) -> str:
    """An ES256 token over ``claims`` (header: ``typ: at+jwt`` and ``kid`` unless overridden)."""
    protected = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    return jwt.encode(protected, claims, key, default_type=None)


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """An ``alg: none`` token."""
    head = {"alg": "none", "typ": "at+jwt", "kid": kid}
    return f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}."


def bad_tokens(key: ECKey, who: Registered) -> dict[str, str]:
    """Tokens for ``who`` that are wrong in exactly one way each (``key``: the registry's)."""
    kid = key.kid or ""
    good = claims_for(who)
    public = json.dumps(key.as_dict(private=False)).encode()
    stranger = ECKey.generate_key("P-256", private=True)
    hs_header = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    hs_body = b64url(json.dumps(good).encode())
    hs_input = f"{hs_header}.{hs_body}".encode()
    return {
        "alg none": unsigned(good, kid),
        # HS256 "signed" with the public key as the secret: the classic key-confusion attack.
        "hs256 with the public key": f"{hs_header}.{hs_body}."
        + b64url(hmac.new(public, hs_input, hashlib.sha256).digest()),
        "bad signature": sign(stranger, good, kid=kid),
        "unknown kid": sign(stranger, good, kid="not-a-registry-kid"),
        "no kid": sign(key, good, kid=None),
        "typ JWT": sign(key, good, typ="JWT"),
        "expired": sign(key, claims_for(who, exp=int(time.time()) - 120)),
        "issued in the future": sign(key, claims_for(who, iat=int(time.time()) + 600)),
        "wrong issuer": sign(key, claims_for(who, iss="https://evil.test")),
        "wrong audience": sign(key, claims_for(who, aud="some-party")),
        "no jti": sign(key, claims_for(who, jti=None)),
        "no client_id": sign(key, claims_for(who, client_id=None)),
        "tampered claims": _tampered(sign(key, good), claims_for(who, scope="jobs:run admin")),
    }


def _tampered(token: str, claims: dict[str, Any]) -> str:
    head, _, signature = token.split(".")
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
