"""The scopes the registry grants, and parsing of RFC 6749 scope strings."""

from __future__ import annotations

ADMIN = "admin"
"""Operator scope: never granted through client registration."""
ORG_ADMIN = "org:admin"
"""Manage the organisation's own OAuth clients. Registered only with an initial access token
marked ``admin`` (the one issued at approval); a token carries it only when asked for by name."""

CLIENT_SCOPES: dict[str, str] = {
    "contracts:write": "Create and propose contracts.",
    "contracts:sign": "Accept or reject contracts the organisation is a party to.",
    "jobs:run": "Create training jobs and report their progress.",
    "party:call": "Call other parties' services under an active contract.",
    "usage:write": "Report prediction usage.",
    "reports:read": "Read usage, revenue and audit reports.",
    "predict:call": "Ask a label party for predictions of a deployed joint model.",
    ORG_ADMIN: "Manage the organisation's OAuth clients: list, read, rotate and revoke them, "
    "issue initial access tokens. Only with an admin initial access token; never in a token "
    "unless requested by name.",
}
"""Scopes an organisation's client may register for, with what each allows."""


NOT_BY_DEFAULT = frozenset({ORG_ADMIN})
"""Registered scopes a token holds only when its request names them."""


def default_scopes(registered: frozenset[str]) -> frozenset[str]:
    """The scopes of a token request that names none: the registered ones but
    :data:`NOT_BY_DEFAULT`."""
    return registered - NOT_BY_DEFAULT


def parse_scope(value: str) -> list[str]:
    """A space-separated scope string as a sorted list of distinct, grantable scopes.

    Raises ValueError naming the offending scopes (pydantic turns it into a 422 on that field).
    """
    parts = value.split(" ")
    if not value or any(p == "" for p in parts):
        raise ValueError("scopes are separated by single spaces, with none empty")
    unknown = sorted({p for p in parts if p not in CLIENT_SCOPES})
    if unknown:
        raise ValueError(
            f"unknown or not grantable: {', '.join(unknown)}; "
            f"grantable: {', '.join(sorted(CLIENT_SCOPES))}"
        )
    if len(set(parts)) != len(parts):
        raise ValueError("a scope is repeated")
    return sorted(parts)
