"""The registry's revocation feed (``GET /v1/revocations``), in process, on both backends: each
change a party must honour appears once, in commit order, to the parties it concerns; a long
poll answers as soon as a change is committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import FastAPI

from tests.registry.contract_util import OWNER, PASTE, PCB, onboard_example_orgs
from tests.registry.oauth_util import REVOKE_URL, oauth_client, token_for
from tests.registry.util import bearer
from tests.registry.world import active_contract

URL = "/v1/revocations"


async def _changes(
    client: httpx.AsyncClient, auth: dict[str, str], after: int, wait: float = 0
) -> dict[str, Any]:
    r = await client.get(URL, params={"after": after, "wait": wait}, headers=auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_changes_reach_the_parties_they_concern_once_and_in_order(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs)
    paste = orgs.auth(PASTE)
    outsider = orgs.auth("outsider-gmbh")
    r = await client.get(URL, headers=paste)
    assert r.status_code == 200 and r.json()["events"] == []
    start = r.json()["last"]

    # a token of the OEM (a member of the paste supplier's contract), revoked
    token = await token_for(app, orgs.clients[OWNER], scope="predict:call")
    async with oauth_client(app, orgs.clients[OWNER]) as session:
        assert (await session.revoke_token(REVOKE_URL, token=token)).status_code == 200
    # the contract suspended; the outsider's own client revoked by the operator
    owner = orgs.auth(OWNER)
    r = await client.post(f"/v1/contracts/{cid}/suspend", json={"reason": "t"}, headers=owner)
    assert r.status_code == 200
    revoked = orgs.clients["outsider-gmbh"].client_id
    r = await client.post(f"/v1/oauth/clients/{revoked}/revoke", headers=bearer(admin_token))
    assert r.status_code == 200

    seen = await _changes(client, paste, start)
    kinds = [(e["kind"], e["action"]) for e in seen["events"]]
    assert kinds == [
        ("token_revoked", "access_token.revoked"),
        ("contract_changed", "contract.suspended"),
    ]
    first = seen["events"][0]
    assert first["org_id"] == orgs[OWNER] and first["client_id"] == orgs.clients[OWNER].client_id
    assert first["jti"] and seen["events"][1]["contract_id"] == cid
    assert seen["events"][0]["seq"] < seen["events"][1]["seq"] <= seen["last"]
    assert (await _changes(client, paste, seen["last"]))["events"] == []  # each change once
    # the operator sees the outsider's revoked client; no one else's changes reach it
    everything = await _changes(client, bearer(admin_token), start)
    assert ("client_revoked", revoked) in [
        (e["kind"], e["client_id"]) for e in everything["events"]
    ]
    r = await client.get(URL, params={"after": start}, headers=outsider)
    assert r.status_code == 401  # its client is revoked: no more tokens honoured
    pcb_only = await orgs.auth_with(PCB, "jobs:run")
    r = await client.get(URL, params={"after": start}, headers=pcb_only)
    assert r.status_code == 403 and r.json()["detail"] == {"required_scope": "party:call"}


async def test_a_long_poll_answers_as_soon_as_a_change_is_committed(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs)
    pcb = orgs.auth(PCB)
    last = (await client.get(URL, headers=pcb)).json()["last"]
    started = time.monotonic()
    quiet = await _changes(client, pcb, last, wait=0.3)
    assert quiet["events"] == [] and time.monotonic() - started >= 0.3

    async def suspend_soon() -> None:
        await asyncio.sleep(0.5)
        r = await client.post(
            f"/v1/contracts/{cid}/suspend", json={"reason": "t"}, headers=orgs.auth(OWNER)
        )
        assert r.status_code == 200

    started = time.monotonic()
    waiting = asyncio.create_task(_changes(client, pcb, quiet["last"], wait=20))
    await suspend_soon()
    changed = await waiting
    took = time.monotonic() - started
    assert [e["action"] for e in changed["events"]] == ["contract.suspended"]
    assert took < 2.0, took  # not the 20 s it was willing to wait
