"""Helpers of the usage and revenue report tests: a metered contract with model versions, a
finance organisation, usage events (posted, or written straight to the table for periods the
ingestion window would refuse).

A posted event carries the access token of the prediction call it meters (``caller_token``),
as the label party forwards it: :meth:`Metered.sign` makes one for the event's caller, signed
with the registry's own key and valid at the event's time (tokens from the token endpoint are
valid from now only), for the PCB maker's party service (``PCB_URL``, a resource of its client).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI
from joserfc.jwk import ECKey
from sqlalchemy import insert

from services.registry.models import utcnow
from services.registry.models_usage import UsageEvent
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import (
    OWNER,
    PCB,
    Doc,
    Orgs,
    document,
    model_version_body,
    onboard_example_orgs,
)
from tests.registry.oauth_util import Registered, registry_key, sign, token_for
from tests.registry.util import bearer, onboard, register
from tests.registry.world import PCB_URL, active_contract, new_job

FINANCE = "ledger-finance"
Json = dict[str, Any]


@dataclass
class Metered:
    """Organisations (the example's, an outsider, a finance one) and a contract."""

    app: FastAPI
    client: httpx.AsyncClient
    orgs: Orgs
    finance: Registered
    contract_id: str

    async def finance_auth(self, scope: str = "reports:read") -> dict[str, str]:
        """A bearer header of the finance organisation."""
        return bearer(await token_for(self.app, self.finance, scope=scope))

    _key: ECKey | None = None

    def sign(self, e: Json, *, audience: str = PCB_URL, token_org: str | None = None) -> Json:
        """``e`` as the label party posts it: ``caller_org`` an organisation id (an example
        organisation's name is resolved) and ``caller_token`` the token of its prediction
        call (of ``token_org``, default the caller), unless ``e`` has one already."""
        if "caller_token" in e:
            return e
        names = {name: who.org_id for name, who in self.orgs.clients.items()}
        caller = names.get(e["caller_org"], e["caller_org"])
        payer = names.get(token_org or e["caller_org"], token_org or caller)
        who = next((c for c in self.orgs.clients.values() if c.org_id == payer), None)
        if who is None:  # no client of that organisation: no token to forward
            return {**e, "caller_org": caller}
        if self._key is None:
            self._key = registry_key(self.app)
        at = int(datetime.fromisoformat(e["timestamp"]).timestamp())
        claims = {
            "iss": ISSUER,
            "sub": who.client_id,
            "client_id": who.client_id,
            "aud": audience,
            "iat": at - 1,
            "exp": at + 599,
            "jti": str(uuid.uuid4()),
            "scope": "predict:call",
            "org_id": who.org_id,
            "contract_id": e["contract_id"],
        }
        return {**e, "caller_org": caller, "caller_token": sign(self._key, claims)}

    async def post(
        self, events: list[Json], who: str = PCB, *, signed: bool = True
    ) -> httpx.Response:
        """``POST /v1/usage`` as ``who``; each event signed (:meth:`sign`) unless ``signed`` is
        false."""
        body = [self.sign(e) if signed else e for e in events]
        return await self.client.post(
            "/v1/usage", json={"events": body}, headers=self.orgs.auth(who)
        )


async def finance_org(
    client: httpx.AsyncClient, admin_token: str, *, grant: bool = True
) -> Registered:
    """An organisation of kind finance with a ``reports:read`` client; ``grant``: the operator
    granted it ``reports:all-contracts`` (every contract's rows)."""
    org_id, initial = await onboard(client, admin_token, FINANCE, kind="finance")
    r = await register(client, initial, scope="reports:read")
    assert r.status_code == 201, r.text
    if grant:
        url = f"/v1/organisations/{org_id}/grants/reports:all-contracts"
        granted = await client.put(url, headers=bearer(admin_token))
        assert granted.status_code == 200, granted.text
    return Registered(org_id, r.json()["client_id"], r.json()["client_secret"])


async def metered(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_token: str,
    doc: Doc | None = None,
    *,
    finance_grant: bool = True,
) -> Metered:
    """The example's organisations, a finance one (granted every contract's rows unless
    ``finance_grant`` is false), and an active contract over ``doc`` (the example by default)
    with model version 1."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    finance = await finance_org(client, admin_token, grant=finance_grant)
    await claim_label_url(app, client, orgs)
    cid = await active_contract(client, orgs, doc or document())
    world = Metered(app, client, orgs, finance, cid)
    await model_version(world, cid)
    return world


async def claim_label_url(app: FastAPI, client: httpx.AsyncClient, orgs: Orgs) -> None:
    """The PCB maker's client serves ``PCB_URL`` (as its party service would claim it)."""
    who = orgs.clients[PCB]
    auth = bearer(await token_for(app, who, scope="party:call"))
    r = await client.post(
        f"/v1/oauth/clients/{who.client_id}/resources", json={"resource": PCB_URL}, headers=auth
    )
    assert r.status_code == 200, r.text


async def model_version(
    w: Metered, contract_id: str, metrics: dict[str, float] | None = None, label: str = PCB
) -> int:
    """A finished job under the contract and the model version it produced: its number."""
    job_id = await new_job(w.client, w.orgs, contract_id, label=label)
    auth = w.orgs.auth(label)
    r = await w.client.post(
        f"/v1/jobs/{job_id}/progress", json={"status": "finished"}, headers=auth
    )
    assert r.status_code == 200, r.text
    body = await model_version_body(w.client, auth, job_id, metrics)
    r = await w.client.post(f"/v1/jobs/{job_id}/model-versions", json=body, headers=auth)
    assert r.status_code == 201, r.text
    number: int = r.json()["version"]
    return number


def event(
    contract_id: str,
    *,
    at: datetime | None = None,
    count: int = 1,
    contract_version: int = 1,
    model_version: int = 1,
    caller_org: str = OWNER,
    event_id: str | None = None,
) -> Json:
    """A usage event as the label party posts it."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "contract_id": contract_id,
        "contract_version": contract_version,
        "model_version": model_version,
        "caller_org": caller_org,
        "count": count,
        "timestamp": (at or utcnow()).isoformat(),
    }


def store_events(app: FastAPI, rows: Iterable[tuple[str, int, int, int, datetime]]) -> None:
    """Write events ``(contract, contract version, model version, count, occurred_at)``
    straight to the table (periods outside the ingestion window)."""
    params = [
        {
            "event_id": str(uuid.uuid4()),
            "contract_id": c,
            "contract_version": v,
            "model_version": m,
            "caller_org_id": "buyer",
            "count": n,
            "occurred_at": at,
            "received_at": utcnow(),
            "reported_by": "test",
        }
        for c, v, m, n, at in rows
    ]
    with app.state.engine.begin() as conn:
        conn.execute(insert(UsageEvent), params)
