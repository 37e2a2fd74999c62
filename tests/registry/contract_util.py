"""Helpers of the contract and job tests: the pcb-paste example, its organisations, callers.

Organisations are onboarded over HTTP and call with real access tokens from the registry's
OAuth2 server (client credentials, ``client_secret_basic``).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI
from sqlalchemy.orm import Session

from contracts import Contract, validate_contract
from services.registry.models import Organisation, OrgKind, OrgStatus, utcnow
from services.registry.oauth.scopes import ORG_ADMIN
from tests.registry.oauth_util import Registered, secret_client, token_for
from tests.registry.util import bearer

EXAMPLE = Path(__file__).resolve().parents[2] / "contracts" / "examples" / "pcb-paste-quality.yaml"
ALL_SCOPES = (
    "contracts:sign contracts:write jobs:run party:call predict:call reports:read usage:write"
)
# The example's organisations, onboarded under these names (the contract names them so).
OWNER, PCB, PASTE = "nordwerk-automotive", "lumen-pcb", "solvia-paste"
KINDS = {OWNER: "oem", PCB: "manufacturer", PASTE: "supplier"}

Doc = dict[str, Any]


@functools.cache
def _example() -> Doc:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def document(now: datetime | None = None, **changes: Any) -> Doc:
    """The pcb-paste example, valid around ``now`` (the example's own training deadline may
    lie in the past): validity from a day before to a year after, deadline in half a year.
    ``changes`` replace top-level sections."""
    at = now or utcnow()
    data = copy.deepcopy(_example())
    data["validity"] = {"start": _iso(at - timedelta(days=1)), "end": _iso(at + timedelta(365))}
    data["training"] = {**data["training"], "deadline": _iso(at + timedelta(days=180))}
    data.update(changes)
    return data


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def contract_of(doc: Doc) -> Contract:
    """The validated contract of a document (what the registry stores)."""
    return validate_contract(doc)


def as_yaml(doc: Doc) -> bytes:
    """A document as YAML text."""
    return yaml.safe_dump(doc, sort_keys=False).encode()


@dataclass
class Orgs:
    """Onboarded organisations: ``orgs[name]`` is an id, ``orgs.auth(name)`` a header with an
    access token holding every contract scope."""

    app: FastAPI
    clients: dict[str, Registered]
    tokens: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.clients[name].org_id

    def auth(self, name: str) -> dict[str, str]:
        """Authorization header of ``name``'s client."""
        return bearer(self.tokens[name])

    async def auth_with(self, name: str, scope: str) -> dict[str, str]:
        """Authorization header with a token for ``scope`` only."""
        return bearer(await token_for(self.app, self.clients[name], scope=scope))


async def onboard_example_orgs(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Orgs:
    """Onboard the example's three organisations and an outsider, each with a client and a
    token for every contract scope. Each client is its organisation's first, registered with
    the approval's admin token, so it may also ask for ``org:admin`` (its default tokens do not
    carry it)."""
    orgs = Orgs(app=app, clients={})
    for name in [*KINDS, "outsider-gmbh"]:
        scope = f"{ALL_SCOPES} {ORG_ADMIN}"
        orgs.clients[name] = await secret_client(client, admin_token, name, scope=scope)
        orgs.tokens[name] = await token_for(app, orgs.clients[name])
    return orgs


def add_orgs(session: Session, *names: str) -> dict[str, str]:
    """Approved organisations written straight to the database (store-level tests)."""
    ids = {}
    for name in names:
        org = Organisation(
            name=name,
            kind=OrgKind(KINDS.get(name, "supplier")),
            contact_email="ops@example.com",
            status=OrgStatus.APPROVED,
            approved_at=utcnow(),
        )
        session.add(org)
        session.flush()
        ids[name] = org.id
    return ids


ZERO = "0" * 64


async def model_version_body(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    job_id: str,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A ``POST /v1/jobs/{job_id}/model-versions`` body that says what the model is: the job's
    spec digest (read from the registry) and a segment digest for each party with a segment."""
    job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
    contract = (await client.get(f"/v1/contracts/{job['contract_id']}", headers=headers)).json()
    version = next(v for v in contract["versions"] if v["version"] == job["contract_version"])
    parties = {*version["document"]["model"]["bottom"], job["label_party"]}
    return {
        "metrics": {"auc": 0.8} if metrics is None else metrics,
        "artifact_digests": {"top": ZERO},
        "spec_digest": job["spec_digest"],
        "segment_digests": dict.fromkeys(sorted(parties), ZERO),
    }
