"""The world the authorization matrix runs in, built once per database backend.

A registry with the pcb-paste organisations and an outsider, contracts in every state an endpoint
needs (active, draft, proposed, suspended), jobs, unused and spent credentials, and the two party
services of the active contract with jobs prepared for each party endpoint. Cells must leave it
as it is (that is what they check); a cell that changes it on purpose (a condition such as a
suspended organisation, or a control request that succeeds) restores the registry's tables from
the pristine copy afterwards (:meth:`MatrixWorld.restore`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import ColumnElement, Engine, Table, and_, delete, insert, select, update

from services.party.auth import Authorizer
from services.party.caches import TtlCache
from services.party.segment import SegmentJob
from services.protocol import codec
from services.protocol.version import TENSOR_MEDIA_TYPE
from services.registry.credentials import token_digest
from services.registry.db import make_engine
from services.registry.models import Base, InitialAccessToken, Invitation, utcnow
from services.registry.models_people import UserInvitation
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import (
    ALL_SCOPES,
    OWNER,
    PASTE,
    PCB,
    Orgs,
    document,
    model_version_body,
    onboard_example_orgs,
)
from tests.registry.oauth_util import (
    TOKEN_URL,
    Registered,
    decode_unverified,
    key_client,
    registry_key,
    sign,
    token_for,
    unsigned,
)
from tests.registry.util import apply, bearer, invite, onboard, register
from tests.registry.world import (
    PASTE_URL,
    PCB_URL,
    Parties,
    active_contract,
    fast_document,
    new_job,
    scenario,
    start_parties,
    training_spec,
    with_parties,
)
from tests.registry.world import prepare_body as paste_prepare

OUTSIDER = "outsider-gmbh"
KEYED = "keyed-kg"
"""An organisation whose client authenticates with private_key_jwt."""
ADMIN = "operator admin"
"""``As.org`` of the operator admin (the bootstrap admin token)."""

Dump = dict[str, list[dict[str, Any]]]
PASTE_KEYS = ["PL-000001", "PL-000002", "PL-000003"]
"""The paste lots the label party asks the feature party for (handles 0, 1, 2)."""
MODEL = {"bottom": {"pcb": {"hidden": [4], "out": 2}, "paste": {"hidden": [4], "out": 2}}}
"""The model of the contracts the parties' jobs run under (tiny: frames carry 2-wide cuts)."""
PLAIN_DOC = fast_document(epochs=1, mode="plain", model=MODEL)
"""The contract the parties' jobs run under: the matrix sends plain tensor frames (CKKS blobs
need a real key exchange, which is not what it tests)."""
CKKS_DOC = fast_document(epochs=1, model=MODEL)
"""The contract of the job the paste supplier prepares in ckks mode (its key endpoint)."""


@dataclass(frozen=True)
class As:
    """A caller: an organisation's client (or the admin) with a token for ``audience``,
    ``scope`` and, as claims, the contract and job named by world keys."""

    org: str
    audience: str = ISSUER
    scope: str = ALL_SCOPES
    contract: str | None = None
    job: str | None = None


def prepare_body(job_id: str, mode: str = "plain") -> dict[str, Any]:
    """The label party's ``PUT /v1/jobs/{job_id}`` body for the paste supplier, as the contract
    it runs under fixes it (``ckks``: :data:`CKKS_DOC`, else :data:`PLAIN_DOC`)."""
    return paste_prepare(CKKS_DOC if mode == "ckks" else PLAIN_DOC, job_id, PASTE_KEYS)


def forward_frame(job_id: str, step: int) -> bytes:
    """A training forward for all three handles."""
    header = {
        "job_id": job_id,
        "step": step,
        "idempotency_key": f"forward-{step:03d}",
        "train": True,
    }
    return codec.encode(header, {"handles": np.arange(3, dtype=np.int64)})


