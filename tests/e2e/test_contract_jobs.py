"""A job is exactly what was signed (issue 15), with real registry and party processes.

The registry (SQLite), the PCB maker (label party) and the paste supplier (feature party) run as
their own processes, under a signed contract. A job whose task, label, columns or model differ
from the contract is refused by every party, naming the field, and changes nothing; then
``splice job start`` trains the contract's job with no spec written by hand; ``splice model
show`` is the approval view (task, columns, digests); ``splice model approve`` deploys it. The
deployed job cannot be deleted or prepared again at the feature party (409); predictions carry
the model digest the registry recorded. (Restarts on re-ordered and edited tables, and swapped
segments, are ``tests/party/test_deployed_model.py``'s, in-process.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.job import prepare_job, training_spec
from contracts.loader import read_contract
from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.cli.demo import KINDS, OEM, PASTE, PCB
from services.cli.governed import Governance, onboard, start_registry
from services.engine.tabular import read_table
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.registry_client import RegistryClient
from services.scenario.pcb_paste import generate
from tests.e2e.contracts import small_contract

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def _set(path: str, value: Any) -> Mutation:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        doc[last] = value

    return change


# Each changes the label party's training spec (first) and the terms a feature party is sent
# (second); the field both must name.
MUTATIONS: dict[str, tuple[Mutation, Mutation, str]] = {
    "task": (_set("task", "multiclass"), _set("terms.task", "multiclass"), "task"),
    "label": (
        _set("label_column", "defect_type"),
        _set("terms.label_column", "defect_type"),
        "label_column",
    ),
    "columns": (
        lambda s: s["columns"].append("defect_type"),  # the label proxy of the issue
        lambda p: p["columns"].remove("viscosity_pa_s"),
        "columns",
    ),
    "model": (
        _set("model.bottom.paste.hidden", [64]),
        _set("segment.hidden", [64]),
        "hidden",
    ),
}


def _auth(gov: Governance, http: httpx.AsyncClient, org: str, audience: str, **kw: Any) -> Any:
    o = gov.orgs[org]
    creds = ClientCredentials(f"{gov.url}/oauth/token", o.client_id, o.secret)
    return BearerAuth(TokenSource(creds, http), audience, **kw)


def _cli(gov: Governance, org: str, *args: str) -> str:
    o = gov.orgs[org]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        "SPLICE_PROFILE_FILE": "/nonexistent/profiles.toml",
        "SPLICE_REGISTRY_URL": gov.url,
        "SPLICE_CLIENT_ID": o.client_id,
        "SPLICE_CLIENT_SECRET": o.secret,
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def _refusals(
    gov: Governance, contract: Path, job_id: str, urls: dict[str, str]
) -> dict[str, tuple[Doc, Doc]]:
    """Every mutation sent to both parties: their answers (label party, feature party)."""
    signed = read_contract(contract)
    spec = training_spec(
        signed, job_id=job_id, contract_id=gov.contract_id, feature_urls={"paste": urls["paste"]}
    ).model_dump(mode="json")
    body = prepare_job(
        signed, "paste", job_id=job_id, seed=0, contract_id=gov.contract_id
    ).model_dump(mode="json")
    answers: dict[str, tuple[Doc, Doc]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        operator = _auth(gov, http, PCB, urls["pcb"], scope="jobs:run")
        label = _auth(gov, http, PCB, urls["paste"], scope="party:call")
        label.contract_id, label.job_id = gov.contract_id, job_id
        for name, (on_spec, on_body, _) in MUTATIONS.items():
            asked, sent = json.loads(json.dumps(spec)), json.loads(json.dumps(body))
            on_spec(asked)
            on_body(sent)
            r1 = await http.post(f"{urls['pcb']}/v1/trainings", json=asked, auth=operator)
            r2 = await http.put(f"{urls['paste']}/v1/jobs/{job_id}", json=sent, auth=label)
            answers[name] = (
                {"status": r1.status_code, **r1.json()},
                {
                    "status": r2.status_code,
                    **r2.json(),
                },
            )
    return answers


async def _model_version(gov: Governance) -> Doc:
    async with httpx.AsyncClient(timeout=30) as http:
        auth = _auth(gov, http, OEM, gov.url, scope="reports:read")
        r = await http.get(f"{gov.url}/v1/contracts/{gov.contract_id}/model-versions/1", auth=auth)
    assert r.status_code == 200, r.text
    doc: Doc = r.json()
    return doc


async def _approve(gov: Governance, org: str, approver: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        auth = _auth(gov, http, org, gov.url, scope="contracts:sign")
        url = f"{gov.url}/v1/contracts/{gov.contract_id}/model-versions/1/approvals"
        r = await http.post(url, json={"approver": approver}, auth=auth)
    assert r.status_code == 200, r.text


async def _predict(gov: Governance, label_url: str, rows: list[Doc]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        auth = _auth(gov, http, OEM, label_url, scope="predict:call")
        auth.contract_id = gov.contract_id
        return await http.post(
            f"{label_url}/v1/contracts/{gov.contract_id}/predict", json={"rows": rows}, auth=auth
        )


async def _feature_calls(gov: Governance, paste_url: str, job_id: str, body: Doc) -> list[int]:
    """DELETE and PUT of the deployed job at the feature party, with the label party's token."""
    async with httpx.AsyncClient(timeout=30) as http:
        label = _auth(gov, http, PCB, paste_url, scope="party:call")
        label.contract_id, label.job_id = gov.contract_id, job_id
        deleted = await http.delete(f"{paste_url}/v1/jobs/{job_id}", auth=label)
        again = await http.put(f"{paste_url}/v1/jobs/{job_id}", json=body, auth=label)
        status = await http.get(f"{paste_url}/v1/jobs/{job_id}", auth=label)
    assert deleted.json()["code"] == again.json()["code"] == "model_immutable", again.text
    assert status.status_code == 200
    return [deleted.status_code, again.status_code]


