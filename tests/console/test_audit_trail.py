"""Every console action is in the audit log, under the person who took it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.registry.models import AuditEntry
from tests.console.util import PASSWORD, browser
from tests.console.world import EXAMPLE, Signed, World, build
from tests.registry.contract_util import model_version_body
from tests.registry.oauth_util import Registered, token_for
from tests.registry.util import bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> AsyncIterator[World]:
    built = await build(app, client, admin_token)
    yield built
    await built.aclose()


class Trail:
    """The audit entries written since the last look."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.seen = self._last()

    def _last(self) -> int:
        with self.app.state.sessions() as session:
            return max(session.scalars(select(AuditEntry.seq)), default=0)

    def new(self) -> list[tuple[str, str]]:
        with self.app.state.sessions() as session:
            rows = session.execute(
                select(AuditEntry.actor, AuditEntry.action)
                .where(AuditEntry.seq > self.seen)
                .order_by(AuditEntry.seq)
            ).all()
        self.seen = self._last()
        return [(a, b) for a, b in rows]


async def _post(
    trail: Trail, who: Signed, path: str, data: dict[str, object], action: str, **kw: object
) -> httpx.Response:
    """POST a console form as ``who``: it succeeds and writes ``action`` under the person."""
    r = await who.client.post(path, data={"csrf_token": who.csrf, **data}, **kw)  # type: ignore[arg-type]
    assert r.status_code in (200, 201, 303), (path, r.status_code, r.text[-500:])
    assert (f"user:{who.user_id}", action) in trail.new(), (path, action)
    return r


async def test_every_console_action_is_audited(world: World, app: FastAPI) -> None:
    trail = Trail(app)
    admin, engineer = world.people["paste-admin"], world.people["oem-engineer"]
    # people and clients
    r = await _post(
        trail,
        admin,
        "/console/users/invite",
        {"email": "new@solvia.example", "role": "viewer"},
        "user.invited",
    )
    code = re.search(r'id="invitation-code">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    async with browser(app) as newcomer:
        form = {"code": code, "name": "New", "password": PASSWORD, "password2": PASSWORD}
        assert (await newcomer.post("/console/join", data=form)).status_code == 303
    assert any(action == "user.joined" for _, action in trail.new())
    page = (await admin.client.get("/console/users")).text
    user_id = re.findall(r"/console/users/([0-9a-f-]{36})/role", page)
    target = [u for u in user_id if u != admin.user_id][0]
    await _post(
        trail, admin, f"/console/users/{target}/role", {"role": "finance"}, "user.role_changed"
    )
    await _post(trail, admin, f"/console/users/{target}/disable", {}, "user.disabled")
    form = {"auth_method": "client_secret_basic", "scope": ["party:call"]}
    r = await _post(
        trail,
        admin,
        "/console/clients",
        form,
        "oauth_client.registered",
        files={"jwks": ("", b"")},
    )
    client_id = re.search(r'id="new-client-id">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    await _post(trail, admin, f"/console/clients/{client_id}/revoke", {}, "oauth_client.revoked")
    # contracts: create, propose, both parties sign
    form = {"document": EXAMPLE.read_text(), "source": ""}
    r = await _post(trail, engineer, "/console/contracts", form, "contract.created")
    contract_id = r.headers["location"].rsplit("/", 1)[1]
    propose = f"/console/contracts/{contract_id}/propose"
    await _post(trail, engineer, propose, {}, "contract.proposed")
    page = (await engineer.client.get(f"/console/contracts/{contract_id}")).text
    digest = re.search(r'id="digest-1">([0-9a-f]{64})<', page).group(1)  # type: ignore[union-attr]
    for who, party in (("pcb-admin", "pcb"), ("paste-admin", "paste")):
        form = {"party": party, "decision": "accept", "digest": digest}
        sign = f"/console/contracts/{contract_id}/sign"
        await _post(trail, world.people[who], sign, form, "contract.accepted")
    # a model version approved by both approvers in the console
    pcb = world.people["pcb-admin"]
    form = {"auth_method": "client_secret_basic", "scope": ["jobs:run"]}
    r = await pcb.client.post(
        "/console/clients", data={"csrf_token": pcb.csrf, **form}, files={"jwks": ("", b"")}
    )
    pattern = r'id="new-client-id">([^<]+)<.*?id="new-client-secret">([^<]+)<'
    found = re.search(pattern, r.text, re.S)
    assert found is not None
    auth = bearer(await token_for(app, Registered(world.orgs["pcb"].id, *found.groups())))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://registry.test"
    ) as api:
        r = await api.post("/v1/jobs", json={"contract_id": contract_id}, headers=auth)
        job_id = r.json()["id"]
        await api.post(f"/v1/jobs/{job_id}/progress", json={"status": "finished"}, headers=auth)
        body = await model_version_body(api, auth, job_id)
        r = await api.post(f"/v1/jobs/{job_id}/model-versions", json=body, headers=auth)
        assert r.status_code == 201, r.text
    trail.new()
    for who, approver in (("pcb-admin", "pcb"), ("oem-admin", "oem")):
        approve = f"/console/contracts/{contract_id}/models/1/approve"
        form = {"approver": approver}
        await _post(trail, world.people[who], approve, form, "model_version.approved")
    # signing out
    await _post(trail, engineer, "/console/logout", {}, "user.signed_out")
