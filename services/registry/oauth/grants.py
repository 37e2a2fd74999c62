"""The registry's pieces plugged into Authlib: client model, client authentication, the client
credentials grant and the RFC 9068 token generator.

Authlib is untyped, so its base classes are ``Any`` to mypy (hence the ``type: ignore[misc]`` on
each subclass); everything the registry adds is typed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from services.registry.models import OAuthClient
from services.registry.oauth.scopes import ADMIN, default_scopes
from services.registry.store import clients, tokens

if TYPE_CHECKING:
    from services.registry.oauth.server import RegistryAuthorizationServer

CLIENT_CREDENTIALS = "client_credentials"
AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]
ASSERTION_ALGORITHMS = [
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
]
"""Signature algorithms of client assertions: asymmetric only (what a registered JWK can be)."""
MAX_ASSERTION_LIFETIME_SECONDS = 3600
"""Client assertions valid for longer are refused (their ``jti`` would be kept that long)."""

# Matched with fullmatch: "$" would let a trailing newline through.
_AUDIENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:/@+-]{0,199}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 section 3.3


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]
    """RFC 8707: the requested resource (audience) is invalid or malformed."""

    error = "invalid_target"


class RegistryClient(ClientMixin):  # type: ignore[misc]
    """An :class:`OAuthClient` as Authlib sees it: a confidential client credentials client."""

    def __init__(self, model: OAuthClient) -> None:
        self.model = model
        self.scopes = frozenset(model.scope.split())

    def get_client_id(self) -> str:
        return self.model.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Requested scopes were checked in the grant: this fills in the default (every
        # registered scope but org:admin, which must be asked for) and puts the scopes in
        # canonical order.
        return " ".join(sorted(set(scope.split()) if scope else default_scopes(self.scopes)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # secrets are checked against the argon2 hash by client_secret_basic below

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.model.auth_method.value

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == CLIENT_CREDENTIALS


def client_secret_basic(server: RegistryAuthorizationServer) -> Any:
    """``client_secret_basic`` verified against the stored argon2id hash."""

    def authenticate(_query_client: Any, request: Any) -> RegistryClient | None:
        client_id, secret = extract_basic_authorization(request.headers)
        if not client_id or not secret:
            return None
        ctx = server.ctx
        found = clients.authenticate_client_secret(ctx.session, ctx.hasher, client_id, secret)
        return RegistryClient(found) if found is not None else None

    return authenticate


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 ``private_key_jwt``: an assertion signed with a key the client registered.

    Asymmetric algorithms only; the assertion's ``jti`` is spent in the database, so a replay is
    refused by every worker; assertions valid for more than an hour are refused.
    """

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: RegistryAuthorizationServer) -> None:
        super().__init__(leeway=server.ctx.settings.token_leeway_seconds)
        self.server = server

    def get_audiences(self) -> list[str]:
        issuer = self.server.ctx.settings.issuer
        endpoints = ("/oauth/token", "/oauth/introspect", "/oauth/revoke")
        return [issuer, *(issuer + path for path in endpoints)]

    def resolve_client_public_key(self, client: RegistryClient) -> KeySet:
        if client.model.jwks is None:
            raise InvalidClientError(description="The client has no registered keys.")
        try:
            return KeySet.import_key_set(client.model.jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidClientError(description="The registered keys cannot be used.") from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(description="The client assertion is not valid.") from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp - time.time() > MAX_ASSERTION_LIFETIME_SECONDS:
            raise InvalidClientError(description="The client assertion is valid for too long.")
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        if not isinstance(jti, str):
            return False
        expires = datetime.fromtimestamp(int(claims["exp"]) + self.leeway, UTC)
        return tokens.spend_assertion(
            self.server.ctx.session, client_id=str(claims["sub"]), jti=jti, expires_at=expires
        )


@dataclass(frozen=True)
class TokenRequest:
    """What a token request asks for besides scopes."""

    audience: str
    contract_id: str | None = None
    job_id: str | None = None


class RegistryClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """Client credentials with registered scopes only, and Splice's token request parameters.

    ``resource`` (RFC 8707) or ``audience`` names who the token is for, e.g. a party; default:
    the registry. ``contract_id`` and ``job_id`` become claims of the same names.
    """

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        form = self.request.form
        targets = {v for v in (form.get("resource"), form.get("audience")) if v is not None}
        if len(targets) > 1:
            raise InvalidTargetError("Give resource or audience, not two different values.")
        audience = targets.pop() if targets else self.server.ctx.settings.issuer
        if not _AUDIENCE.fullmatch(audience):
            raise InvalidTargetError("The requested audience is malformed.")
        ids: dict[str, str | None] = {}
        for name in ("contract_id", "job_id"):
            value = form.get(name)
            if value is not None and not _IDENTIFIER.fullmatch(value):
                raise InvalidRequestError(f"Malformed {name}.")
            ids[name] = value
        self.server.token_request = TokenRequest(audience=audience, **ids)

    def validate_requested_scope(self) -> None:
        scope = self.request.payload.scope
        if scope is None:
            return
        requested = scope.split(" ")
        if not all(_SCOPE_TOKEN.fullmatch(s) for s in requested):
            raise InvalidScopeError("Scopes are separated by single spaces, none empty.")
        if ADMIN in requested:
            raise InvalidScopeError("The admin scope is never granted to clients.")
        missing = sorted(set(requested) - self.request.client.scopes)
        if missing:
            raise InvalidScopeError(f"Not registered for this client: {' '.join(missing)}.")


class RegistryTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 JWT access tokens signed with the active key (``typ: at+jwt``, ``kid``).

    Claims: ``iss``, ``sub`` (= ``client_id``), ``aud``, ``exp``, ``iat``, ``jti``, ``scope``,
    ``client_id``, ``org_id`` and, when requested, ``contract_id`` and ``job_id``.
    """

    def __init__(self, server: RegistryAuthorizationServer) -> None:
        settings = server.ctx.settings
        super().__init__(
            issuer=settings.issuer,
            alg="ES256",
            expires_generator=settings.access_token_ttl_seconds,
        )
        self.server = server

    def get_jwks(self) -> KeySet:
        return KeySet([self.server.signing_key()])

    def get_audiences(self, client: RegistryClient, user: Any, scope: str) -> str:
        return self.server.requested().audience

    def get_extra_claims(
        self, client: RegistryClient, grant_type: str, user: Any, scope: str
    ) -> dict[str, Any]:
        request = self.server.requested()
        extra: dict[str, Any] = {"org_id": client.model.org_id}
        if request.contract_id is not None:
            extra["contract_id"] = request.contract_id
        if request.job_id is not None:
            extra["job_id"] = request.job_id
        return extra