def backward_frame(job_id: str, step: int) -> bytes:
    """The gradient for the forward of ``step``."""
    header = {"job_id": job_id, "step": step, "idempotency_key": f"backward-{step:03d}"}
    return codec.encode(header, {"grad": np.full((3, 2), 0.5, dtype=np.float32)})


def embed_frame(job_id: str) -> bytes:
    """An evaluation forward for all three handles."""
    return codec.encode({"job_id": job_id}, {"handles": np.arange(3, dtype=np.int64)})


def mix_frame(job_id: str) -> bytes:
    """A ckks mix for the forward of step 0 (the blob is no ciphertext)."""
    blob = codec.blob_tensor(b"\x00" * 16)
    return codec.encode({"job_id": job_id, "step": 0}, {"masked": blob})


TENSOR_HEADERS = {"content-type": TENSOR_MEDIA_TYPE}


def _tables() -> list[Table]:
    """The registry tables a cell must leave as they were: all but the rate-limit counters,
    which every request changes by design."""
    return [t for t in Base.metadata.sorted_tables if t.name != "rate_counters"]


def dump(engine: Engine) -> Dump:
    """Every row of every registry table (but the rate-limit counters), by primary key."""
    with engine.connect() as conn:
        return {
            table.name: [
                dict(row._mapping)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in _tables()
        }


def restore(engine: Engine, pristine: Dump, current: Dump) -> None:
    """Make the tables hold ``pristine`` again, given that they hold ``current``: changed rows
    are changed back (dropping references to new rows), new rows go (children first), rows that
    went missing come back (parents first)."""
    tables = _tables()

    def keyed(table: Table, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], Any]:
        return {tuple(row[c.name] for c in table.primary_key.columns): row for row in rows}

    def where(table: Table, key: tuple[Any, ...]) -> ColumnElement[bool]:
        columns = table.primary_key.columns
        return and_(*(c == v for c, v in zip(columns, key, strict=True)))

    want = {t.name: keyed(t, pristine[t.name]) for t in tables}
    have = {t.name: keyed(t, current[t.name]) for t in tables}
    with engine.begin() as conn:
        for table in tables:
            for key, row in want[table.name].items():
                if key in have[table.name] and have[table.name][key] != row:
                    conn.execute(update(table).where(where(table, key)).values(**row))
        for table in reversed(tables):
            for key in have[table.name].keys() - want[table.name].keys():
                conn.execute(delete(table).where(where(table, key)))
        for table in tables:
            for key in want[table.name].keys() - have[table.name].keys():
                conn.execute(insert(table).values(**want[table.name][key]))


