"""OAuth clients: RFC 7591 style registration, credential rotation, revocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from services.protocol.errors import BadRequest, ErrorCode, Forbidden, NotFound, Unauthenticated
from services.registry.credentials import (
    CLIENT_SECRET_PREFIX,
    INITIAL_ACCESS_PREFIX,
    SecretHasher,
    new_token,
    token_digest,
)
from services.registry.models import (
    AuthMethod,
    InitialAccessToken,
    OAuthClient,
    OrgStatus,
    utcnow,
)
from services.registry.oauth.scopes import ORG_ADMIN
from services.registry.store import audit
from services.registry.store.organisations import get_organisation


@dataclass(frozen=True)
class ClientCredentials:
    """A client and, for ``client_secret_basic``, its new secret (shown once, not stored)."""

    client: OAuthClient
    secret: str | None


def _invalid_token() -> Unauthenticated:
    return Unauthenticated(
        "the initial access token is unknown, already used or expired",
        code=ErrorCode.INVALID_TOKEN,
    )


def initial_access_for_token(session: Session, token: str) -> InitialAccessToken:
    """The unused, unexpired initial access token with this value, or :class:`Unauthenticated`."""
    if not token.startswith(INITIAL_ACCESS_PREFIX):
        raise _invalid_token()
    record = session.scalar(
        select(InitialAccessToken).where(
            InitialAccessToken.token_hash == token_digest(token),
            InitialAccessToken.used_at.is_(None),
            InitialAccessToken.expires_at > utcnow(),
        )
    )
    if record is None:
        raise _invalid_token()
    return record


def register_client(
    session: Session,
    hasher: SecretHasher,
    access: InitialAccessToken,
    *,
    auth_method: AuthMethod,
    scope: str,
    jwks: dict[str, Any] | None,
    client_name: str | None,
    actor: str | None = None,
) -> ClientCredentials:
    """Spend ``access`` and register a client for its (approved) organisation; audited under
    ``actor`` (a console person) or else the organisation whose token was spent."""
    if (auth_method is AuthMethod.PRIVATE_KEY_JWT) != (jwks is not None):
        raise BadRequest("jwks is required with private_key_jwt and refused otherwise")
    if ORG_ADMIN in scope.split() and not access.admin:
        raise Forbidden(
            f"this initial access token does not allow scope {ORG_ADMIN!r}: the token issued "
            "at approval does, others only when an operator or the organisation's admin asks "
            "for an admin token",
            detail={"scope": ORG_ADMIN},
        )
    now = utcnow()
    spent = session.execute(
        update(InitialAccessToken)
        .where(InitialAccessToken.id == access.id, InitialAccessToken.used_at.is_(None))
        .values(used_at=now)
        .returning(InitialAccessToken.id)
    ).scalar_one_or_none()
    if spent is None:
        raise _invalid_token()
    org = get_organisation(session, access.org_id)
    if org.status is not OrgStatus.APPROVED:
        raise Forbidden(f"organisation {org.id} is {org.status.value}: it cannot register clients")
    secret = new_token(CLIENT_SECRET_PREFIX) if jwks is None else None
    client = OAuthClient(
        org_id=org.id,
        client_name=client_name,
        auth_method=auth_method,
        secret_hash=hasher.hash(secret) if secret is not None else None,
        jwks=jwks,
        scope=scope,
        created_at=now,
    )
    session.add(client)
    session.flush()
    access.client_id = client.client_id
    audit.append(
        session,
        actor=actor or f"org:{org.id}",
        action="oauth_client.registered",
        subject=f"oauth_client:{client.client_id}",
        payload={
            "org_id": org.id,
            "auth_method": auth_method.value,
            "scope": scope,
            "kids": _kids(jwks),
            "initial_access_token_id": access.id,
            "admin": access.admin,
        },
    )
    return ClientCredentials(client=client, secret=secret)


def get_client(session: Session, client_id: str, *, for_update: bool = False) -> OAuthClient:
    """The client, or :class:`NotFound`."""
    stmt = select(OAuthClient).where(OAuthClient.client_id == client_id)
    if for_update:
        # Lock the row and reload it: an already loaded copy may predate the lock.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    client = session.scalar(stmt)
    if client is None:
        raise NotFound(f"no OAuth client {client_id}", detail={"client_id": client_id})
    return client


def list_clients(session: Session, org_id: str) -> Sequence[OAuthClient]:
    """An organisation's clients, oldest first, revoked ones included."""
    stmt = select(OAuthClient).where(OAuthClient.org_id == org_id)
    return session.scalars(stmt.order_by(OAuthClient.created_at)).all()


