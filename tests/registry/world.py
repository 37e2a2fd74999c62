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

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.messages import (
    FeaturePartyRef,
    LabelDpSpec,
    ModelSpec,
    OptimizerSpec,
    ProtectionMode,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TrainingSpec,
)
from services.protocol.peers import SegmentClient
from services.scenario.pcb_paste import ScenarioFiles, generate
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import OWNER, PASTE, PCB, Doc, Orgs, document
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


def training_spec(
    job_id: str, contract_id: str, *, epochs: int = 2, mode: ProtectionMode = "ckks"
) -> dict[str, Any]:
    """The label party's training request for ``job_id`` (the JSON body of POST /v1/trainings),
    protected as the example contract says (``ckks``; ``plain`` for a plain contract)."""
    spec = TrainingSpec(
        job_id=job_id,
        contract_id=contract_id,
        task=Task.BINARY,
        label_column="defect",
        party="pcb",
        id_column="board_id",
        exclude_columns=["defect_type"],
        feature_parties=[FeaturePartyRef(name="paste", url=PASTE_URL, key_column="paste_lot_id")],
        # small data: a lively learning rate so a few epochs learn something (salts are random)
        model=ModelSpec(
            bottom={n: SegmentSpec(hidden=[16], out=8) for n in ("pcb", "paste")},
            optimizer=OptimizerSpec(lr=1e-2),
        ),
        epochs=epochs,
        batch_size=128,
        # the example contract's label privacy: randomised response, epsilon 6 per board
        protection=ProtectionSpec(
            mode=mode, label_dp=LabelDpSpec(mechanism="randomized_response", epsilon=6.0)
        ),
    )
    return spec.model_dump(mode="json")
