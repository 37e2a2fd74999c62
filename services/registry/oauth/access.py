"""Access tokens this registry issued: verified against its published keys, then checked live.

Signature, header and claims are checked by :func:`services.protocol.jwt_verify.verify_access_token`
(the function party services use too); on top of that the registry knows what a party cannot:
whether the token was revoked, whether its client was revoked and whether its organisation is
still approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.protocol.jwt_verify import verify_access_token
from services.registry.settings import RegistrySettings
from services.registry.store import clients, signing_keys, tokens


def retired_grace(settings: RegistrySettings) -> timedelta:
    """How long a retired signing key stays published: a token lifetime plus clock leeway."""
    return timedelta(seconds=settings.access_token_ttl_seconds + settings.token_leeway_seconds)


def published_jwks(session: Session, settings: RegistrySettings) -> dict[str, Any]:
    """The registry's JWK Set document (what ``/.well-known/jwks.json`` serves)."""
    return signing_keys.jwks(session, retired_grace=retired_grace(settings))


@dataclass(frozen=True)
class AccessToken:
    """A token whose signature and claims checked out, and what the registry knows of it."""

    claims: dict[str, Any]
    revoked: bool
    """Its ``jti`` was revoked (RFC 7009)."""
    client_live: bool
    """Its client is not revoked and the client's organisation is approved."""

    @property
    def active(self) -> bool:
        """Whether the token may be used now."""
        return self.client_live and not self.revoked

    @property
    def client_id(self) -> str:
        """The client the token was issued to."""
        return str(self.claims["client_id"])

    @property
    def org_id(self) -> str | None:
        """The organisation of that client."""
        org = self.claims.get("org_id")
        return org if isinstance(org, str) else None

    @property
    def jti(self) -> str:
        """The token's id."""
        return str(self.claims["jti"])

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes granted."""
        scope = self.claims.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()

    @property
    def expires_at(self) -> datetime:
        """When the token expires."""
        return datetime.fromtimestamp(int(self.claims["exp"]), UTC)


def check_access_token(
    session: Session, settings: RegistrySettings, token: str, *, audience: str | None
) -> AccessToken:
    """The token's claims and state; :class:`~services.protocol.jwt_verify.InvalidToken` if it is
    not a well-formed, unexpired token signed by one of the published keys for ``audience``.

    ``audience=None`` skips the audience check (introspection and revocation, which answer for
    tokens of any audience).
    """
    claims = verify_access_token(
        token,
        published_jwks(session, settings),
        issuer=settings.issuer,
        audience=audience,
        leeway=settings.token_leeway_seconds,
    )
    revoked = tokens.is_revoked(session, str(claims["jti"]))
    client = clients.get_live_client(session, str(claims["client_id"]))
    live = client is not None and client.org_id == claims.get("org_id")
    return AccessToken(claims=claims, revoked=revoked, client_live=live)
