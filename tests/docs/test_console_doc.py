"""docs/console.md's table of roles and scopes is the one the console enforces."""

from __future__ import annotations

import re
from pathlib import Path

from services.registry.models_people import Role
from services.registry.people import ROLE_SCOPES

DOC = Path(__file__).resolve().parents[2] / "docs" / "console.md"


def test_the_role_table_is_the_enforced_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Roles and scopes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    documented = {
        role: frozenset() if scopes.strip() == "none" else frozenset(scopes.strip("` ").split())
        for role, scopes in rows
    }
    assert documented == {role.value: scopes for role, scopes in ROLE_SCOPES.items()}
    assert set(documented) == {r.value for r in Role}
