"""RFC 7662 token introspection and RFC 7009 token revocation for the registry's JWTs.

Authlib's RFC 9068 revocation endpoint refuses to revoke JWT access tokens; the registry does
revoke them, by remembering their ``jti`` until they expire. Both endpoints take the same client
authentication as the token endpoint.

Introspection is limited to the resource servers a token is for (RFC 7662 section 4): the
client that holds one of the token's audiences as a registered resource (a party service's
client, :mod:`services.registry.store.resources`), and the operator (admin token). Any other
client is told ``{"active": false}``, as for a token that does not exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from services.protocol.jwt_verify import InvalidToken
from services.registry.oauth.access import AccessToken, check_access_token
from services.registry.oauth.grants import AUTH_METHODS, RegistryClient
from services.registry.store import resources, tokens

if TYPE_CHECKING:
    from services.registry.oauth.server import RegistryAuthorizationServer

_INTROSPECTED_CLAIMS = (
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "jti",
    "org_id",
    "contract_id",
    "job_id",
)


class _Token:
    """An :class:`AccessToken` as Authlib's endpoints expect a token object."""

    def __init__(self, token: AccessToken) -> None:
        self.token = token

    def is_expired(self) -> bool:
        return False  # an expired token never gets this far: it fails verification

    def is_revoked(self) -> bool:
        return not self.token.active

    def check_client(self, client: RegistryClient) -> bool:
        return bool(client.get_client_id() == self.token.client_id)


def _lookup(server: RegistryAuthorizationServer, value: str) -> _Token | None:
    ctx = server.ctx
    try:
        return _Token(check_access_token(ctx.session, ctx.settings, value, audience=None))
    except InvalidToken:
        return None


class RegistryIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    """``POST /oauth/introspect``: ``{"active": false}`` for anything not usable right now."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def __init__(self, server: RegistryAuthorizationServer) -> None:
        super().__init__(server)
        self.registry = server

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        return _lookup(self.registry, token_string)

    def check_permission(self, token: _Token, client: RegistryClient, request: Any) -> bool:
        aud = token.token.claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]
        holders = resources.holder(self.registry.ctx.session, audiences)
        return bool(client.get_client_id() in holders)

    def for_operator(self, token_string: str) -> dict[str, Any]:
        """The introspection answer for the operator, who may introspect any token."""
        return dict(self.create_introspection_payload(self.query_token(token_string, None)))

    def introspect_token(self, token: _Token) -> dict[str, Any]:
        claims = token.token.claims
        body: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        body.update({k: claims[k] for k in _INTROSPECTED_CLAIMS if k in claims})
        return body


class RegistryRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    """``POST /oauth/revoke``: a client revokes one of its own access tokens.

    Unknown, malformed and expired tokens get the same 200 as a revoked one (RFC 7009 2.2).
    """

    CLIENT_AUTH_METHODS = AUTH_METHODS
    SUPPORTED_TOKEN_TYPES = ("access_token",)

    def __init__(self, server: RegistryAuthorizationServer) -> None:
        super().__init__(server)
        self.registry = server

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        return _lookup(self.registry, token_string)

    def revoke_token(self, token: _Token, request: Any) -> None:
        tokens.revoke_access_token(
            self.registry.ctx.session,
            jti=token.token.jti,
            client_id=token.token.client_id,
            expires_at=token.token.expires_at,
            actor=f"client:{request.client.get_client_id()}",
        )
