"""Users of organisations: invitations, accounts, password and TOTP checks.

An organisation admin (or an operator) invites a person by e-mail with a role; the invitation
code is shown once and spent when the person sets a password. Passwords are argon2id hashes;
TOTP seeds are sealed with the key encryption key (:class:`~services.registry.oauth.keys.KeyVault`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound, Unprocessable
from services.registry.auth import Caller
from services.registry.credentials import SecretHasher, new_token, token_digest
from services.registry.models import Organisation, OrgStatus, utcnow
from services.registry.models_people import Role, User, UserInvitation
from services.registry.oauth.keys import KeyVault
from services.registry.store import audit
from services.registry.store.organisations import get_organisation

USER_INVITATION_PREFIX = "spl_uin_"
MIN_PASSWORD = 12
MAX_PASSWORD = 256
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")


@dataclass(frozen=True)
class IssuedUserInvitation:
    """A new invitation and its code (shown once, not stored)."""

    invitation: UserInvitation
    code: str


def normal_email(email: str) -> str:
    """The e-mail as stored (trimmed, lower-cased); :class:`Unprocessable` if malformed."""
    value = email.strip().lower()
    if not EMAIL.fullmatch(value):
        raise Unprocessable(
            "not an e-mail address", detail=[{"loc": ["email"], "msg": "not an e-mail address"}]
        )
    return value


def check_password(password: str) -> None:
    """:class:`Unprocessable` unless the password is 12 to 256 characters."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        msg = f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        raise Unprocessable(msg, detail=[{"loc": ["password"], "msg": msg}])


def invite(
    session: Session, caller: Caller, org_id: str, *, email: str, role: Role, ttl: timedelta
) -> IssuedUserInvitation:
    """Invite ``email`` to ``org_id`` with ``role``: the organisation's admins and operators."""
    caller.require_manager(org_id)
    org = get_organisation(session, org_id)
    if org.status == OrgStatus.SUSPENDED:
        raise Conflict("the organisation is suspended", code=ErrorCode.INVALID_TRANSITION)
    address = normal_email(email)
    taken = session.scalar(select(User.id).where(User.email == address))
    if taken is not None:
        raise Conflict("a user with this e-mail exists", detail={"field": "email"})
    code = new_token(USER_INVITATION_PREFIX)
    now = utcnow()
    invitation = UserInvitation(
        org_id=org_id,
        email=address,
        role=role,
        code_hash=token_digest(code),
        created_by=caller.subject,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(invitation)
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="user.invited",
        subject=f"organisation:{org_id}",
        payload={"invitation": invitation.id, "email": address, "role": role.value},
    )
    return IssuedUserInvitation(invitation=invitation, code=code)


