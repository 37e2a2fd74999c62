"""Who is calling: the one shape every authentication method resolves to.

Today only the operator admin's bearer token resolves to a :class:`Caller`; the OAuth2
authorization server (next step) adds JWT access tokens resolving to organisation callers, with
no change to the routes that take a ``CallerDep``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.protocol.errors import Forbidden
from services.registry.oauth.scopes import ADMIN


@dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    ``subject`` names it in the audit log (``admin:<id>``, later ``client:<id>``); ``org_id`` is
    the organisation it acts for (None for operator admins).
    """

    subject: str
    org_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    is_admin: bool = False

    @classmethod
    def admin(cls, admin_id: str) -> Caller:
        """An operator admin."""
        return cls(subject=f"admin:{admin_id}", scopes=frozenset({ADMIN}), is_admin=True)

    def require_scope(self, scope: str) -> None:
        """:class:`Forbidden` unless the caller holds ``scope`` (admins hold every scope)."""
        if not self.is_admin and scope not in self.scopes:
            raise Forbidden(f"this needs scope {scope!r}", detail={"required_scope": scope})

    def require_org(self, org_id: str) -> None:
        """:class:`Forbidden` unless the caller is an admin or acts for ``org_id``."""
        if not self.is_admin and self.org_id != org_id:
            raise Forbidden("this belongs to another organisation")
