"""The operator admin is bootstrapped exactly once."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.protocol.errors import Conflict
from services.registry.models import AdminUser, AuditEntry
from services.registry.store.admins import admin_for_token, bootstrap_admin


def test_second_bootstrap_is_refused(app: FastAPI) -> None:
    with app.state.sessions() as session:
        first = bootstrap_admin(session, name="operator")
        session.commit()
    with app.state.sessions() as session, pytest.raises(Conflict) as err:
        bootstrap_admin(session, name="intruder")
    assert err.value.code.value == "already_bootstrapped"
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AdminUser)) == 1
        (admin,) = session.scalars(select(AdminUser)).all()
        assert admin.token_hash != first.token and first.token not in admin.token_hash
        found = admin_for_token(session, first.token)
        assert found is not None and found.id == admin.id
        assert admin_for_token(session, first.token + "x") is None
        assert admin_for_token(session, "") is None
        actions = session.scalars(select(AuditEntry.action)).all()
        assert actions == ["admin.bootstrapped"]