def accept(session: Session, hasher: SecretHasher, code: str, *, name: str, password: str) -> User:
    """Spend an invitation code: the person's account, with ``password``.

    One error for unknown, used and expired codes alike.
    """
    check_password(password)
    name = name.strip()
    if not 1 <= len(name) <= 200:
        msg = "a name has 1 to 200 characters"
        raise Unprocessable(msg, detail=[{"loc": ["name"], "msg": msg}])
    now = utcnow()
    found = session.execute(
        update(UserInvitation)
        .where(
            UserInvitation.code_hash == token_digest(code),
            UserInvitation.used_at.is_(None),
            UserInvitation.expires_at > now,
        )
        .values(used_at=now)
        .returning(UserInvitation.id)
    ).scalar_one_or_none()
    if found is None:
        raise Forbidden(
            "the invitation code is unknown, already used or expired",
            code=ErrorCode.INVALID_INVITATION,
        )
    invitation = session.get_one(UserInvitation, found)
    user = User(
        org_id=invitation.org_id,
        email=invitation.email,
        name=name,
        role=invitation.role,
        password_hash=hasher.hash(password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    invitation.user_id = user.id
    audit.append(
        session,
        actor=f"user:{user.id}",
        action="user.joined",
        subject=f"organisation:{user.org_id}",
        payload={"invitation": invitation.id, "email": user.email, "role": user.role.value},
    )
    return user


def live_user(session: Session, user_id: str) -> User | None:
    """The user, if not disabled and its organisation approved."""
    row = session.execute(
        select(User, Organisation.status)
        .join(Organisation, Organisation.id == User.org_id)
        .where(User.id == user_id)
    ).first()
    if row is None or row[0].disabled_at is not None or row[1] != OrgStatus.APPROVED:
        return None
    user: User = row[0]
    return user


def authenticate(
    session: Session,
    hasher: SecretHasher,
    vault: KeyVault,
    *,
    email: str,
    password: str,
    totp: str | None,
) -> User | None:
    """The live user with these credentials, or None (the same time spent either way).

    A user with TOTP on needs the current code too (one step of clock drift allowed).
    """
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or len(password) > MAX_PASSWORD:
        hasher.waste_time(password[:MAX_PASSWORD])
        return None
    if not hasher.verify(user.password_hash, password):
        return None
    if user.totp_secret is not None:
        seed = vault.unseal(user.totp_secret).decode("ascii")
        if not totp or not pyotp.TOTP(seed).verify(totp.strip(), valid_window=1):
            return None
    return live_user(session, user.id)


def list_users(session: Session, caller: Caller, org_id: str) -> list[User]:
    """The organisation's users by e-mail (any member of the organisation, or operators)."""
    caller.require_org(org_id)
    return list(session.scalars(select(User).where(User.org_id == org_id).order_by(User.email)))


def pending_invitations(session: Session, caller: Caller, org_id: str) -> list[UserInvitation]:
    """Invitations of the organisation not yet spent nor expired (its admins, operators)."""
    caller.require_manager(org_id)
    return list(
        session.scalars(
            select(UserInvitation)
            .where(
                UserInvitation.org_id == org_id,
                UserInvitation.used_at.is_(None),
                UserInvitation.expires_at > utcnow(),
            )
            .order_by(UserInvitation.created_at)
        )
    )


def _user_of(session: Session, caller: Caller, user_id: str) -> User:
    if not caller.is_admin:
        caller.require_manager(caller.org_id or "")
    user = session.get(User, user_id, with_for_update=True)
    if user is None or (not caller.is_admin and user.org_id != caller.org_id):
        raise NotFound("no such user")  # another organisation's user is not even named
    return user


def _admins_left(session: Session, org_id: str, without: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.org_id == org_id,
                User.role == Role.ADMIN,
                User.disabled_at.is_(None),
                User.id != without,
            )
        )
        or 0
    )


def set_role(session: Session, caller: Caller, user_id: str, role: Role) -> User:
    """Change a user's role (its organisation's admins); the last admin stays an admin."""
    user = _user_of(session, caller, user_id)
    if user.role == role:
        return user
    if user.role == Role.ADMIN and _admins_left(session, user.org_id, user.id) == 0:
        raise Conflict("the organisation's last admin keeps the admin role")
    before = user.role
    user.role = role
    audit.append(
        session,
        actor=caller.subject,
        action="user.role_changed",
        subject=f"user:{user.id}",
        payload={"from": before.value, "to": role.value},
    )
    return user


def disable(session: Session, caller: Caller, user_id: str) -> User:
    """Disable a user (its organisation's admins): its sessions end at once."""
    user = _user_of(session, caller, user_id)
    if user.disabled_at is not None:
        return user
    if user.role == Role.ADMIN and _admins_left(session, user.org_id, user.id) == 0:
        raise Conflict("the organisation's last admin cannot be disabled")
    user.disabled_at = utcnow()
    audit.append(session, actor=caller.subject, action="user.disabled", subject=f"user:{user.id}")
    return user


def new_totp_seed() -> str:
    """A fresh base32 TOTP seed."""
    return pyotp.random_base32()


def enable_totp(session: Session, vault: KeyVault, user: User, seed: str, code: str) -> bool:
    """Turn TOTP on with ``seed`` once ``code`` proves the person's authenticator has it."""
    if not pyotp.TOTP(seed).verify(code.strip(), valid_window=1):
        return False
    user.totp_secret = vault.seal(seed.encode("ascii"))
    audit.append(
        session, actor=f"user:{user.id}", action="user.totp_enabled", subject=f"user:{user.id}"
    )
    return True