@dataclass
class MatrixWorld:
    """Everything the matrix's cells use; see the module docstring."""

    app: FastAPI
    registry: httpx.AsyncClient
    engine: Engine
    admin_token: str
    orgs: Orgs
    parties: Parties
    ids: dict[str, str] = field(default_factory=dict)
    """World keys -> ids (organisations, clients, contracts, jobs, digests)."""
    bodies: dict[str, Any] = field(default_factory=dict)
    """Request bodies made while the world was built (they hold its digests)."""
    credentials: dict[str, str] = field(default_factory=dict)
    """Initial access tokens and invitation codes, by what they are (unused, used, expired)."""
    signing_key: ECKey | None = None
    pristine: Dump = field(default_factory=dict)
    _tokens: dict[As, str] = field(default_factory=dict)

    # --- tokens ---------------------------------------------------------------------------

    def client_of(self, org: str) -> Registered:
        """The main client of an organisation of the world."""
        return self.orgs.clients[org]

    async def token(self, who: As) -> str:
        """A real token for ``who`` from the token endpoint (the admin's bootstrap token for
        the admin); minted once per world."""
        if who.org == ADMIN:
            return self.admin_token
        if who not in self._tokens:
            claims = {
                name: self.ids[key]
                for name, key in (("contract_id", who.contract), ("job_id", who.job))
                if key is not None
            }
            self._tokens[who] = await token_for(
                self.app, self.client_of(who.org), scope=who.scope, audience=who.audience, **claims
            )
        return self._tokens[who]

    def forge(self, token: str, how: str) -> str:
        """``token`` wrong in one way only: re-signed with changed claims, signed by a stranger
        key under the registry's ``kid``, or not signed at all."""
        key = self.signing_key
        assert key is not None
        _, claims = decode_unverified(token)
        now = int(time.time())
        changes: dict[str, dict[str, Any]] = {
            "expired": {"exp": now - 120, "iat": now - 720},
            "wrong audience": {"aud": _elsewhere(claims["aud"])},
            "wrong issuer": {"iss": "https://evil.test"},
        }
        changed = changes.get(how, {})
        claims = {**claims, **changed}
        if how == "bad signature":
            stranger = ECKey.generate_key("P-256", private=True)
            return sign(stranger, claims, kid=key.kid)
        if how == "alg none":
            return unsigned(claims, key.kid or "")
        assert changed, how
        return sign(key, claims)

    # --- the registry's tables -------------------------------------------------------------

    def dump(self) -> Dump:
        """The registry's tables now."""
        return dump(self.engine)

    def restore(self, current: Dump) -> None:
        """Back to the pristine tables (``current``: what they hold now)."""
        if current != self.pristine:
            restore(self.engine, self.pristine, current)

    # --- the parties -----------------------------------------------------------------------

    def forget_party_caches(self) -> None:
        """Drop what the parties cached from the registry (contract standing, token liveness), as
        their short TTL would: a cell sees the registry as it is now."""
        for app in (self.parties.pcb_app, self.parties.paste_app):
            authorizer: Authorizer = app.state.registry.authorizer
            authorizer.standing = TtlCache(authorizer.standing.ttl)
            authorizer.live = TtlCache(authorizer.live.ttl)

    async def party_state(self) -> dict[str, Any]:
        """What the parties hold: their health documents, every job at the paste supplier
        (status and a digest of its weights), every training run at the PCB maker, and the
        files in both data folders."""
        state: dict[str, Any] = {}
        for name, client, app in (
            ("pcb", self.parties.pcb, self.parties.pcb_app),
            ("paste", self.parties.paste, self.parties.paste_app),
        ):
            health = await client.get("/v1/health")
            assert health.status_code == 200, health.text
            state[f"{name} health"] = health.json()
            folder = Path(app.state.party.settings.data_dir)
            state[f"{name} files"] = sorted(
                (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob("*")
                if p.is_file()
            )
        jobs: dict[str, SegmentJob] = self.parties.paste_app.state.party.jobs
        state["paste jobs"] = {job_id: _job_state(job) for job_id, job in jobs.items()}
        runs = self.parties.pcb_app.state.runs.runs
        state["pcb runs"] = {job_id: run.status.state for job_id, run in runs.items()}
        return state

    async def training_done(self, job_key: str) -> None:
        """Wait until the PCB maker's training of a job has finished, and its reports to the
        registry with it."""
        job_id = self.ids[job_key]
        name = f"training-{job_id}"
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == name]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        run = self.parties.pcb_app.state.runs.runs[job_id]
        for _ in range(1200):
            if run.status.state in ("finished", "failed"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"training {job_id} did not end: {run.status.state}")


def _job_state(job: SegmentJob) -> dict[str, Any]:
    weights = hashlib.sha256()
    for tensor in job.model.state_dict().values():
        weights.update(tensor.detach().cpu().numpy().tobytes())
    return {**job.status(), "weights": weights.hexdigest()}


def _elsewhere(audience: object) -> str:
    """Another service's audience: a party's for a registry token, the other party's for a
    party token."""
    return {ISSUER: PASTE_URL, PASTE_URL: PCB_URL, PCB_URL: PASTE_URL}[str(audience)]


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def _expire(
    engine: Engine,
    model: type[InitialAccessToken] | type[Invitation] | type[UserInvitation],
    row: str,
) -> None:
    with engine.begin() as conn:
        past = utcnow() - timedelta(hours=1)
        conn.execute(update(model).where(model.id == row).values(expires_at=past))


