"""Key fingerprints recorded with a job (``PUT /v1/jobs/{job_id}/keys/{party}``), the
protection in the contract check, and the party side of both (:class:`RegistryLink`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.protocol.errors import Conflict, ErrorCode, PeerError
from services.protocol.messages import ProtectionSpec
from services.protocol.registry_client import RegistryClient
from services.registry.models import AuditEntry
from services.registry.models_contracts import ContractVersion
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    contract_of,
    document,
    onboard_example_orgs,
)
from tests.registry.util import bearer, dump_tables
from tests.registry.world import active_contract, new_job, party_settings

Json = dict[str, Any]
FP = hashlib.sha256(b"paste bundle").hexdigest()
OTHER_FP = hashlib.sha256(b"another bundle").hexdigest()
OUTSIDER = "outsider-gmbh"


@dataclass
class Setup:
    app: FastAPI
    client: httpx.AsyncClient
    orgs: Orgs
    contract_id: str
    job_id: str

    def url(self, party: str = "paste", job_id: str | None = None) -> str:
        return f"/v1/jobs/{job_id or self.job_id}/keys/{party}"

    async def put(self, who: str, fp: str = FP, url: str | None = None) -> httpx.Response:
        headers = await self.orgs.auth_with(who, "party:call")
        return await self.client.put(url or self.url(), json={"fingerprint": fp}, headers=headers)


@pytest.fixture
async def setup(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Setup:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs)
    return Setup(app, client, orgs, cid, await new_job(client, orgs, cid))


def _error(r: httpx.Response, status: int, code: str) -> Json:
    assert r.status_code == status, r.text
    body: Json = r.json()
    assert set(body) == {"code", "message", "detail"}, body
    assert body["code"] == code and body["message"], body
    return body


def _key_entries(app: FastAPI) -> list[Json]:
    with app.state.sessions() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.action == "job.key_registered").all()
        return [dict(r.payload, subject=r.subject, actor=r.actor) for r in rows]


async def test_the_feature_party_records_its_key_once(setup: Setup) -> None:
    s = setup
    r = await s.put(PASTE)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"] == s.job_id and job["key_fingerprints"] == {"paste": FP}
    assert job["status"] == "created"
    # the same fingerprint again: accepted, nothing new
    again = await s.put(PASTE)
    assert again.status_code == 200 and again.json()["key_fingerprints"] == {"paste": FP}
    assert again.json()["updated_at"] == job["updated_at"]
    # another one: a conflict naming the one held
    body = _error(await s.put(PASTE, OTHER_FP), 409, "key_conflict")
    assert body["detail"] == {"party": "paste", "fingerprint": FP}
    # the label party reads it with the job
    seen = await s.client.get(f"/v1/jobs/{s.job_id}", headers=s.orgs.auth(PCB))
    assert seen.json()["key_fingerprints"] == {"paste": FP}
    entries = _key_entries(s.app)
    assert len(entries) == 1
    assert entries[0]["party"] == "paste" and entries[0]["fingerprint"] == FP
    assert entries[0]["subject"] == f"job:{s.job_id}"
    assert entries[0]["actor"] == f"client:{s.orgs.clients[PASTE].client_id}"


async def test_the_label_party_may_record_its_own_key(setup: Setup) -> None:
    r = await setup.put(PCB, url=setup.url("pcb"))
    assert r.status_code == 200, r.text
    assert r.json()["key_fingerprints"] == {"pcb": FP}


async def test_a_fingerprint_given_at_creation_is_write_once(setup: Setup) -> None:
    s = setup
    await s.client.post(
        f"/v1/jobs/{s.job_id}/progress", json={"status": "failed"}, headers=s.orgs.auth(PCB)
    )
    body = {"contract_id": s.contract_id, "key_fingerprints": {"paste": FP}}
    r = await s.client.post("/v1/jobs", json=body, headers=s.orgs.auth(PCB))
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert (await s.put(PASTE, url=s.url(job_id=job_id))).status_code == 200
    _error(await s.put(PASTE, OTHER_FP, url=s.url(job_id=job_id)), 409, "key_conflict")


async def test_refusals_write_nothing(setup: Setup, migrated_url: str, admin_token: str) -> None:
    s = setup
    before = dump_tables(migrated_url)
    # another party's organisation, an outsider, a token without party:call, an operator
    _error(await s.put(PCB), 403, "forbidden")
    _error(await s.put(OUTSIDER), 403, "forbidden")
    _error(await s.put(OWNER), 403, "forbidden")
    jobs_only = await s.orgs.auth_with(PASTE, "jobs:run contracts:sign")
    r = await s.client.put(s.url(), json={"fingerprint": FP}, headers=jobs_only)
    assert _error(r, 403, "forbidden")["detail"] == {"required_scope": "party:call"}
    r = await s.client.put(s.url(), json={"fingerprint": FP}, headers=bearer(admin_token))
    _error(r, 403, "forbidden")
    _error(await s.client.put(s.url(), json={"fingerprint": FP}), 401, "unauthenticated")
    # unknown job, unknown party
    _error(await s.put(PASTE, url=s.url(job_id="no-such-job")), 404, "not_found")
    assert _error(await s.put(PASTE, url=s.url("ghost")), 404, "not_found")["detail"] == {
        "party": "ghost"
    }
    assert before == dump_tables(migrated_url)


BAD_BODIES: list[tuple[Any, list[Any]]] = [
    ({"fingerprint": "xyz"}, ["body", "fingerprint"]),
    ({"fingerprint": FP.upper()}, ["body", "fingerprint"]),
    ({"fingerprint": FP + "0"}, ["body", "fingerprint"]),
    ({"fingerprint": 12}, ["body", "fingerprint"]),
    ({}, ["body", "fingerprint"]),
    ({"fingerprint": FP, "party": "paste"}, ["body", "party"]),
    ([FP], ["body"]),
]


async def test_bad_input_is_a_422_naming_the_field(setup: Setup, migrated_url: str) -> None:
    s = setup
    before = dump_tables(migrated_url)
    headers = await s.orgs.auth_with(PASTE, "party:call")
    for body, loc in BAD_BODIES:
        r = await s.client.put(s.url(), json=body, headers=headers)
        detail = _error(r, 422, "validation_error")["detail"]
        assert loc in [e["loc"] for e in detail], (body, detail)
    r = await s.client.put(s.url("Paste"), json={"fingerprint": FP}, headers=headers)
    assert ["path", "party"] in [e["loc"] for e in _error(r, 422, "validation_error")["detail"]]
    json_media = {**headers, "content-type": "application/json"}
    r = await s.client.put(s.url(), content=b"{not json", headers=json_media)
    _error(r, 422, "validation_error")
    r = await s.client.put(
        s.url(), content=f"fingerprint={FP}".encode(), headers={**headers, "content-type": "x/y"}
    )
    _error(r, 415, "unsupported_media_type")
    assert before == dump_tables(migrated_url)


@pytest.mark.parametrize("status", ["finished", "failed", "cancelled"])
async def test_a_final_job_takes_no_key(setup: Setup, status: str) -> None:
    s = setup
    r = await s.client.post(
        f"/v1/jobs/{s.job_id}/progress", json={"status": status}, headers=s.orgs.auth(PCB)
    )
    assert r.status_code == 200, r.text
    body = _error(await s.put(PASTE), 409, "invalid_transition")
    assert body["detail"] == {"status": status}


async def test_a_terminated_contract_takes_no_key(setup: Setup) -> None:
    s = setup
    r = await s.client.post(
        f"/v1/contracts/{s.contract_id}/terminate",
        json={"reason": "test"},
        headers=s.orgs.auth(OWNER),
    )
    assert r.status_code == 200, r.text
    _error(await s.put(PASTE), 409, "invalid_transition")


async def test_registry_client_records_keys(setup: Setup) -> None:
    s = setup
    headers = await s.orgs.auth_with(PASTE, "party:call")

    class Auth(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers.update(headers)
            yield request

    async with RegistryClient(
        ISSUER, auth=Auth(), transport=httpx.ASGITransport(app=s.app)
    ) as registry:
        job = await registry.register_key(s.job_id, "paste", FP)
        assert job.key_fingerprints == {"paste": FP}
        assert (await registry.register_key(s.job_id, "paste", FP)).id == s.job_id
        with pytest.raises(Conflict) as info:
            await registry.register_key(s.job_id, "paste", OTHER_FP)
        assert info.value.code is ErrorCode.KEY_CONFLICT


# --- the contract check carries the protection --------------------------------------------------


async def test_the_check_carries_the_protection(setup: Setup) -> None:
    s = setup
    r = await s.client.get(
        f"/v1/contracts/{s.contract_id}/check",
        params={"party": "paste", "job_id": s.job_id},
        headers=s.orgs.auth(PASTE),
    )
    assert r.status_code == 200, r.text
    protection = r.json()["protection"]
    assert protection == contract_of(document()).protection.to_wire()
    spec = ProtectionSpec.model_validate(protection)
    assert spec.mode == "ckks" and spec.ckks.mask_bits == 26 and spec.defence.enabled


async def test_a_plain_contract_checks_plain(setup: Setup) -> None:
    s = setup
    defence = {"enabled": True, "max_norm": 2.0, "noise_multiplier": 0.25}
    doc = document(protection={"scheme": "plain", "label_defence": defence})
    cid = await active_contract(s.client, s.orgs, doc)
    r = await s.client.get(f"/v1/contracts/{cid}/check", headers=s.orgs.auth(PCB))
    spec = ProtectionSpec.model_validate(r.json()["protection"])
    assert spec.mode == "plain" and spec.defence.model_dump() == defence


async def test_no_version_in_force_no_protection(setup: Setup) -> None:
    s = setup
    r = await s.client.post("/v1/contracts", json=document(), headers=s.orgs.auth(OWNER))
    cid = r.json()["id"]
    r = await s.client.get(f"/v1/contracts/{cid}/check", headers=s.orgs.auth(OWNER))
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["protection"] is None


# --- the party side -----------------------------------------------------------------------------


@pytest.fixture
async def links(setup: Setup, tmp_path: Path) -> AsyncIterator[tuple[RegistryLink, RegistryLink]]:
    """The paste supplier's and the PCB maker's links to the registry, in-process."""
    transport = httpx.ASGITransport(app=setup.app)
    paste = RegistryLink(
        party_settings("paste", tmp_path / "t.csv", "k", setup.orgs.clients[PASTE], tmp_path),
        transport=transport,
    )
    pcb = RegistryLink(
        party_settings("pcb", tmp_path / "t.csv", None, setup.orgs.clients[PCB], tmp_path),
        transport=transport,
    )
    yield paste, pcb
    await paste.aclose()
    await pcb.aclose()


async def test_parties_record_and_compare_keys(
    setup: Setup, links: tuple[RegistryLink, RegistryLink]
) -> None:
    s, (paste, pcb) = setup, links
    assert await pcb.key_fingerprints(s.job_id) == {}
    await paste.register_key(s.job_id, "paste", FP)
    await paste.register_key(s.job_id, "paste", FP)  # idempotent
    assert await pcb.key_fingerprints(s.job_id) == {"paste": FP}
    with pytest.raises(Conflict, match="refused the key fingerprint of 'paste'") as info:
        await paste.register_key(s.job_id, "paste", OTHER_FP)
    assert info.value.code is ErrorCode.KEY_CONFLICT
    assert info.value.detail == {"party": "paste", "fingerprint": FP}
    with pytest.raises(PeerError, match=r"\(403\)"):
        await pcb.register_key(s.job_id, "paste", FP)
    with pytest.raises(PeerError, match=r"\(404\)"):
        await pcb.key_fingerprints("no-such-job")
    await s.client.post(
        f"/v1/jobs/{s.job_id}/progress", json={"status": "finished"}, headers=s.orgs.auth(PCB)
    )
    with pytest.raises(Conflict) as final:
        await paste.register_key(s.job_id, "paste", FP)
    assert final.value.code is ErrorCode.INVALID_TRANSITION


async def test_the_standing_carries_the_protection(
    setup: Setup, links: tuple[RegistryLink, RegistryLink]
) -> None:
    s, (paste, _) = setup, links
    standing = await paste.check(s.contract_id, s.orgs[PCB], s.job_id)
    assert standing.active and standing.caller_role == "label" and standing.job_ok
    assert standing.protection == contract_of(document()).protection.to_wire()
    assert ProtectionSpec.model_validate(standing.protection).mode == "ckks"


def _offline_link(tmp_path: Path, handler: Any) -> RegistryLink:
    settings = PartySettings(
        name="paste",
        table=tmp_path / "t.csv",
        registry_url="https://registry.down",
        org_id="org",
        client_id="client",
        client_secret=SecretStr("secret"),
    )
    return RegistryLink(settings, transport=httpx.MockTransport(handler))


def _token_or(answer: Any) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        return answer(request)

    return handler


async def test_registry_faults_are_peer_errors(tmp_path: Path) -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            return httpx.Response(503, json={"code": "x", "message": "busy", "detail": None})
        return httpx.Response(200, json={"id": "j", "key_fingerprints": {"paste": FP}})

    link = _offline_link(tmp_path, _token_or(flaky))
    await link.register_key("j", "paste", FP)  # retried after the 503
    assert calls == ["PUT", "PUT"]
    await link.aclose()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    link = _offline_link(tmp_path, _token_or(down))
    with pytest.raises(PeerError, match="unreachable"):
        await link.register_key("j", "paste", FP)
    await link.aclose()

    link = _offline_link(tmp_path, _token_or(lambda _: httpx.Response(500, text="oops")))
    with pytest.raises(PeerError, match=r"\(500\): HTTP 500"):
        await link.key_fingerprints("j")
    await link.aclose()

    link = _offline_link(tmp_path, lambda _: httpx.Response(401, json={"error": "invalid_client"}))
    with pytest.raises(
        PeerError, match="refuses party 'paste'.s client credentials .client id 'client'."
    ):
        await link.register_key("j", "paste", FP)
    await link.aclose()


async def test_a_contract_stored_before_label_privacy_keeps_its_signed_meaning(
    setup: Setup, links: tuple[RegistryLink, RegistryLink]
) -> None:
    """Issue 16: a contract version stored before the language had label privacy (its canonical
    document has no ``protection.label_privacy``) still means what was signed, label privacy
    off, for the registry's check and for the parties, on SQLite and PostgreSQL alike; a
    contract stored now spells it out."""
    s, (paste, _) = setup, links
    with s.app.state.sessions() as session:
        version = session.scalars(
            select(ContractVersion).where(ContractVersion.contract_id == s.contract_id)
        ).one()
        stored = json.loads(version.document)
        assert stored["protection"]["label_privacy"]["mechanism"] == "randomized_response"
        del stored["protection"]["label_privacy"]  # as a document written before issue 16
        version.document = json.dumps(stored, sort_keys=True, separators=(",", ":"))
        session.commit()
    r = await s.client.get(f"/v1/contracts/{s.contract_id}/check", headers=s.orgs.auth(PASTE))
    assert r.json()["protection"]["label_dp"]["mechanism"] == "none"
    contract = await paste.contract(s.contract_id, 1)
    assert contract.protection.label_privacy.mechanism == "none"
    # written today, the same document says what its author asked for (the default: on)
    assert contract_of(document()).protection.label_privacy.mechanism == "randomized_response"
