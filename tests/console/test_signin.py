"""People sign in with the authorization code grant and PKCE; sessions, CSRF and sign-out."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from services.registry.app import create_app
from services.registry.db import dispose
from services.registry.models import AuditEntry
from services.registry.models_people import ConsoleSession, User
from tests.console.util import (
    PASSWORD,
    add_user,
    approved_org,
    browser,
    csrf_of,
    hidden_fields,
    sign_in,
)
from tests.registry.conftest import ISSUER, registry_settings


async def test_login_page_and_redirect(client: httpx.AsyncClient) -> None:
    r = await client.get("/console/login")
    assert r.status_code == 200
    fields = hidden_fields(r.text)
    assert fields["code_challenge_method"] == "S256" and len(fields["csrf_token"]) >= 32
    assert '<input id="password" name="password" type="password"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    cookies = r.headers.get_list("set-cookie")
    assert all("HttpOnly" in c and "Secure" in c and "SameSite" in c for c in cookies)
    r = await client.get("/console/")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


async def test_sign_in_session_and_sign_out(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    org = await approved_org(client, admin_token, "lumen", "manufacturer")
    user_id = await add_user(client, admin_token, org, "ana@lumen.example", "engineer", "Ana")
    async with browser(app) as b:
        # a wrong password is a 400 with the form again, and no session
        r = await b.get("/console/login")
        form = hidden_fields(r.text) | {"email": "ana@lumen.example", "password": "wrong" * 4}
        r = await b.post("/oauth/authorize", data=form)
        assert r.status_code == 400 and "is wrong" in r.text
        csrf = await sign_in(b, "ana@lumen.example")
        cookie = b.cookies.get("__Host-splice_session")
        assert cookie is not None
        r = await b.get("/console/")
        assert "Ana" in r.text and "engineer" in r.text
        # a post without the CSRF token is refused and changes nothing
        r = await b.post("/console/logout")
        assert r.status_code == 403
        assert (await b.get("/console/")).status_code == 200
        r = await b.post("/console/logout", data={"csrf_token": csrf})
        assert r.status_code == 303
    # the old cookie no longer opens anything: the session was revoked server-side
    async with browser(app) as stale:
        stale.cookies.set("__Host-splice_session", cookie, domain="registry.test")
        r = await stale.get("/console/")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
    with app.state.sessions() as session:
        rows = session.query(ConsoleSession).filter_by(user_id=user_id).all()
        assert len(rows) == 1 and rows[0].revoked_at is not None
        actions = [e.action for e in session.query(AuditEntry).order_by(AuditEntry.seq)]
        assert "user.signed_in" in actions and actions[-1] == "user.signed_out"


async def test_pkce_is_required_and_checked(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    org = await approved_org(client, admin_token, "solvia", "supplier")
    await add_user(client, admin_token, org, "sam@solvia.example", "viewer")
    async with browser(app) as b:
        r = await b.get("/console/login")
        fields = hidden_fields(r.text)
        # no challenge, or a plain one: refused before any password is looked at
        for change in ({"code_challenge": ""}, {"code_challenge_method": "plain"}):
            form = fields | change | {"email": "sam@solvia.example", "password": PASSWORD}
            r = await b.post("/oauth/authorize", data=form)
            assert r.status_code == 400, r.text
        # a code redeemed with the wrong verifier is refused at the token endpoint
        verifier = "v" * 64
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        form = fields | {
            "code_challenge": challenge.rstrip(b"=").decode(),
            "email": "sam@solvia.example",
            "password": PASSWORD,
        }
        r = await b.post("/oauth/authorize", data=form)
        code = httpx.URL(r.headers["location"]).params["code"]
        token_form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{ISSUER}/console/callback",
            "client_id": "splice-console",
            "code_verifier": "w" * 64,
        }
        r = await b.post("/oauth/token", data=token_form)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        # the right verifier gets a user token for the console, which the API refuses
        r = await b.post("/oauth/token", data=token_form | {"code_verifier": verifier})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        r = await b.post("/oauth/token", data=token_form | {"code_verifier": verifier})
        assert r.status_code == 400  # a code is spent once
        r = await b.get(f"/v1/organisations/{org.id}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401


async def test_totp(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> None:
    org = await approved_org(client, admin_token, "nordwerk", "oem")
    user_id = await add_user(client, admin_token, org, "ola@nordwerk.example", "admin")
    async with browser(app) as b:
        csrf = await sign_in(b, "ola@nordwerk.example")
        r = await b.get("/console/account")
        seed = r.text.split('id="totp-seed">')[1].split("<")[0]
        r = await b.post(
            "/console/account/totp", data={"csrf_token": csrf, "seed": seed, "totp": "000000"}
        )
        assert r.status_code == 422
        r = await b.post(
            "/console/account/totp",
            data={"csrf_token": csrf, "seed": seed, "totp": pyotp.TOTP(seed).now()},
        )
        assert r.status_code == 200 and "Two-factor sign-in is on" in r.text
    with app.state.sessions() as session:
        assert session.get_one(User, user_id).totp_secret.startswith("fernet:")
    async with browser(app) as b:
        r = await b.get("/console/login")
        form = hidden_fields(r.text) | {"email": "ola@nordwerk.example", "password": PASSWORD}
        assert (await b.post("/oauth/authorize", data=form)).status_code == 400
        await sign_in(b, "ola@nordwerk.example", totp=pyotp.TOTP(seed).at(time.time()))
        assert csrf_of((await b.get("/console/account")).text)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PG's counters: test_rate_limits
async def test_sign_in_attempts_are_limited_per_email(migrated_url: str) -> None:
    limited = create_app(
        registry_settings(migrated_url, rate_limits=True, sign_in_attempts_per_minute=2)
    )
    try:
        async with browser(limited) as b:
            r = await b.get("/console/login")
            form = hidden_fields(r.text) | {"email": "who@example.com", "password": "x" * 12}
            codes = [(await b.post("/oauth/authorize", data=form)).status_code for _ in range(3)]
            assert codes == [400, 400, 429]
            # another address is not held back by that one
            other = form | {"email": "someone-else@example.com"}
            assert (await b.post("/oauth/authorize", data=other)).status_code == 400
    finally:
        dispose(limited.state.engine)
