"""Access tokens from the registry for outgoing calls: an ``httpx.Auth`` over client credentials.

A party authenticates to the registry's token endpoint as an OAuth2 client, with
``client_secret_basic`` (RFC 6749) or ``private_key_jwt`` (RFC 7523: a short-lived assertion
signed with the organisation's private key, which never leaves it), and asks for a token for one
audience (the called party), with the contract and job the call acts under. Tokens are cached
until shortly before they expire and fetched again after a 401.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from services.protocol.errors import Unauthenticated

_EXPIRY_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """How this organisation authenticates to the registry: a secret, or a private key."""

    token_url: str
    client_id: str
    secret: str | None = None
    private_key: ECKey | RSAKey | None = None

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.private_key is None):
            raise ValueError("give exactly one of secret or private_key")


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


@dataclass(slots=True)
class TokenSource:
    """Fetches and caches access tokens for (audience, scope, contract, job)."""

    credentials: ClientCredentials
    http: httpx.AsyncClient
    _cache: dict[tuple[str, str | None, str | None, str | None], _Token] = field(
        default_factory=dict
    )
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def token(
        self,
        audience: str,
        scope: str | None,
        *,
        contract_id: str | None = None,
        job_id: str | None = None,
        fresh: bool = False,
    ) -> str:
        """A valid access token (from the cache unless ``fresh``).

        ``scope`` None asks for every scope the client registered.
        """
        key = (audience, scope, contract_id, job_id)
        async with self._lock:
            hit = self._cache.get(key)
            if hit is not None and not fresh and hit.expires_at - _EXPIRY_MARGIN > time.time():
                return hit.value
            form: dict[str, str] = {"grant_type": "client_credentials", "audience": audience}
            if scope is not None:
                form["scope"] = scope
            if contract_id:
                form["contract_id"] = contract_id
            if job_id:
                form["job_id"] = job_id
            creds = self.credentials
            auth = self.authenticate(form)
            if auth is None:
                resp = await self.http.post(creds.token_url, data=form)
            else:
                resp = await self.http.post(creds.token_url, data=form, auth=auth)
            if resp.status_code != 200:
                raise Unauthenticated(
                    f"the registry refused a token ({resp.status_code})",
                    detail=_oauth_error(resp),
                )
            doc = resp.json()
            token = _Token(str(doc["access_token"]), time.time() + float(doc.get("expires_in", 60)))
            self._cache[key] = token
            return token.value

    def authenticate(self, form: dict[str, str]) -> httpx.Auth | None:
        """Client authentication for a request to the registry's OAuth endpoints (token,
        introspection): HTTP Basic for a secret (returned), or an assertion added to ``form``."""
        creds = self.credentials
        if creds.secret is not None:
            return httpx.BasicAuth(creds.client_id, creds.secret)
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        form["client_assertion"] = self._assertion()
        form["client_id"] = creds.client_id
        return None

    def _assertion(self) -> str:
        creds = self.credentials
        assert creds.private_key is not None
        now = int(time.time())
        claims = {
            "iss": creds.client_id,
            "sub": creds.client_id,
            "aud": creds.token_url,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        alg = "ES256" if isinstance(creds.private_key, ECKey) else "RS256"
        header = (
            {"alg": alg, "kid": creds.private_key.kid} if creds.private_key.kid else {"alg": alg}
        )
        return jwt.encode(header, claims, creds.private_key)


def _oauth_error(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


class BearerAuth(httpx.Auth):
    """Attach a registry token for one audience/contract/job; refetch once after a 401."""

    def __init__(
        self,
        source: TokenSource,
        audience: str,
        scope: str | None = "party:call",
        *,
        contract_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.source = source
        self.audience = audience
        self.scope = scope
        self.contract_id = contract_id
        self.job_id = job_id

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with a cached token; on 401 fetch a fresh one and retry once."""
        for fresh in (False, True):
            token = await self.source.token(
                self.audience,
                self.scope,
                contract_id=self.contract_id,
                job_id=self.job_id,
                fresh=fresh,
            )
            request.headers["authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401:
                return
