"""Operator administrators: the one-time bootstrap and admin token checks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode
from services.registry.credentials import ADMIN_PREFIX, digest_matches, new_token, token_digest
from services.registry.models import AdminUser
from services.registry.store import audit


@dataclass(frozen=True)
class Bootstrapped:
    """The operator admin and its token. The token is shown once and is not stored."""

    admin: AdminUser
    token: str


def bootstrap_admin(session: Session, *, name: str = "operator") -> Bootstrapped:
    """Create the operator admin, once per registry database.

    Raises :class:`Conflict` (``already_bootstrapped``) if any admin exists, including when a
    concurrent bootstrap won. The caller commits, then prints ``token``: it cannot be recovered.
    """
    if session.scalar(select(AdminUser.id).limit(1)) is not None:
        raise _already()
    token = new_token(ADMIN_PREFIX)
    admin = AdminUser(name=name, token_hash=token_digest(token), bootstrap_slot=1)
    try:
        with session.begin_nested():
            session.add(admin)
    except IntegrityError as exc:
        raise _already() from exc
    audit.append(
        session,
        actor="bootstrap",
        action="admin.bootstrapped",
        subject=f"admin:{admin.id}",
        payload={"name": name},
    )
    return Bootstrapped(admin=admin, token=token)


def _already() -> Conflict:
    return Conflict(
        "the registry is already bootstrapped: its operator admin exists",
        code=ErrorCode.ALREADY_BOOTSTRAPPED,
    )


def admin_for_token(session: Session, token: str) -> AdminUser | None:
    """The admin whose token this is, or None.

    The lookup is by SHA-256 digest (timing can at most reveal digest prefixes, not the token);
    the final comparison is constant-time.
    """
    if not token.startswith(ADMIN_PREFIX):
        return None
    admin = session.scalar(select(AdminUser).where(AdminUser.token_hash == token_digest(token)))
    if admin is None or not digest_matches(admin.token_hash, token):
        return None
    return admin
