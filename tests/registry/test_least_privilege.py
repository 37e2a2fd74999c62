"""Least privilege inside and across organisations, as a penetration tester tried it (issue 14).

Finding 1 (high): a token of a client registered with only ``predict:call`` could rotate another
client of its organisation and receive the new secret (then get a token with every scope), or
revoke the client a party service runs on: the client-management routes checked organisation
membership only. Client management now needs scope ``org:admin``, which only an initial access
token marked ``admin`` can register (the one issued at approval: the organisation's first admin)
and which no token carries unless asked for by name. A client may still read, rotate and revoke
itself: a secret goes back only to the client it proves or to the organisation's admin.

Finding 5: an approved finance-kind organisation saw every contract's revenue; now it sees the
contracts its organisation is party to, plus everything only with the operator's grant
``reports:all-contracts``. ``/v1/audit/verify`` told any client the registry's activity volume;
now operators and organisations granted ``audit:verify`` only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.registry.oauth.scopes import ORG_ADMIN
from services.registry.store.grants import AUDIT_VERIFY, REPORTS_ALL
from tests.registry.contract_util import OWNER, onboard_example_orgs
from tests.registry.oauth_util import OAuthError, Registered, token_for
from tests.registry.usage_util import metered, store_events
from tests.registry.util import bearer, onboard, register


async def _initial(
    client: httpx.AsyncClient, auth: dict[str, str], org_id: str, **body: Any
) -> str:
    r = await client.post(
        f"/v1/organisations/{org_id}/initial-access-tokens", json=body or None, headers=auth
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["initial_access_token"]
    return token


async def _client(client: httpx.AsyncClient, initial: str, org_id: str, scope: str) -> Registered:
    r = await register(client, initial, scope=scope)
    assert r.status_code == 201, r.text
    return Registered(
        org_id=org_id, client_id=r.json()["client_id"], secret=r.json()["client_secret"]
    )


async def _org(
    client: httpx.AsyncClient, admin_token: str, name: str
) -> tuple[Registered, Registered, Registered]:
    """An organisation's admin client (the approval's token), a party client and a client for
    predictions only (operator-issued tokens, no admin)."""
    org_id, first = await onboard(client, admin_token, name)
    admin = await _client(client, first, org_id, f"{ORG_ADMIN} reports:read")
    operator = bearer(admin_token)
    party = await _client(
        client, await _initial(client, operator, org_id), org_id, "party:call usage:write"
    )
    predictor = await _client(
        client, await _initial(client, operator, org_id), org_id, "predict:call"
    )
    return admin, party, predictor


async def test_a_predict_only_client_cannot_manage_its_organisations_clients(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    admin, party, predictor = await _org(client, admin_token, "Lumen PCB")
    attacker = bearer(await token_for(app, predictor))
    for method, url in (
        ("POST", f"/v1/oauth/clients/{party.client_id}/rotate"),
        ("POST", f"/v1/oauth/clients/{party.client_id}/revoke"),
        ("GET", f"/v1/oauth/clients/{party.client_id}"),
        ("GET", f"/v1/organisations/{party.org_id}/clients"),
        ("POST", f"/v1/organisations/{party.org_id}/initial-access-tokens"),
    ):
        r = await client.request(method, url, headers=attacker)
        assert r.status_code == 403, (url, r.text)
        assert r.json()["code"] == "forbidden" and "client_secret" not in r.text
    # the party's client still works, with its old secret
    assert await token_for(app, party, scope="party:call")
    # nor can it register an admin client of its own: operator-issued tokens carry no admin
    spare = await _initial(client, bearer(admin_token), party.org_id)
    r = await register(client, spare, scope=f"{ORG_ADMIN} predict:call")
    assert r.status_code == 403 and ORG_ADMIN in r.json()["message"], r.text


async def test_the_org_admin_manages_clients_and_secrets_go_only_to_who_may_hold_them(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    admin, party, predictor = await _org(client, admin_token, "Solvia Paste")
    # a default token carries no org:admin: it must be asked for by name
    default = await token_for(app, admin)
    r = await client.post(f"/v1/oauth/clients/{party.client_id}/rotate", headers=bearer(default))
    assert r.status_code == 403, r.text
    manager = bearer(await token_for(app, admin, scope=ORG_ADMIN))
    r = await client.get(f"/v1/organisations/{party.org_id}/clients", headers=manager)
    assert r.status_code == 200 and len(r.json()) == 3
    r = await client.post(f"/v1/oauth/clients/{party.client_id}/rotate", headers=manager)
    assert r.status_code == 200, r.text
    new_secret = r.json()["client_secret"]
    with pytest.raises(OAuthError):
        await token_for(app, party)
    party = Registered(party.org_id, party.client_id, new_secret)
    assert await token_for(app, party)
    # a client rotates itself: the secret goes back to the client it proves
    own = bearer(await token_for(app, predictor))
    r = await client.post(f"/v1/oauth/clients/{predictor.client_id}/rotate", headers=own)
    assert r.status_code == 200 and r.json()["client_secret"].startswith("spl_cs_"), r.text
    # operators revoke, but never receive an organisation's secret
    operator = bearer(admin_token)
    r = await client.post(f"/v1/oauth/clients/{party.client_id}/rotate", headers=operator)
    assert r.status_code == 403 and "client_secret" not in r.text, r.text
    # the org admin issues initial access tokens for its own organisation, admin ones included
    second_admin = await _initial(client, manager, party.org_id, admin=True)
    r = await register(client, second_admin, scope=ORG_ADMIN)
    assert r.status_code == 201, r.text
    # ... but manages no other organisation's clients
    other, other_party, _ = await _org(client, admin_token, "Nordwerk")
    r = await client.post(f"/v1/oauth/clients/{other_party.client_id}/revoke", headers=manager)
    assert r.status_code == 403
    r = await client.post(
        f"/v1/organisations/{other.org_id}/initial-access-tokens", headers=manager
    )
    assert r.status_code == 403
    # the admin revokes the party client; the operator may revoke too (incident response)
    r = await client.post(f"/v1/oauth/clients/{party.client_id}/revoke", headers=manager)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = await client.post(f"/v1/oauth/clients/{other_party.client_id}/revoke", headers=operator)
    assert r.status_code == 200


async def _revenue(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get(
        "/v1/reports/revenue", params={"period": "2026-11", "format": "json"}, headers=auth
    )
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def test_finance_sees_its_contracts_and_everything_only_with_the_operators_grant(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    w = await metered(app, client, admin_token, finance_grant=False)
    store_events(app, [(w.contract_id, 1, 1, 20, datetime(2026, 11, 3, tzinfo=UTC))])
    finance = await w.finance_auth()
    # kind finance alone is no licence to read other organisations' contracts
    assert await _revenue(client, finance) == []
    assert len(await _revenue(client, w.orgs.auth(OWNER))) == 4  # its contract's rows, a total
    operator = bearer(admin_token)
    url = f"/v1/organisations/{w.finance.org_id}/grants/{REPORTS_ALL}"
    r = await client.put(url, headers=w.orgs.auth(OWNER))
    assert r.status_code == 403  # an organisation cannot grant itself (or anyone) the role
    r = await client.put(url, headers=operator)
    assert r.status_code == 200 and r.json()["grants"] == [REPORTS_ALL], r.text
    assert len(await _revenue(client, finance)) == 4
    r = await client.delete(url, headers=operator)
    assert r.status_code == 200 and r.json()["grants"] == []
    assert await _revenue(client, finance) == []
    r = await client.put(
        f"/v1/organisations/{w.finance.org_id}/grants/everything", headers=operator
    )
    assert r.status_code == 422
    r = await client.get("/v1/audit", headers=operator)
    actions = [e["action"] for e in r.json()]
    assert "organisation.granted" in actions and "organisation.grant_revoked" in actions


async def test_audit_verification_does_not_tell_outsiders_the_registrys_volume(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    orgs = await onboard_example_orgs(app, client, admin_token)
    outsider = orgs.auth("outsider-gmbh")  # holds reports:read
    r = await client.get("/v1/audit/verify", headers=outsider)
    assert r.status_code == 403 and "entries" not in r.text, r.text
    operator = bearer(admin_token)
    r = await client.get("/v1/audit/verify", headers=operator)
    assert r.status_code == 200 and r.json()["ok"] and r.json()["entries"] > 10
    grant = f"/v1/organisations/{orgs[OWNER]}/grants/{AUDIT_VERIFY}"
    assert (await client.put(grant, headers=operator)).status_code == 200
    r = await client.get("/v1/audit/verify", headers=orgs.auth(OWNER))
    assert r.status_code == 200 and r.json()["ok"], r.text
