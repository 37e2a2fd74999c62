"""Model families registered at this party: one :class:`~.base.ModelFamily` per contract
``model.family`` value (a third family is one more package and one more line here)."""

from __future__ import annotations

from functools import cache

from services.party.families.base import ModelFamily
from services.protocol.errors import ErrorCode, Unprocessable

FAMILY_NAMES = ("nn", "gbdt")
"""The families this party trains and serves, in registration order."""


@cache
def families() -> dict[str, ModelFamily]:
    """Every registered family by name (imported on first use: the nn family pulls torch)."""
    from services.party.families.gbdt.family import GbdtFamily
    from services.party.families.nn import NnFamily

    found: dict[str, ModelFamily] = {f.name: f for f in (NnFamily(), GbdtFamily())}
    assert tuple(found) == FAMILY_NAMES
    return found


def family_of(name: str) -> ModelFamily:
    """The family ``name`` (422 ``family_not_implemented`` for any other)."""
    found = families().get(name)
    if found is None:
        raise Unprocessable(
            f"this party does not implement model family {name!r}",
            code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
            detail={"field": "model.family", "family": name},
        )
    return found


__all__ = ["FAMILY_NAMES", "ModelFamily", "families", "family_of"]
