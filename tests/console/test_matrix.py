"""The console's authorization matrix: every console route, every role.

No page or action without its role (the scopes the API enforces), no state-changing request
without the session's CSRF token, and another organisation's objects answer 404. A new console
route fails :func:`test_every_console_route_is_in_the_matrix` until it is added here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from services.registry import migrate
from services.registry.app import create_app
from services.registry.db import dispose
from services.registry.models import AuditEntry
from services.registry.store.admins import bootstrap_admin
from tests.console.world import World, build, email, propose_example
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.oauth_util import Registered, token_for
from tests.registry.util import bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")
ROLES = ("oem-admin", "oem-engineer", "oem-finance", "oem-viewer")
ALL = frozenset(ROLES)
WRITERS = frozenset({"oem-admin", "oem-engineer"})  # contracts:write
READERS = frozenset({"oem-admin", "oem-finance"})  # reports:read
ADMINS = frozenset({"oem-admin"})  # org:admin, contracts:sign
PUBLIC = "public"


@dataclass(frozen=True)
class Case:
    """One console route: who may use it and a request that changes nothing when allowed."""

    allowed: frozenset[str] | str
    path: str
    data: dict[str, Any] | None = None
    files: bool = False
    ok: int = 200


MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/console/login"): Case(PUBLIC, "/console/login"),
    ("GET", "/oauth/authorize"): Case(PUBLIC, "/oauth/authorize"),
    ("POST", "/oauth/authorize"): Case(PUBLIC, "/oauth/authorize"),
    ("GET", "/console/callback"): Case(PUBLIC, "/console/callback"),
    ("GET", "/console/join"): Case(PUBLIC, "/console/join"),
    ("POST", "/console/join"): Case(PUBLIC, "/console/join"),
    ("GET", "/console/register"): Case(PUBLIC, "/console/register"),
    ("POST", "/console/register"): Case(PUBLIC, "/console/register"),
    ("GET", "/console"): Case(PUBLIC, "/console"),
    ("POST", "/console/logout"): Case(ALL, "/console/logout", {}, ok=303),  # run last
    ("GET", "/console/"): Case(ALL, "/console/"),
    ("GET", "/console/account"): Case(ALL, "/console/account"),
    ("POST", "/console/account/totp"): Case(
        ALL, "/console/account/totp", {"seed": "A" * 32, "totp": "000000"}, ok=422
    ),
    ("GET", "/console/contracts"): Case(ALL, "/console/contracts"),
    ("GET", "/console/contracts/new"): Case(WRITERS, "/console/contracts/new"),
    ("POST", "/console/contracts/validate"): Case(
        ALL, "/console/contracts/validate", {"document": "{"}
    ),
    ("POST", "/console/contracts"): Case(WRITERS, "/console/contracts", {"document": "{"}, ok=422),
    ("GET", "/console/contracts/{contract_id}"): Case(ALL, "/console/contracts/{C}"),
    ("GET", "/console/contracts/{contract_id}/edit"): Case(WRITERS, "/console/contracts/{C}/edit"),
    ("POST", "/console/contracts/{contract_id}/diff"): Case(
        ALL, "/console/contracts/{C}/diff", {"document": "title: changed"}
    ),
    ("POST", "/console/contracts/{contract_id}/propose"): Case(
        WRITERS, "/console/contracts/{C}/propose", {}, ok=409
    ),
    # contracts:sign (the admin) gets past the role check; the store then refuses, as the API
    # would: no proposal is open (409). Signing for another organisation's party: test_pages.
    ("POST", "/console/contracts/{contract_id}/sign"): Case(
        ADMINS,
        "/console/contracts/{C}/sign",
        {"party": "pcb", "decision": "accept", "digest": "0" * 64},
        ok=409,
    ),
    ("POST", "/console/contracts/{contract_id}/models/{version}/approve"): Case(
        ADMINS, "/console/contracts/{C}/models/99/approve", {"approver": "oem"}, ok=404
    ),
    ("POST", "/console/contracts/{contract_id}/rollback"): Case(
        ADMINS, "/console/contracts/{C}/rollback", {}, ok=409
    ),
    ("GET", "/console/jobs"): Case(ALL, "/console/jobs"),
    ("GET", "/console/jobs/{job_id}"): Case(ALL, "/console/jobs/{J}"),
    ("GET", "/console/jobs/{job_id}/progress"): Case(ALL, "/console/jobs/{J}/progress"),
    ("GET", "/console/models"): Case(ALL, "/console/models"),
    ("GET", "/console/finance"): Case(READERS, "/console/finance"),
    ("GET", "/console/finance/revenue"): Case(READERS, "/console/finance/revenue?format=xlsx"),
    ("GET", "/console/users"): Case(ADMINS, "/console/users"),
    ("POST", "/console/users/invite"): Case(
        ADMINS, "/console/users/invite", {"email": "x", "role": "viewer"}, ok=422
    ),
    ("POST", "/console/users/{user_id}/role"): Case(
        ADMINS, "/console/users/{U}/role", {"role": "owner"}, ok=422
    ),
    ("POST", "/console/users/{user_id}/disable"): Case(
        ADMINS, "/console/users/{X}/disable", {}, ok=404
    ),
    ("GET", "/console/clients"): Case(ADMINS, "/console/clients"),
    ("POST", "/console/clients"): Case(
        ADMINS, "/console/clients", {"auth_method": "client_secret_basic"}, files=True, ok=422
    ),
    ("POST", "/console/clients/{client_id}/revoke"): Case(
        ADMINS, "/console/clients/{K}/revoke", {}, ok=404
    ),
    ("GET", "/console/audit"): Case(ADMINS, "/console/audit"),
    # reports:read and the operator's audit:verify grant (given to the OEM below)
    ("POST", "/console/audit/verify"): Case(READERS, "/console/audit/verify", {}),
}


@dataclass
class Ids:
    """The objects the matrix requests name."""

    values: dict[str, str]

    def path(self, template: str) -> str:
        return re.sub(r"\{([A-Z])\}", lambda m: self.values[m.group(1)], template)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """One registry (SQLite) for the module: its tests share one world."""
    url = f"sqlite:///{tmp_path_factory.mktemp('console-matrix') / 'registry.db'}"
    migrate.upgrade(url)
    application = create_app(registry_settings(url))
    yield application
    dispose(application.state.engine)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(app: FastAPI) -> AsyncIterator[tuple[World, Ids]]:
    with app.state.sessions() as session:
        admin_token = bootstrap_admin(session).token
        session.commit()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    w = await build(app, client, admin_token)
    contract_id = await propose_example(w)
    for who, party in (("pcb-admin", "pcb"), ("paste-admin", "paste")):
        s = w.people[who]
        page = (await s.client.get(f"/console/contracts/{contract_id}")).text
        digest = re.search(r'id="digest-1">([0-9a-f]{64})<', page).group(1)  # type: ignore[union-attr]
        form = {"csrf_token": s.csrf, "party": party, "decision": "accept", "digest": digest}
        r = await s.client.post(f"/console/contracts/{contract_id}/sign", data=form)
        assert r.status_code == 303
    pcb = w.people["pcb-admin"]
    r = await pcb.client.post(
        "/console/clients",
        data={"csrf_token": pcb.csrf, "auth_method": "client_secret_basic", "scope": "jobs:run"},
        files={"jwks": ("", b"")},
    )
    client_id = re.search(r'id="new-client-id">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="new-client-secret">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    auth = bearer(await token_for(app, Registered(w.orgs["pcb"].id, client_id, secret)))
    r = await client.post("/v1/jobs", json={"contract_id": contract_id}, headers=auth)
    grant = f"/v1/organisations/{w.orgs['oem'].id}/grants/audit:verify"
    assert (await client.put(grant, headers=bearer(admin_token))).status_code == 200
    ids = Ids(
        {
            "C": contract_id,
            "J": r.json()["id"],
            "U": w.people["oem-viewer"].user_id,
            "X": w.people["outsider-admin"].user_id,
            "K": client_id,  # the PCB maker's client
        }
    )
    yield w, ids
    await w.aclose()
    await client.aclose()


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every API route of the app, those of included routers too (which FastAPI keeps
    behind a lazily matched wrapper holding ``original_router``)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += _api_routes(route.original_router.routes)
    return found


@pytest.mark.asyncio(loop_scope="module")
async def test_every_console_route_is_in_the_matrix(app: FastAPI) -> None:
    routes = {
        (method, route.path)
        for route in _api_routes(app.routes)
        if route.path.startswith("/console") or route.path == "/oauth/authorize"
        for method in route.methods
    }
    assert len(routes) > 30 and routes == set(MATRIX)


def _audit_size(app: FastAPI) -> int:
    with app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


async def _send(s: Any, method: str, case: Case, ids: Ids, *, csrf: bool = True) -> httpx.Response:
    path = ids.path(case.path)
    if method == "GET":
        return await s.client.get(path)  # type: ignore[no-any-return]
    data = dict(case.data or {})
    if csrf:
        data["csrf_token"] = s.csrf
    files = {"jwks": ("", b"")} if case.files else None
    return await s.client.post(path, data=data, files=files)  # type: ignore[no-any-return]


async def test_posts_without_csrf_are_refused(app: FastAPI, world: tuple[World, Ids]) -> None:
    w, ids = world
    admin = w.people["oem-admin"]
    before = _audit_size(app)
    for (method, _), case in MATRIX.items():
        if method == "POST" and case.allowed != PUBLIC:
            r = await _send(admin, method, case, ids, csrf=False)
            assert r.status_code == 403 and "CSRF" in r.text, case.path
            r = await admin.client.post(
                ids.path(case.path), data={"csrf_token": "x" * 43}, files=None
            )
            assert r.status_code == 403, case.path
    assert _audit_size(app) == before
    assert (await admin.client.get("/console/")).status_code == 200  # still signed in


async def test_other_organisations_objects_are_not_found(world: tuple[World, Ids]) -> None:
    w, ids = world
    outsider = w.people["outsider-admin"]
    for path in (
        "/console/contracts/{C}",
        "/console/contracts/{C}/edit",
        "/console/contracts/new?from=contract:{C}",
        "/console/jobs/{J}",
        "/console/jobs/{J}/progress",
        "/console/models?contract={C}",
        "/console/jobs?contract={C}",
    ):
        r = await outsider.client.get(ids.path(path))
        assert r.status_code == 404, path
    for path, data in (
        ("/console/contracts/{C}/propose", {}),
        ("/console/contracts/{C}/diff", {"document": "title: x"}),
        ("/console/contracts/{C}/sign", {"party": "pcb", "decision": "accept", "digest": "0" * 64}),
        ("/console/contracts/{C}/models/1/approve", {"approver": "pcb"}),
        ("/console/contracts/{C}/rollback", {}),
        ("/console/users/{U}/role", {"role": "admin"}),
        ("/console/users/{U}/disable", {}),
        ("/console/clients/{K}/revoke", {}),
    ):
        r = await outsider.client.post(ids.path(path), data={"csrf_token": outsider.csrf, **data})
        assert r.status_code == 404, path
    # and nothing of the OEM's shows in the outsider's lists
    for path in ("/console/contracts", "/console/jobs", "/console/models", "/console/users"):
        text = (await outsider.client.get(path)).text
        assert ids.values["C"] not in text and email("oem-viewer") not in text


async def test_roles(world: tuple[World, Ids]) -> None:
    """Last in the module: each person signs out at the end."""
    w, ids = world
    checked = 0
    for who in ROLES:
        s = w.people[who]
        last = [("POST", "/console/logout")]
        order = [k for k in MATRIX if k not in last] + last
        for method, template in order:
            case = MATRIX[(method, template)]
            if case.allowed == PUBLIC:
                continue
            r = await _send(s, method, case, ids)
            if who in case.allowed:
                assert r.status_code == case.ok, (who, method, template, r.status_code)
            else:
                assert r.status_code == 403, (who, method, template, r.status_code)
                assert 'id="error-code">forbidden<' in r.text
            checked += 1
    assert checked == 4 * sum(1 for c in MATRIX.values() if c.allowed != PUBLIC)