def test_a_job_is_exactly_what_was_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cheap client-secret hashing: every token request verifies a secret (the registry process
    # inherits these)
    monkeypatch.setenv("SPLICE_REGISTRY_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("SPLICE_REGISTRY_ARGON2_MEMORY_KIB", "8192")
    gov, admin = start_registry(tmp_path / "registry")
    try:
        contract = small_contract(tmp_path)
        asyncio.run(_setup(gov, admin, contract))
        _scenario(gov, contract, tmp_path)
    finally:
        gov.stop()


async def _setup(gov: Governance, admin: str, contract: Path) -> None:
    """Onboard, agree the contract, open a job (token clients closed: no stray sockets)."""
    await onboard(gov, admin, KINDS)
    async with httpx.AsyncClient() as http:

        def client(org: str, scope: str) -> RegistryClient:
            return RegistryClient(gov.url, auth=_auth(gov, http, org, gov.url, scope=scope))

        async with client(OEM, "contracts:write") as oem:
            created = await oem.create_contract_yaml(contract.read_bytes())
            digest = (await oem.propose(created.id)).versions[-1].digest
        gov.contract_id = created.id
        for party, org in (("pcb", PCB), ("paste", PASTE)):
            async with client(org, "contracts:sign") as signer:
                await signer.sign(gov.contract_id, party, digest)
        async with client(PCB, "jobs:run") as label:
            gov.job_id = (await label.create_job(gov.contract_id)).id


def _scenario(gov: Governance, contract: Path, tmp: Path) -> None:
    files = generate(tmp / "data", boards=800, lots=40, seed=5)
    ports = {"pcb": free_port(), "paste": free_port()}
    ttl = {"SPLICE_PARTY_CONTRACT_CHECK_TTL_SECONDS": "0.5"}
    with LocalCluster(tmp / "cluster") as cluster:
        urls = {n: cluster.url(p) for n, p in ports.items()}
        peers = {"SPLICE_PARTY_PEERS": json.dumps({"paste": urls["paste"]})}
        pcb_env = gov.party_env(PCB, urls["pcb"]) | ttl | peers
        paste = PartyLaunch(
            "paste",
            files.paste_supplier,
            files.key_paste,
            gov.party_env(PASTE, urls["paste"]) | ttl,
        )
        cluster.start_all([PartyLaunch("pcb", files.pcb_maker, env=pcb_env), paste], ports=ports)

        # 1. every party refuses a job the contract does not fix, naming the field
        answers = asyncio.run(_refusals(gov, contract, gov.job_id, urls))
        for name, (label, feature) in answers.items():
            field = MUTATIONS[name][2]
            for answer in (label, feature):
                assert answer["status"] == 403 and answer["code"] == "contract_mismatch", answer
                assert any(field in f for f in answer["detail"]["fields"]), (name, answer)
                assert field in answer["message"]
            assert label["detail"]["party"] == "pcb" and feature["detail"]["party"] == "paste"
        health = httpx.get(f"{urls['paste']}/v1/health", timeout=5).json()
        assert health["jobs"] == 0, "the feature party prepared nothing"

        # 2. splice job start: the label party derives the job from the contract and trains it
        out = _cli(gov, PCB, "job", "start", gov.contract_id, "--label-url", urls["pcb"],
                   "--job", gov.job_id, "--json")  # fmt: skip
        status = json.loads(out[out.index("{") :])
        assert status["state"] == "finished", status
        signed = read_contract(contract)
        assert len(status["history"]) == signed.training.max_epochs

        # 3. the approval view says what the model is; both approvers deploy it
        shown = asyncio.run(_model_version(gov))
        assert shown["task"] == "binary" and shown["contract_version"] == 1
        assert shown["columns"] == {p.name: p.feature_schema.column_names for p in signed.parties}
        assert shown["spec_digest"] == status["spec_digest"]
        assert set(shown["segment_digests"]) == {"pcb", "paste"}
        assert shown["model_digest"] == status["model_digest"]
        view = _cli(gov, OEM, "model", "show", gov.contract_id, "1")
        for text in ("binary", "segment paste", "columns pcb", "stencil_thickness_um"):
            assert text in view, view
        assert shown["model_digest"] in view and shown["segment_digests"]["paste"] in view
        asyncio.run(_approve(gov, PCB, "pcb"))
        done = _cli(gov, OEM, "model", "approve", gov.contract_id, "1", "--approver", "oem")
        assert "deployed" in done

        # 4. predictions carry the recorded model digest; the deployed job is immutable
        lots = set(read_table(files.paste_supplier).column("paste_lot_id").to_pylist())
        boards = read_table(files.pcb_maker).drop_columns(["board_id", "defect", "defect_type"])
        request = [r for r in boards.to_pylist() if r["paste_lot_id"] in lots][:60]
        asyncio.run(asyncio.sleep(1.0))  # the parties' cached contract checks see the deployment
        first = asyncio.run(_predict(gov, urls["pcb"], request))
        assert first.status_code == 200, first.text
        assert first.json()["model_digest"] == shown["model_digest"]
        body = prepare_job(
            signed, "paste", job_id=gov.job_id, seed=0, contract_id=gov.contract_id
        ).model_dump(mode="json")
        assert asyncio.run(_feature_calls(gov, urls["paste"], gov.job_id, body)) == [409, 409]
        again = asyncio.run(_predict(gov, urls["pcb"], request))
        assert again.json()["predictions"] == first.json()["predictions"], "nothing changed"
