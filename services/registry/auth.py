"""Who is calling: the one shape every authentication method resolves to.

The operator admin's bearer token resolves to an admin :class:`Caller`; a JWT access token
issued by the registry's OAuth2 server resolves to a caller acting for the client's
organisation, with the token's scopes. Routes take a ``CallerDep`` and never see which it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.protocol.errors import Forbidden
from services.registry.oauth.scopes import ADMIN, ORG_ADMIN


@dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    ``subject`` names it in the audit log (``admin:<id>``, ``client:<client id>`` or
    ``user:<user id>``);
    ``org_id`` is the organisation it acts for and ``client_id`` the OAuth client (both None for
    operator admins).
    """

    subject: str
    org_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    is_admin: bool = False
    client_id: str | None = None

    @classmethod
    def admin(cls, admin_id: str) -> Caller:
        """An operator admin."""
        return cls(subject=f"admin:{admin_id}", scopes=frozenset({ADMIN}), is_admin=True)

    @classmethod
    def client(cls, client_id: str, org_id: str, scopes: frozenset[str]) -> Caller:
        """An organisation's OAuth client, holding the scopes of its access token."""
        return cls(subject=f"client:{client_id}", org_id=org_id, scopes=scopes, client_id=client_id)

    @classmethod
    def user(cls, user_id: str, org_id: str, scopes: frozenset[str]) -> Caller:
        """A person signed in to the console for ``org_id``, holding its role's scopes."""
        return cls(subject=f"user:{user_id}", org_id=org_id, scopes=scopes)

    def require_scope(self, scope: str) -> None:
        """:class:`Forbidden` unless the caller holds ``scope`` (admins hold every scope)."""
        if not self.is_admin and scope not in self.scopes:
            raise Forbidden(f"this needs scope {scope!r}", detail={"required_scope": scope})

    def require_org(self, org_id: str) -> None:
        """:class:`Forbidden` unless the caller is an admin or acts for ``org_id``."""
        if not self.is_admin and self.org_id != org_id:
            raise Forbidden("this belongs to another organisation")

    def manages(self, org_id: str) -> bool:
        """Whether the caller is an admin of organisation ``org_id`` (scope ``org:admin``)."""
        return self.org_id == org_id and ORG_ADMIN in self.scopes

    def require_manager(self, org_id: str, *, operators: bool = True) -> None:
        """:class:`Forbidden` unless the caller is an admin of organisation ``org_id`` (scope
        ``org:admin``) or (``operators``) a registry operator."""
        if self.is_admin and operators:
            return
        if not self.manages(org_id):
            raise Forbidden(
                f"managing an organisation's clients needs scope {ORG_ADMIN!r} of that "
                "organisation",
                detail={"required_scope": ORG_ADMIN},
            )