async def build_world(
    app: FastAPI, registry: httpx.AsyncClient, admin_token: str, url: str, tmp: Path
) -> MatrixWorld:
    """Build the world on a fresh registry ``app`` (database ``url``)."""
    admin = bearer(admin_token)
    orgs = await onboard_example_orgs(app, registry, admin_token)
    orgs.clients[KEYED] = await key_client(registry, admin_token, KEYED)
    parties = start_parties(app, orgs, scenario(tmp / "data"), tmp)
    w = MatrixWorld(app, registry, make_engine(url), admin_token, orgs, parties)
    engine = w.engine
    ids, creds = w.ids, w.credentials
    for name, key in ((OWNER, "owner"), (PCB, "pcb"), (PASTE, "paste"), (OUTSIDER, "outsider")):
        ids[key] = orgs[name]
    ids["one"] = "1"
    ids["tree request"] = "setup"
    ids["paste party"] = "paste"

    # Organisations an operator acts on: one pending, one suspended.
    used_code = await invite(registry, admin_token, "applicant")
    ids["applicant"] = (_ok(await apply(registry, used_code, "applicant-sa"), 201))["id"]
    creds["used invitation"] = used_code
    ids["dormant"], _ = await onboard(registry, admin_token, "dormant-ag")
    r = await registry.post(
        f"/v1/organisations/{ids['dormant']}/suspend", json={"reason": "setup"}, headers=admin
    )
    _ok(r)
    # Invitations: a fresh one, and an expired one.
    creds["invitation"] = await invite(registry, admin_token, "fresh")
    r = await registry.post("/v1/invitations", json={"note": "expired"}, headers=admin)
    expired = _ok(r, 201)
    creds["expired invitation"] = expired["code"]
    _expire(engine, Invitation, expired["id"])
    # People's invitations of the PCB maker (issue 19): a fresh one, a used one, an expired one.
    people = f"/v1/organisations/{ids['pcb']}/user-invitations"
    for kind in ("user invitation", "used user invitation", "expired user invitation"):
        r = await registry.post(
            people,
            json={"email": f"{kind.replace(' ', '-')}@pcb.example", "role": "viewer"},
            headers=admin,
        )
        made = _ok(r, 201)
        creds[kind] = made["code"]
        if kind.startswith("expired"):
            _expire(engine, UserInvitation, made["id"])
    accepted = {"code": creds["used user invitation"], "name": "Used", "password": "p" * 12}
    _ok(await registry.post("/v1/user-invitations/accept", json=accepted), 201)

    # The PCB maker's initial access tokens: spent on a spare client, unused, expired; and a
    # private_key_jwt client.
    async def initial_token() -> str:
        r = await registry.post(
            f"/v1/organisations/{ids['pcb']}/initial-access-tokens", headers=admin
        )
        token: str = (_ok(r, 201))["initial_access_token"]
        return token

    creds["used initial token"] = await initial_token()
    spare = _ok(await register(registry, creds["used initial token"]), 201)
    ids["pcb-spare"] = spare["client_id"]
    ids["pcb-client"] = orgs.clients[PCB].client_id
    ids["reports grant"] = "reports:all-contracts"
    # The owner may verify the audit log (an operator's grant; nobody else holds one).
    r = await registry.put(f"/v1/organisations/{ids['owner']}/grants/audit:verify", headers=admin)
    _ok(r)
    creds["initial token"] = await initial_token()
    creds["expired initial token"] = await initial_token()
    _expire_initial(engine, creds["expired initial token"])

    # Contracts: active (the parties' jobs), a second active one (jobs endpoints), a third for
    # the label party's training endpoint (the first and third in plain mode), a fourth for a
    # ckks job, a draft, a proposal, a suspended one.
    owner = orgs.auth(OWNER)
    ids["active"] = await active_contract(registry, orgs, PLAIN_DOC)
    ids["jobs"] = await active_contract(registry, orgs)
    ids["trainings"] = await active_contract(registry, orgs, PLAIN_DOC)
    ids["ckks"] = await active_contract(registry, orgs, CKKS_DOC)
    ids["suspended"] = await active_contract(registry, orgs)
    r = await registry.post(
        f"/v1/contracts/{ids['suspended']}/suspend", json={"reason": "setup"}, headers=owner
    )
    _ok(r)
    r = await registry.post("/v1/contracts", json=document(), headers=owner)
    ids["draft"] = (_ok(r, 201))["id"]
    r = await registry.post("/v1/contracts", json=document(), headers=owner)
    ids["proposed"] = (_ok(r, 201))["id"]
    r = await registry.post(f"/v1/contracts/{ids['proposed']}/propose", headers=owner)
    ids["proposed digest"] = (_ok(r))["versions"][-1]["digest"]

    # Jobs and the parties. One job runs per contract at a time, and a feature party records its
    # key with a job only while it runs, so under the active contract each job is used while it
    # runs, then finished: a training ran for job "run" (its label party reports it finished);
    # the paste supplier holds jobs prepared by the label party for reading, deleting, a
    # forward, and a backward (its forward is pending). Job "running" is left running (the
    # paste supplier's prepare endpoint and the registry's job endpoints use it). Job "new"
    # runs under the third contract, for the training endpoint. Under the second contract one
    # finished job without a model version.
    pcb, paste = w.parties.pcb, w.parties.paste
    for key in ("read", "del", "fwd", "bwd", "run", "running"):
        ids[key] = await new_job(registry, orgs, ids["active"])
        if key == "run":
            operator = bearer(await w.token(As(PCB, PCB_URL, "jobs:run")))
            spec = training_spec(ids["run"], ids["active"], PLAIN_DOC)
            _ok(await pcb.post("/v1/trainings", json=spec, headers=operator), 202)
            await w.training_done("run")
            assert w.parties.pcb_app.state.runs.runs[ids["run"]].status.state == "finished"
            await _finished(registry, orgs, ids["run"])
        elif key != "running":
            label = bearer(await w.token(label_caller(key)))
            r = await paste.put(f"/v1/jobs/{ids[key]}", json=prepare_body(ids[key]), headers=label)
            _ok(r, 201)
            await _finish(registry, orgs, ids[key])
    # The paste supplier serves evaluation forwards (embed, mix) of a finished job only for the
    # contract's deployed model: deploy job "read"'s.
    held = w.parties.paste_app.state.party.jobs[ids["read"]].segment_digest()
    await _model_version(registry, orgs, ids["active"], ids["read"], deploy=True, paste=held)
    ids["new"] = await new_job(registry, orgs, ids["trainings"])
    ids["derived"] = await active_contract(registry, orgs, PLAIN_DOC)
    ids["derived job"] = await new_job(registry, orgs, ids["derived"])
    # A job the paste supplier prepared in ckks mode: it generated keys and recorded their
    # fingerprint with the job at the registry (the job runs on).
    ids["ckks job"] = await new_job(registry, orgs, ids["ckks"])
    label = bearer(await w.token(label_caller("ckks job", contract="ckks")))
    body = prepare_body(ids["ckks job"], mode="ckks")
    _ok(await paste.put(f"/v1/jobs/{ids['ckks job']}", json=body, headers=label), 201)
    ids["done"] = await new_job(registry, orgs, ids["jobs"])
    await _finish(registry, orgs, ids["done"])
    w.bodies["model version"] = await model_version_body(registry, orgs.auth(PCB), ids["done"])
    # Model versions of another contract: 1 deployed then retired, 2 deployed, 3 trained.
    ids["models"] = await active_contract(registry, orgs)
    ids["three"] = "3"
    await _model_versions(registry, orgs, ids["models"])
    # Contracts the PCB maker is not the label party of: the paste supplier is, and the PCB
    # maker its feature party; or the outsider is, and the PCB maker no party at all.
    swapped = with_parties(document(), pcb=PASTE, paste=PCB)
    ids["swapped"] = await active_contract(registry, orgs, swapped)
    ids["swapped job"] = await new_job(registry, orgs, ids["swapped"], label=PASTE)
    outside = with_parties(document(), pcb=OUTSIDER)
    ids["outside"] = await active_contract(registry, orgs, outside)
    ids["outside job"] = await new_job(registry, orgs, ids["outside"], label=OUTSIDER)

    label = bearer(await w.token(label_caller("read")))
    r = await paste.post(f"/v1/jobs/{ids['read']}/checkpoints", json={"tag": "t0"}, headers=label)
    _ok(r)
    label = {**bearer(await w.token(label_caller("bwd"))), **TENSOR_HEADERS}
    r = await paste.post(
        f"/v1/jobs/{ids['bwd']}/forward", content=forward_frame(ids["bwd"], 0), headers=label
    )
    assert r.status_code == 200, r.text

    # Tokens of a private_key_jwt client spend an assertion (a row): mint them before the copy.
    await w.token(As(KEYED, scope="jobs:run"))
    w.signing_key = registry_key(app)
    w.pristine = w.dump()
    return w


