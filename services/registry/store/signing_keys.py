"""Token signing keys in the database: creation, rotation, the published key set.

Exactly one key is ``active`` (it signs) and one is ``next`` (published, not yet signing).
:func:`rotate_signing_keys` retires the active key, activates the next one and creates a new
next key. Retired keys stay in the published set until every token they signed has expired.
Key changes are serialised (PostgreSQL: a transaction advisory lock; SQLite: ``BEGIN
IMMEDIATE``), so two workers never create two active keys.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from services.registry.models import utcnow
from services.registry.models_oauth import SigningKey, SigningKeyStatus
from services.registry.oauth.keys import KeyVault, generate_key_pair
from services.registry.store import audit

# Arbitrary constant key of the PostgreSQL advisory lock that serialises key changes.
_KEYS_LOCK_KEY = 0x5B1CE_0A0A7


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _KEYS_LOCK_KEY})


def _by_status(session: Session, status: SigningKeyStatus) -> SigningKey | None:
    stmt = (
        select(SigningKey)
        .where(SigningKey.status == status)
        .order_by(SigningKey.created_at.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return session.scalar(stmt)


def _new_key(session: Session, vault: KeyVault, status: SigningKeyStatus) -> SigningKey:
    pair = generate_key_pair()
    now = utcnow()
    key = SigningKey(
        kid=pair.kid,
        alg=pair.alg,
        status=status,
        public_jwk=pair.public_jwk,
        private_key=vault.seal(pair.private_pem),
        created_at=now,
        activated_at=now if status is SigningKeyStatus.ACTIVE else None,
    )
    session.add(key)
    session.flush()
    return key


def active_signing_key(session: Session, vault: KeyVault, *, actor: str = "system") -> SigningKey:
    """The key that signs now, creating the first active and next keys if there are none."""
    active = _by_status(session, SigningKeyStatus.ACTIVE)
    if active is not None:
        return active
    _lock(session)
    active = _by_status(session, SigningKeyStatus.ACTIVE)
    if active is not None:  # another worker created it while we waited for the lock
        return active
    created = [_new_key(session, vault, SigningKeyStatus.ACTIVE)]
    if _by_status(session, SigningKeyStatus.NEXT) is None:
        created.append(_new_key(session, vault, SigningKeyStatus.NEXT))
    audit.append(
        session,
        actor=actor,
        action="signing_keys.created",
        subject=f"signing_key:{created[0].kid}",
        payload={"keys": {k.kid: k.status.value for k in created}},
    )
    return created[0]


def rotate_signing_keys(session: Session, vault: KeyVault, *, actor: str = "system") -> SigningKey:
    """Next becomes active, active becomes retired, a new next key is made. Returns the active.

    Tokens signed by the retired key stay verifiable while it is published (see
    :func:`published_keys`); the caller commits.
    """
    _lock(session)
    now = utcnow()
    previous = _by_status(session, SigningKeyStatus.ACTIVE)
    if previous is not None:
        previous.status = SigningKeyStatus.RETIRED
        previous.retired_at = now
    active = _by_status(session, SigningKeyStatus.NEXT)
    if active is None:
        active = _new_key(session, vault, SigningKeyStatus.ACTIVE)
    else:
        active.status = SigningKeyStatus.ACTIVE
        active.activated_at = now
    session.flush()
    upcoming = _new_key(session, vault, SigningKeyStatus.NEXT)
    audit.append(
        session,
        actor=actor,
        action="signing_keys.rotated",
        subject=f"signing_key:{active.kid}",
        payload={
            "active": active.kid,
            "next": upcoming.kid,
            "retired": previous.kid if previous is not None else None,
        },
    )
    return active


def published_keys(session: Session, *, retired_grace: timedelta) -> list[SigningKey]:
    """Keys that verify tokens: active, next, and retired less than ``retired_grace`` ago.

    ``retired_grace`` must cover the longest token lifetime plus clock leeway.
    """
    cutoff = utcnow() - retired_grace
    stmt = (
        select(SigningKey)
        .where(
            or_(
                SigningKey.status != SigningKeyStatus.RETIRED,
                SigningKey.retired_at > cutoff,
            )
        )
        .order_by(SigningKey.created_at)
    )
    return list(session.scalars(stmt))


def jwks(session: Session, *, retired_grace: timedelta) -> dict[str, Any]:
    """The published JWK Set document: public keys only."""
    keys = published_keys(session, retired_grace=retired_grace)
    return {"keys": [dict(k.public_jwk) for k in keys]}


def every_public_key(session: Session) -> dict[str, Any]:
    """Every key the registry ever signed with, as a JWK Set (public keys only): what a token
    presented days ago is checked against (usage events shipped after an outage), when keys it
    no longer publishes may have signed it."""
    keys = session.scalars(select(SigningKey).order_by(SigningKey.created_at))
    return {"keys": [dict(k.public_jwk) for k in keys]}


def reseal_signing_keys(session: Session, vault: KeyVault) -> int:
    """Re-encrypt every stored private key under the current key encryption key.

    Run after prepending a new key encryption key; afterwards the old one can be dropped.
    Returns how many keys were rewritten.
    """
    _lock(session)
    keys = list(session.scalars(select(SigningKey)))
    for key in keys:
        key.private_key = vault.reseal(key.private_key)
    return len(keys)
