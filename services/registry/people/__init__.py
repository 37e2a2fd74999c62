"""People: roles, and the scopes each role holds (the same scopes the API enforces).

A console user acts as a :class:`~services.registry.auth.Caller` of its organisation holding its
role's scopes, and every console page calls the store functions the API routes call with that
caller: the console can do nothing the API would refuse a client holding those scopes.
"""

from __future__ import annotations

from services.registry.models_people import Role
from services.registry.oauth.scopes import ORG_ADMIN

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(
        {ORG_ADMIN, "contracts:write", "contracts:sign", "jobs:run", "reports:read"}
    ),
    Role.ENGINEER: frozenset({"contracts:write", "jobs:run"}),
    Role.FINANCE: frozenset({"reports:read"}),
    Role.VIEWER: frozenset(),
}
"""What each role may do. Everyone of an organisation reads its contracts, jobs and models."""

ROLE_TEXT: dict[Role, str] = {
    Role.ADMIN: "Manages the organisation's people and OAuth clients, signs contracts, approves "
    "and rolls back models, reads reports.",
    Role.ENGINEER: "Writes and proposes contracts, runs jobs.",
    Role.FINANCE: "Reads usage and revenue reports and downloads the exports.",
    Role.VIEWER: "Reads contracts, jobs and models.",
}


def scopes_of(role: Role) -> frozenset[str]:
    """The scopes a user with ``role`` holds."""
    return ROLE_SCOPES[role]