def label_caller(
    job_key: str, org: str = PCB, scope: str = "party:call", contract: str = "active"
) -> As:
    """The label party calling the paste supplier about a job of a contract (the active one)."""
    return As(org, PASTE_URL, scope, contract=contract, job=job_key)


async def _finish(registry: httpx.AsyncClient, orgs: Orgs, job_id: str) -> None:
    r = await registry.post(
        f"/v1/jobs/{job_id}/progress", json={"status": "finished"}, headers=orgs.auth(PCB)
    )
    assert r.status_code == 200, r.text


async def _model_version(
    registry: httpx.AsyncClient,
    orgs: Orgs,
    contract_id: str,
    job_id: str,
    *,
    deploy: bool,
    paste: str | None = None,
) -> None:
    """Record a model version for a finished job (``paste``: the paste supplier's segment
    digest, which it serves only when recorded); ``deploy``: approved by the contract's
    approvers (the PCB maker and the owner), so deployed."""
    model = await model_version_body(registry, orgs.auth(PCB), job_id)
    if paste is not None:
        model["segment_digests"]["paste"] = paste
    r = await registry.post(f"/v1/jobs/{job_id}/model-versions", json=model, headers=orgs.auth(PCB))
    version = _ok(r, 201)["version"]
    url = f"/v1/contracts/{contract_id}/model-versions/{version}/approvals"
    for approver, org in (("pcb", PCB), ("oem", OWNER)) if deploy else ():
        _ok(await registry.post(url, json={"approver": approver}, headers=orgs.auth(org)))


async def _model_versions(registry: httpx.AsyncClient, orgs: Orgs, contract_id: str) -> None:
    """Three model versions under a contract, the first two deployed in turn: version 2
    deployed, 1 retired, 3 trained."""
    for version in (1, 2, 3):
        job_id = await new_job(registry, orgs, contract_id)
        await _finish(registry, orgs, job_id)
        await _model_version(registry, orgs, contract_id, job_id, deploy=version < 3)


async def _finished(registry: httpx.AsyncClient, orgs: Orgs, job_id: str) -> None:
    """Finish a job at the registry unless its label party already reported it final."""
    r = await registry.get(f"/v1/jobs/{job_id}", headers=orgs.auth(PCB))
    if _ok(r)["status"] not in ("finished", "failed", "cancelled"):
        await _finish(registry, orgs, job_id)


def _expire_initial(engine: Engine, token: str) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            select(InitialAccessToken.id).where(
                InitialAccessToken.token_hash == token_digest(token)
            )
        ).scalar_one()
    _expire(engine, InitialAccessToken, found)


def client_assertion(client_id: str, key: ECKey) -> str:
    """An RFC 7523 client assertion for the token endpoint, signed with ``key``."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid or "k"}, claims, key)