def rotate_credentials(
    session: Session,
    hasher: SecretHasher,
    client_id: str,
    *,
    actor: str,
    jwks: dict[str, Any] | None = None,
) -> ClientCredentials:
    """Replace a client's secret (``client_secret_basic``) or key set (``private_key_jwt``).

    The old credential stops working when the transaction commits.
    """
    client = get_client(session, client_id, for_update=True)
    if client.revoked_at is not None:
        raise Forbidden(f"OAuth client {client_id} is revoked", code=ErrorCode.INVALID_TRANSITION)
    secret: str | None = None
    if client.auth_method is AuthMethod.CLIENT_SECRET_BASIC:
        if jwks is not None:
            raise BadRequest("a client_secret_basic client has no key set: send no jwks")
        secret = new_token(CLIENT_SECRET_PREFIX)
        client.secret_hash = hasher.hash(secret)
    else:
        if jwks is None:
            raise BadRequest("rotating a private_key_jwt client needs its new jwks")
        client.jwks = jwks
    client.credentials_rotated_at = utcnow()
    audit.append(
        session,
        actor=actor,
        action="oauth_client.rotated",
        subject=f"oauth_client:{client.client_id}",
        payload={"auth_method": client.auth_method.value, "kids": _kids(client.jwks)},
    )
    return ClientCredentials(client=client, secret=secret)


def revoke_client(session: Session, client_id: str, *, actor: str) -> OAuthClient:
    """Revoke a client for good. Revoking a revoked client changes nothing."""
    client = get_client(session, client_id, for_update=True)
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        audit.append(
            session,
            actor=actor,
            action="oauth_client.revoked",
            subject=f"oauth_client:{client.client_id}",
            payload={"org_id": client.org_id},
        )
    return client


def authenticate_client_secret(
    session: Session, hasher: SecretHasher, client_id: str, secret: str
) -> OAuthClient | None:
    """The live ``client_secret_basic`` client these credentials prove, or None.

    Live: not revoked, and its organisation approved. An unknown client costs a hash
    verification too, so timing does not tell which client ids exist.

    The session's transaction ends (commits) before the hash is checked, so call this before
    writing anything. The hash costs ~100 ms of CPU by design; on SQLite every transaction
    holds the database's write lock (``BEGIN IMMEDIATE``), and hashing inside one queued every
    other request behind it, under load until some failed with "database is locked".
    """
    client = session.scalar(
        select(OAuthClient)
        .options(joinedload(OAuthClient.organisation))
        .where(OAuthClient.client_id == client_id)
    )
    stored = client.secret_hash if client is not None else None
    live = (
        client is not None
        and client.revoked_at is None
        and client.organisation.status is OrgStatus.APPROVED
    )
    session.commit()
    if stored is None:
        hasher.waste_time(secret)
        return None
    if not hasher.verify(stored, secret) or not live:
        return None
    return client


def get_live_client(session: Session, client_id: str) -> OAuthClient | None:
    """The client if it is live (not revoked, its organisation approved), else None.

    Its organisation is loaded with it.
    """
    client = session.scalar(
        select(OAuthClient)
        .options(joinedload(OAuthClient.organisation))
        .where(OAuthClient.client_id == client_id)
    )
    if client is None or client.revoked_at is not None:
        return None
    if client.organisation.status is not OrgStatus.APPROVED:
        return None
    return client


def _kids(jwks: dict[str, Any] | None) -> list[str]:
    if jwks is None:
        return []
    return [str(k.get("kid")) for k in jwks.get("keys", [])]
