"""The onboarding flow over HTTP: invite, apply, approve, register, rotate, revoke, suspend."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from services.registry.credentials import SecretHasher
from services.registry.models import Invitation, utcnow
from services.registry.store import clients
from tests.registry.oauth_util import Registered, token_for
from tests.registry.util import apply, bearer, ec_jwk, invite, onboard, register, rsa_jwk


def _authenticates(app: FastAPI, client_id: str, secret: str) -> bool:
    with app.state.sessions() as session:
        found = clients.authenticate_client_secret(session, app.state.hasher, client_id, secret)
        return found is not None


async def test_onboarding_flow(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> None:
    admin = bearer(admin_token)
    code = await invite(client, admin_token, note="paste supplier")
    r = await apply(client, code, "Paste Works", "supplier")
    assert r.status_code == 201, r.text
    org = r.json()
    assert org["status"] == "pending" and org["kind"] == "supplier"

    r = await client.get("/v1/organisations", params={"status": "pending"}, headers=admin)
    assert [o["name"] for o in r.json()] == ["Paste Works"]

    r = await client.post(f"/v1/organisations/{org['id']}/approve", headers=admin)
    assert r.status_code == 200, r.text
    approval = r.json()
    assert approval["organisation"]["status"] == "approved"
    first_token = approval["initial_access_token"]
    assert first_token.startswith("spl_iat_")

    # client_secret_basic: the secret is shown once and proves the client. The approval's
    # token is an admin token: its client may hold org:admin (the organisation's admin).
    r = await register(
        client, first_token, scope="jobs:run contracts:sign org:admin", client_name="trainer"
    )
    assert r.status_code == 201, r.text
    basic = r.json()
    assert basic["token_endpoint_auth_method"] == "client_secret_basic"
    assert basic["client_secret_expires_at"] == 0
    assert basic["scope"] == "contracts:sign jobs:run org:admin"
    assert basic["org_id"] == org["id"]
    assert _authenticates(app, basic["client_id"], basic["client_secret"])
    assert not _authenticates(app, basic["client_id"], basic["client_secret"] + "x")

    # The initial access token is one-time.
    r = await register(client, first_token)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"

    # private_key_jwt with a second token: no secret, the key set is kept.
    r = await client.post(f"/v1/organisations/{org['id']}/initial-access-tokens", headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["admin"] is False
    second_token = r.json()["initial_access_token"]
    keys = {"keys": [rsa_jwk("k1"), ec_jwk("k2")]}
    r = await register(
        client, second_token, token_endpoint_auth_method="private_key_jwt", jwks=keys
    )
    assert r.status_code == 201, r.text
    pkjwt = r.json()
    assert "client_secret" not in pkjwt
    assert [k["kid"] for k in pkjwt["jwks"]["keys"]] == ["k1", "k2"]

    # Rotation, by the organisation's admin (operators never get a secret): the old secret
    # stops working at once; a key set is replaced.
    trainer = Registered(org["id"], basic["client_id"], basic["client_secret"])
    manager = bearer(await token_for(app, trainer, scope="org:admin"))
    r = await client.post(f"/v1/oauth/clients/{basic['client_id']}/rotate", headers=admin)
    assert r.status_code == 403 and "client_secret" not in r.text
    r = await client.post(f"/v1/oauth/clients/{basic['client_id']}/rotate", headers=manager)
    assert r.status_code == 200, r.text
    new_secret = r.json()["client_secret"]
    assert r.json()["client"]["credentials_rotated_at"] is not None
    assert not _authenticates(app, basic["client_id"], basic["client_secret"])
    assert _authenticates(app, basic["client_id"], new_secret)
    r = await client.post(
        f"/v1/oauth/clients/{pkjwt['client_id']}/rotate",
        json={"jwks": {"keys": [ec_jwk("k3")]}},
        headers=manager,
    )
    assert r.status_code == 200, r.text
    assert [k["kid"] for k in r.json()["client"]["jwks"]["keys"]] == ["k3"]
    assert r.json()["client_secret"] is None

    # Revocation (here by the operator) is final and idempotent.
    for _ in range(2):
        r = await client.post(f"/v1/oauth/clients/{pkjwt['client_id']}/revoke", headers=admin)
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = await client.post(
        f"/v1/oauth/clients/{pkjwt['client_id']}/rotate",
        json={"jwks": {"keys": [ec_jwk("k4")]}},
        headers=manager,
    )
    assert r.status_code == 403 and r.json()["code"] == "invalid_transition"

    # Suspension: no new tokens, no registration, no authentication; reinstating restores.
    r = await client.post(f"/v1/organisations/{org['id']}/initial-access-tokens", headers=admin)
    pending_token = r.json()["initial_access_token"]
    r = await client.post(
        f"/v1/organisations/{org['id']}/suspend", json={"reason": "audit"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    r = await register(client, pending_token)
    assert r.status_code == 403
    r = await client.post(f"/v1/organisations/{org['id']}/initial-access-tokens", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await client.post(f"/v1/organisations/{org['id']}/reinstate", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = await register(client, pending_token)  # refused while suspended, so still unspent
    assert r.status_code == 201, r.text

    r = await client.get(f"/v1/organisations/{org['id']}/clients", headers=admin)
    assert len(r.json()) == 3

    r = await client.get("/v1/audit", headers=admin)
    actions = [e["action"] for e in r.json()]
    assert actions == [
        "admin.bootstrapped",
        "invitation.created",
        "organisation.applied",
        "organisation.approved",
        "initial_access_token.issued",
        "oauth_client.registered",
        "initial_access_token.issued",
        "oauth_client.registered",
        "signing_keys.created",  # the admin's first access token
        "oauth_client.rotated",
        "oauth_client.rotated",
        "oauth_client.revoked",
        "initial_access_token.issued",
        "organisation.suspended",
        "organisation.reinstated",
        "oauth_client.registered",
    ]
    r = await client.get("/v1/audit/verify", headers=admin)
    assert r.json()["ok"] is True and r.json()["entries"] == len(actions)


async def test_secrets_are_hashed_outside_any_transaction(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    # argon2 takes ~100 ms by design; inside a transaction it held SQLite's write lock that
    # long and, under a few concurrent token requests, other requests failed "database is locked".
    _, initial = await onboard(client, admin_token, "Hash Works")
    basic = (await register(client, initial)).json()
    in_transaction: list[bool] = []
    with app.state.sessions() as session:

        class Watching(SecretHasher):
            def verify(self, stored: str, secret: str) -> bool:
                in_transaction.append(session.in_transaction())
                return super().verify(stored, secret)

        hasher = Watching(time_cost=1, memory_kib=1024, parallelism=1)
        found = clients.authenticate_client_secret(
            session, hasher, basic["client_id"], basic["client_secret"]
        )
        unknown = clients.authenticate_client_secret(session, hasher, "no-such-client", "x")
    assert found is not None and found.client_id == basic["client_id"] and unknown is None
    assert in_transaction == [False, False]


async def test_invitation_codes_are_one_time_and_expire(
    client: httpx.AsyncClient, admin_token: str, app: FastAPI
) -> None:
    code = await invite(client, admin_token)
    assert (await apply(client, code, "First")).status_code == 201
    r = await apply(client, code, "Second")
    assert r.status_code == 403 and r.json()["code"] == "invalid_invitation"

    late = await invite(client, admin_token)
    with app.state.sessions() as session:
        session.execute(
            update(Invitation)
            .where(Invitation.used_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    r = await apply(client, late, "Late")
    assert r.status_code == 403 and r.json()["code"] == "invalid_invitation"
    r = await apply(client, "spl_inv_made-up", "Guess")
    assert r.status_code == 403 and r.json()["code"] == "invalid_invitation"


async def test_a_taken_name_does_not_spend_the_invitation(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    await onboard(client, admin_token, "Acme Boards", "manufacturer")
    code = await invite(client, admin_token)
    r = await apply(client, code, "ACME boards")
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = await apply(client, code, "Acme Optics")
    assert r.status_code == 201, r.text


async def test_state_transitions_are_checked(client: httpx.AsyncClient, admin_token: str) -> None:
    admin = bearer(admin_token)
    org_id, _ = await onboard(client, admin_token, "Lender", "finance")
    r = await client.post(f"/v1/organisations/{org_id}/approve", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert r.json()["detail"] == {"status": "approved", "required": "pending"}
    r = await client.post(f"/v1/organisations/{org_id}/reinstate", headers=admin)
    assert r.status_code == 409
    r = await client.post("/v1/organisations/not-an-org/approve", headers=admin)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_admin_endpoints_need_the_admin_token(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    org_id, initial_token = await onboard(client, admin_token, "Stencil Co")
    calls = [
        ("POST", "/v1/invitations", {"note": "x"}),
        ("GET", "/v1/organisations", None),
        ("POST", f"/v1/organisations/{org_id}/approve", None),
        ("POST", f"/v1/organisations/{org_id}/suspend", {"reason": "x"}),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/audit/verify", None),
    ]
    for method, path, body in calls:
        for headers in (
            {},
            bearer("spl_adm_wrong"),
            bearer(initial_token),
            bearer(admin_token[:-1]),
        ):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert set(r.json()) == {"code", "message", "detail"}
    # ...and the admin token is no initial access token.
    r = await register(client, admin_token)
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await client.get(f"/v1/organisations/{org_id}", headers=bearer(admin_token))
    assert r.json()["status"] == "approved"
