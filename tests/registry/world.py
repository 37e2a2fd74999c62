"""A registry and the parties of the pcb-paste contract, in-process, with real registry tokens.

The PCB maker (label party) and the paste supplier (feature party) run as party services that
enforce the registry: they verify tokens against its JWK Set and ask it about contracts over an
ASGI transport, and every token comes from its token endpoint. Used by the enforcement test and
the authorization matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from contracts.job import prepare_job
from contracts.job import training_spec as derive_training_spec
from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.messages import ProtectionMode
from services.protocol.peers import SegmentClient
from services.scenario.pcb_paste import ScenarioFiles, generate
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import OWNER, PASTE, PCB, Doc, Orgs, contract_of, document
from tests.registry.oauth_util import Registered

PCB_URL, PASTE_URL = "http://pcb.test", "http://paste.test"
"""The parties' public URLs: the audience of tokens for them, and their test clients' base."""


def scenario(directory: Path) -> ScenarioFiles:
    """A small pcb-paste data set (1500 boards, 60 paste lots)."""
    return generate(directory, boards=1500, lots=60, seed=3)


def party_settings(
    name: str, table: Path, key: str | None, who: Registered, tmp: Path, *, check_ttl: float = 0.2
) -> PartySettings:
    """A party service enforcing the test registry, authenticating as ``who``'s client."""
    assert who.secret is not None
    return PartySettings(
        name=name,
        table=table,
        key_column=key,
        data_dir=tmp / name,
        registry_url=ISSUER,
        public_url=PCB_URL if name == "pcb" else PASTE_URL,
        allow_insecure_http=True,  # in-process parties named http://pcb.test, ...
        org_id=who.org_id,
        client_id=who.client_id,
        client_secret=SecretStr(who.secret),
        contract_check_ttl_seconds=check_ttl,
    )


@dataclass
class Parties:
    """The two party services and a test client for each."""

    pcb_app: FastAPI
    paste_app: FastAPI
    pcb: httpx.AsyncClient
    paste: httpx.AsyncClient

    async def aclose(self) -> None:
        """Close the test clients and each party's registry connection."""
        for app in (self.pcb_app, self.paste_app):
            await app.state.runs.shutdown()
            await app.state.registry.aclose()
        await self.pcb.aclose()
        await self.paste.aclose()


def start_parties(registry: FastAPI, orgs: Orgs, files: ScenarioFiles, tmp: Path) -> Parties:
    """The PCB maker (label party, calling the paste supplier in-process) and the paste
    supplier, both enforcing ``registry``."""
    to_registry = httpx.ASGITransport(app=registry)
    paste_app = create_app(
        party_settings("paste", files.paste_supplier, files.key_paste, orgs.clients[PASTE], tmp),
        registry_transport=to_registry,
    )

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=httpx.ASGITransport(app=paste_app))

    pcb_app = create_app(
        party_settings("pcb", files.pcb_maker, None, orgs.clients[PCB], tmp),
        client_factory=factory,
        registry_transport=to_registry,
    )
    return Parties(
        pcb_app=pcb_app,
        paste_app=paste_app,
        pcb=httpx.AsyncClient(transport=httpx.ASGITransport(app=pcb_app), base_url=PCB_URL),
        paste=httpx.AsyncClient(transport=httpx.ASGITransport(app=paste_app), base_url=PASTE_URL),
    )


async def active_contract(client: httpx.AsyncClient, orgs: Orgs, doc: Doc | None = None) -> str:
    """A contract of the owner over ``doc`` (default: the example), proposed and signed by the
    organisation of each party: its id."""
    doc = doc or document()
    owner = orgs.auth(OWNER)
    r = await client.post("/v1/contracts", json=doc, headers=owner)
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    r = await client.post(f"/v1/contracts/{cid}/propose", headers=owner)
    assert r.status_code == 200, r.text
    digest = r.json()["versions"][-1]["digest"]
    for party in doc["parties"]:
        body = {"party": party["name"], "decision": "accept", "digest": digest}
        r = await client.post(
            f"/v1/contracts/{cid}/sign", json=body, headers=orgs.auth(party["org"])
        )
        assert r.status_code == 200, r.text
    assert r.json()["state"] == "active"
    return cid


def with_parties(doc: Doc, **orgs: str) -> Doc:
    """``doc`` with the organisations of some parties replaced (party name -> organisation)."""
    parties = [{**p, "org": orgs.get(p["name"], p["org"])} for p in doc["parties"]]
    return {**doc, "parties": parties}


async def new_job(client: httpx.AsyncClient, orgs: Orgs, contract_id: str, label: str = PCB) -> str:
    """A job under an active contract, created by its label party's organisation: its id."""
    body = {"contract_id": contract_id}
    r = await client.post("/v1/jobs", json=body, headers=orgs.auth(label))
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


SMALL_MODEL: Doc = {
    "family": "nn",
    "bottom": {n: {"hidden": [16], "out": 8} for n in ("pcb", "paste")},
    # small data: a lively learning rate so a few epochs learn something (salts are random)
    "optimizer": {"lr": 1e-2},
}
"""A model that trains in seconds on the small scenario."""


def fast_document(
    *, epochs: int = 2, mode: ProtectionMode = "ckks", model: Doc | None = None, **changes: Any
) -> Doc:
    """The example contract (:func:`document`) fixing a small model (``model``, default
    :data:`SMALL_MODEL`), ``epochs`` epochs in batches of 128, and a ``mode`` cut layer."""
    doc = document(**changes)
    doc["model"] = model or SMALL_MODEL
    doc["training"] = {**doc["training"], "max_epochs": epochs, "batch_size": 128}
    if mode == "plain":
        doc["protection"] = {"scheme": "plain"}
    return doc


def training_spec(job_id: str, contract_id: str, doc: Doc) -> dict[str, Any]:
    """The label party's training request for ``job_id`` (the JSON body of POST /v1/trainings):
    the job the contract ``doc`` fixes, derived as every party derives it."""
    spec = derive_training_spec(
        contract_of(doc),
        job_id=job_id,
        contract_id=contract_id,
        feature_urls={"paste": PASTE_URL},
    )
    return spec.model_dump(mode="json")


def prepare_body(doc: Doc, job_id: str, keys: list[str], *, seed: int = 1) -> dict[str, Any]:
    """The label party's ``PUT /v1/jobs/{job_id}`` body for the paste supplier under the
    contract ``doc``, aligning by the listed ``keys``."""
    body = prepare_job(
        contract_of(doc),
        "paste",
        job_id=job_id,
        seed=seed,
        contract_id=None,
        keys=keys,
        alignment="keys",
    )
    return body.model_dump(mode="json")
