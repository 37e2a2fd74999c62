"""People and sign-in for console tests, through the real endpoints."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

from tests.registry.conftest import ISSUER

PASSWORD = "correct horse battery staple"
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
_CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')


@dataclass
class Org:
    """An approved organisation."""

    id: str
    name: str


async def approved_org(client: httpx.AsyncClient, admin: str, name: str, kind: str) -> Org:
    """An organisation applied for with an invitation and approved by the operator."""
    auth = {"Authorization": f"Bearer {admin}"}
    r = await client.post("/v1/invitations", json={"note": name}, headers=auth)
    code = r.json()["code"]
    r = await client.post(
        "/v1/organisations/applications",
        json={
            "name": name,
            "kind": kind,
            "contact_email": f"ops@{name}.example",
            "invitation_code": code,
        },
    )
    org_id = r.json()["id"]
    r = await client.post(f"/v1/organisations/{org_id}/approve", headers=auth)
    assert r.status_code == 200, r.text
    return Org(org_id, name)


async def add_user(
    client: httpx.AsyncClient, admin: str, org: Org, email: str, role: str, name: str = "Kim"
) -> str:
    """A user of ``org`` with ``role`` (invited by the operator, accepted); its id."""
    r = await client.post(
        f"/v1/organisations/{org.id}/user-invitations",
        json={"email": email, "role": role},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/user-invitations/accept",
        json={"code": r.json()["code"], "name": name, "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def hidden_fields(text: str) -> dict[str, str]:
    """The hidden inputs of a page."""
    return {k: html.unescape(v) for k, v in _HIDDEN.findall(text)}


def csrf_of(text: str) -> str:
    """The session's CSRF token on a console page."""
    found = _CSRF.search(text)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def browser(app: object) -> httpx.AsyncClient:
    """A fresh client with its own cookie jar (one browser)."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url=ISSUER)


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, totp: str | None = None
) -> str:
    """Sign in through the authorization code flow; the session's CSRF token."""
    r = await client.get("/console/login")
    assert r.status_code == 200
    form = hidden_fields(r.text) | {"email": email, "password": password}
    if totp is not None:
        form["totp"] = totp
    r = await client.post("/oauth/authorize", data=form)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(f"{ISSUER}/console/callback?code=")
    r = await client.get(r.headers["location"])
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    r = await client.get("/console/")
    assert r.status_code == 200, r.text
    return csrf_of(r.text)
