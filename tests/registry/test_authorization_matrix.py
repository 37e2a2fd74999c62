"""The authorization matrix: every registry and party endpoint against every way of calling it
without the right to.

Each cell sends one plausible request (a body and path the endpoint accepts) with credentials
that are wrong in one way only, and checks the refusal (401 for authentication, 403 for
authorization, with the ``{code, message, detail}`` body and the right ``code``) and that nothing
changed: the registry's tables are identical and the parties hold the same jobs, weights, runs
and files. Each endpoint's control cell sends the same request with valid credentials and
succeeds, so every refusal is the credentials' doing. The endpoints come from the apps' OpenAPI
documents: a new endpoint without a row here fails :func:`test_every_endpoint_is_in_the_matrix`.

Runs on SQLite and PostgreSQL; one world per backend (``matrix_world.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from joserfc.jwk import ECKey

from services.protocol.errors import ErrorBody
from services.registry import migrate
from services.registry.app import create_app
from services.registry.credentials import ADMIN_PREFIX, INITIAL_ACCESS_PREFIX, INVITATION_PREFIX
from services.registry.db import dispose
from services.registry.models import utcnow
from services.registry.oauth.scopes import CLIENT_SCOPES, ORG_ADMIN
from services.registry.store.admins import bootstrap_admin
from tests.registry.conftest import BACKENDS, ISSUER, _reset_postgres, registry_settings
from tests.registry.contract_util import OWNER, PASTE, PCB, document
from tests.registry.matrix_world import (
    ADMIN,
    KEYED,
    OUTSIDER,
    PLAIN_DOC,
    TENSOR_HEADERS,
    As,
    Dump,
    MatrixWorld,
    backward_frame,
    build_world,
    client_assertion,
    embed_frame,
    forward_frame,
    label_caller,
    mix_frame,
    prepare_body,
)
from tests.registry.oauth_util import Registered
from tests.registry.util import bearer
from tests.registry.world import PASTE_URL, PCB_URL, training_spec

pytestmark = pytest.mark.asyncio(loop_scope="module")

Service = Literal["registry", "paste", "pcb"]
Guard = Literal["admin", "org", "label", "operator", "client", "initial", "invitation"]
Body = dict[str, Any]
"""Keyword arguments of ``httpx.AsyncClient.request`` besides method, URL and auth headers."""

# --- conditions ---------------------------------------------------------------------------------

NO_TOKEN = "no token"
FORGED = ("expired", "wrong audience", "wrong issuer", "bad signature", "alg none")
REVOKED, SUSPENDED = "revoked client", "suspended org"
REVOKED_TOKEN = "revoked token"
TOKEN_CONDITIONS = (NO_TOKEN, *FORGED, REVOKED_TOKEN, REVOKED, SUSPENDED)
UNKNOWN_ADMIN = "unknown admin token"
OPERATOR_REFUSED = "operator admin token"
ORG_TOKEN = "org token on an operator endpoint"
NO_SCOPE = "token without the scope"
OUTSIDE = "org not in the contract"
OTHER_ORG = "another organisation"
WRONG_ROLE = "party in the wrong role"
OTHER_JOB = "token for another job"
TERMINATED = "terminated contract"
CLIENT_CONDITIONS = (
    "no client authentication",
    "wrong secret",
    "unknown client",
    "assertion signed by another key",
    REVOKED,
    SUSPENDED,
)
INITIAL_CONDITIONS = (
    NO_TOKEN,
    "unknown initial token",
    "used initial token",
    "expired initial token",
    "access token instead",
    SUSPENDED,
)
INVITATION_CONDITIONS = ("unknown invitation", "used invitation", "expired invitation")
CONTROL = "valid (control)"
ASSERTION_CONTROL = "valid assertion (control)"


# --- endpoints ----------------------------------------------------------------------------------

BodyFn = Callable[[MatrixWorld], Body]


def js(value: Callable[[MatrixWorld], Any]) -> BodyFn:
    """A JSON body computed from the world."""
    return lambda w: {"json": value(w)}


def frame(make: Callable[[str], bytes], job: str) -> BodyFn:
    """A tensor frame about a world job."""
    return lambda w: {"content": make(w.ids[job]), "headers": TENSOR_HEADERS}


def octets(data: bytes) -> BodyFn:
    """A raw binary body (application/octet-stream)."""
    return lambda _: {"content": data, "headers": {"content-type": "application/octet-stream"}}


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: where it is, who may call it, a request it accepts, and which other
    callers stand in for the conditions that need one."""

    service: Service
    method: str
    route: str
    """The path as in the OpenAPI document."""
    guard: Guard
    caller: As = As(ADMIN)
    params: Mapping[str, str] = field(default_factory=dict)
    """Path parameter -> world key."""
    body: BodyFn | None = None
    ok: int = 200
    outsider: As | None = None
    """The caller of "org not in the contract" (contract endpoints) or "another organisation"
    (an organisation's own resources)."""
    wrong_role: As | None = None
    no_scope: As | None = None
    other_job: As | None = None
    terminates: str | None = None
    """The world contract a "terminated contract" cell terminates."""
    bodies: Mapping[str, BodyFn] = field(default_factory=dict)
    """Conditions brought about by the request body (valid credentials), e.g. a training spec
    naming a contract this party is no label party of."""
    operator_refused: bool = False
    """Operators may not call it (a client's rotation: the new secret would go to them)."""

    @property
    def name(self) -> str:
        return f"{self.service} {self.method} {self.route}"

    @property
    def contract_scoped(self) -> bool:
        """About a contract or one of its jobs (at the registry or a party)."""
        return self.route.startswith(("/v1/contracts/{", "/v1/jobs"))

    def path(self, w: MatrixWorld) -> str:
        return self.route.format(**{p: w.ids[k] for p, k in self.params.items()})

    def conditions(self) -> list[str]:
        if self.guard == "client":
            return [*CLIENT_CONDITIONS, CONTROL, ASSERTION_CONTROL]
        if self.guard == "initial":
            return [*INITIAL_CONDITIONS, CONTROL]
        if self.guard == "invitation":
            return [*INVITATION_CONDITIONS, CONTROL]
        found = [*TOKEN_CONDITIONS]
        if self.service == "registry":
            found.append(UNKNOWN_ADMIN)
        if self.guard == "admin":
            found.append(ORG_TOKEN)
        if self.operator_refused:
            found.append(OPERATOR_REFUSED)
        own = not self.contract_scoped
        extra = (
            (NO_SCOPE, self.no_scope),
            (OTHER_ORG, self.outsider if own else None),
            (OUTSIDE, self.bodies.get(OUTSIDE) or (None if own else self.outsider)),
            (WRONG_ROLE, self.wrong_role or self.bodies.get(WRONG_ROLE)),
            (OTHER_JOB, self.other_job or self.bodies.get(OTHER_JOB)),
            (TERMINATED, self.terminates),
        )
        return [*found, *(name for name, value in extra if value is not None), CONTROL]


def owner_only(
    route: str, contract: str, body: BodyFn | None = None, ok: int = 200, method: str = "POST"
) -> Endpoint:
    """A contract endpoint for the owner organisation with scope contracts:write."""
    return Endpoint(
        "registry",
        method,
        route,
        "org",
        As(OWNER),
        {"contract_id": contract},
        body,
        ok,
        outsider=As(OUTSIDER),
        wrong_role=As(PCB),
        no_scope=As(OWNER, scope="contracts:sign jobs:run reports:read"),
        terminates=contract,
    )


MANAGER = As(PCB, scope=ORG_ADMIN)
"""The PCB maker's admin: its first client, with a token asking for ``org:admin``."""


def manage(
    method: str,
    route: str,
    params: Mapping[str, str],
    body: BodyFn | None = None,
    ok: int = 200,
    *,
    operator_refused: bool = False,
) -> Endpoint:
    """Client management of the PCB maker's organisation: its admin (scope ``org:admin``)."""
    return Endpoint(
        "registry",
        method,
        route,
        "org",
        MANAGER,
        params,
        body,
        ok,
        outsider=As(OUTSIDER, scope=ORG_ADMIN),
        no_scope=As(PCB),
        operator_refused=operator_refused,
    )


def member_read(route: str, params: Mapping[str, str], caller: str = PCB) -> Endpoint:
    """A read of a contract (or its job) for its owner, parties and operators."""
    return Endpoint("registry", "GET", route, "org", As(caller), params, outsider=As(OUTSIDER))


def own_org(method: str, route: str, params: Mapping[str, str]) -> Endpoint:
    """An organisation's own resource (the PCB maker's)."""
    return Endpoint("registry", method, route, "org", As(PCB), params, outsider=As(OUTSIDER))


def for_label(
    method: str,
    route: str,
    job: str,
    body: BodyFn | None,
    ok: int = 200,
    other: str = "running",
    contract: str = "active",
) -> Endpoint:
    """A feature-party endpoint for the contract's label party, about a job of ``contract``
    (``other``: another job, of the active contract, for a token about it)."""
    return Endpoint(
        "paste",
        method,
        route,
        "label",
        label_caller(job, contract=contract),
        {"job_id": job},
        body,
        ok,
        outsider=label_caller(job, OUTSIDER, contract=contract),
        wrong_role=label_caller(job, PASTE, contract=contract),
        no_scope=label_caller(job, scope="jobs:run", contract=contract),
        other_job=As(PCB, PASTE_URL, "party:call", "active", other),
        terminates=contract,
    )


async def _token_form(w: MatrixWorld, who: Registered) -> dict[str, str]:
    return {"grant_type": "client_credentials", "scope": "jobs:run"}


async def _introspect_form(w: MatrixWorld, who: Registered) -> dict[str, str]:
    # a buyer's token for the PCB maker's party service (whose client introspects it)
    return {"token": await w.token(As(OWNER, PCB_URL, "predict:call", "active"))}


async def _revoke_form(w: MatrixWorld, who: Registered) -> dict[str, str]:
    org = next(name for name, c in w.orgs.clients.items() if c == who)
    return {"token": await w.token(As(org, scope="jobs:run"))}


CLIENT_FORMS: dict[str, Callable[[MatrixWorld, Registered], Awaitable[dict[str, str]]]] = {
    "/oauth/token": _token_form,
    "/oauth/introspect": _introspect_form,
    "/oauth/revoke": _revoke_form,
}

TRAINED = {"/v1/trainings": "new", "/v1/contracts/{contract_id}/trainings": "derived job"}
"""Training endpoints and the world job their control trains."""
SIGNING = js(lambda w: {"party": "pcb", "decision": "accept", "digest": w.ids["proposed digest"]})
MODEL = js(lambda w: w.bodies["model version"])
JOBS_RUN = {"scope": "jobs:run"}
REASON = js(lambda _: {"reason": "matrix"})
DOCUMENT = js(lambda _: document())


def usage_batch(w: MatrixWorld) -> dict[str, Any]:
    """One usage event of model version 1 of the "models" contract, served now."""
    event = {
        "event_id": "matrix-usage-0001",
        "contract_id": w.ids["models"],
        "contract_version": 1,
        "model_version": 1,
        "caller_org": w.ids["owner"],
        "count": 1,
        "timestamp": utcnow().isoformat(),
    }
    return {"events": [event]}


def observation_batch(w: MatrixWorld) -> dict[str, Any]:
    """The paste supplier's record of serving a call of the deployed job "read", now."""
    seen = {
        "observation_id": "matrix-observation-0001",
        "event_id": "",
        "contract_id": w.ids["active"],
        "job_id": w.ids["read"],
        "rows": 3,
        "timestamp": utcnow().isoformat(),
    }
    return {"observations": [seen]}


def spec(job: str, contract: str) -> BodyFn:
    """The PCB maker's training request for a world job under a world contract."""
    return js(lambda w: training_spec(w.ids[job], w.ids[contract], PLAIN_DOC))


GRANT_ROUTE = "/v1/organisations/{org_id}/grants/{grant}"
GRANT_PARAMS = {"org_id": "outsider", "grant": "reports grant"}
SPARE = {"client_id": "pcb-spare"}
PCB_ORG = {"org_id": "pcb"}
RESOURCE = js(lambda _: {"resource": "http://spare.test"})
MANAGED: list[tuple[str, str, Mapping[str, str], BodyFn | None, int, bool]] = [
    ("GET", "/v1/organisations/{org_id}/clients", {"org_id": "pcb"}, None, 200, False),
    (
        "POST",
        "/v1/organisations/{org_id}/initial-access-tokens",
        {"org_id": "pcb"},
        None,
        201,
        False,
    ),
    ("GET", "/v1/oauth/clients/{client_id}", SPARE, None, 200, False),
    ("POST", "/v1/oauth/clients/{client_id}/rotate", SPARE, None, 200, True),
    ("POST", "/v1/oauth/clients/{client_id}/revoke", SPARE, None, 200, False),
    ("POST", "/v1/oauth/clients/{client_id}/resources", SPARE, RESOURCE, 200, True),
]
"""Client-management routes: method, route, path parameters, body, success status, whether
operators are refused."""

ENDPOINTS: list[Endpoint] = [
    # Operators only: the bootstrap admin's token.
    Endpoint("registry", "POST", "/v1/invitations", "admin", body=js(lambda _: {}), ok=201),
    Endpoint("registry", "GET", "/v1/organisations", "admin"),
    Endpoint(
        "registry",
        "POST",
        "/v1/organisations/{org_id}/approve",
        "admin",
        params={"org_id": "applicant"},
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/organisations/{org_id}/suspend",
        "admin",
        params={"org_id": "outsider"},
        body=REASON,
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/organisations/{org_id}/reinstate",
        "admin",
        params={"org_id": "dormant"},
    ),
    Endpoint("registry", "POST", "/v1/oauth/signing-keys/rotate", "admin"),
    Endpoint("registry", "GET", "/v1/audit", "admin"),
    Endpoint("registry", "POST", "/v1/contracts/expire-due", "admin"),
    *(
        Endpoint("registry", method, GRANT_ROUTE, "admin", params=GRANT_PARAMS)
        for method in ("PUT", "DELETE")
    ),
    # An organisation's own resources; its clients are managed by its admin (org:admin).
    own_org("GET", "/v1/organisations/{org_id}", {"org_id": "pcb"}),
    *(manage(m, r, p, b, ok, operator_refused=refused) for m, r, p, b, ok, refused in MANAGED),
    # Verifying the audit log tells its size: operators and granted organisations (the owner).
    Endpoint(
        "registry",
        "GET",
        "/v1/audit/verify",
        "org",
        As(OWNER),
        outsider=As(OUTSIDER),
        no_scope=As(OWNER, scope="contracts:write"),
    ),
    # Contracts.
    Endpoint(
        "registry",
        "POST",
        "/v1/contracts",
        "org",
        As(OWNER),
        body=DOCUMENT,
        ok=201,
        outsider=As(OUTSIDER),
        wrong_role=As(PCB),
        no_scope=As(OWNER, scope="contracts:sign"),
    ),
    Endpoint("registry", "GET", "/v1/contracts", "org", As(PASTE)),
    member_read("/v1/contracts/{contract_id}", {"contract_id": "active"}),
    member_read(
        "/v1/contracts/{contract_id}/versions/{version}/document",
        {"contract_id": "active", "version": "one"},
    ),
    member_read("/v1/contracts/{contract_id}/check", {"contract_id": "active"}, caller=PASTE),
    owner_only("/v1/contracts/{contract_id}/draft", "draft", DOCUMENT, method="PUT"),
    owner_only("/v1/contracts/{contract_id}/propose", "draft"),
    Endpoint(
        "registry",
        "POST",
        "/v1/contracts/{contract_id}/sign",
        "org",
        As(PCB),
        {"contract_id": "proposed"},
        SIGNING,
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:write"),
        terminates="proposed",
    ),
    owner_only("/v1/contracts/{contract_id}/suspend", "active", REASON),
    owner_only("/v1/contracts/{contract_id}/reinstate", "suspended"),
    owner_only("/v1/contracts/{contract_id}/terminate", "active", REASON),
    owner_only("/v1/contracts/{contract_id}/amendments", "active", DOCUMENT, ok=201),
    # Jobs and model versions.
    Endpoint(
        "registry",
        "POST",
        "/v1/jobs",
        "org",
        As(PCB),
        body=js(lambda w: {"contract_id": w.ids["jobs"]}),
        ok=201,
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:sign"),
        terminates="jobs",
    ),
    member_read("/v1/jobs/{job_id}", {"job_id": "running"}),
    Endpoint("registry", "GET", "/v1/jobs", "org", As(PASTE)),
    Endpoint(
        "registry",
        "POST",
        "/v1/jobs/{job_id}/cancel",
        "org",
        As(PCB),
        {"job_id": "running"},
        js(lambda _: {"reason": "matrix"}),
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:sign"),
        terminates="active",
    ),
    Endpoint(
        "registry",
        "PUT",
        "/v1/jobs/{job_id}/keys/{party}",
        "org",
        As(PASTE),
        {"job_id": "running", "party": "paste party"},
        js(lambda _: {"fingerprint": "0" * 64}),
        outsider=As(OUTSIDER),
        wrong_role=As(PCB),
        no_scope=As(PASTE, scope="contracts:sign jobs:run"),
        terminates="active",
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/jobs/{job_id}/progress",
        "org",
        As(PCB),
        {"job_id": "running"},
        js(lambda _: {"progress": 0.5}),
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:sign"),
        terminates="active",
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/jobs/{job_id}/model-versions",
        "org",
        As(PCB),
        {"job_id": "done"},
        MODEL,
        201,
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:sign"),
        terminates="jobs",
    ),
    Endpoint(
        "registry",
        "PUT",
        "/v1/jobs/{job_id}/quality",
        "org",
        As(PCB),
        {"job_id": "read"},
        js(lambda _: {"status": "ok"}),
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:sign"),
        terminates="active",
    ),
    member_read("/v1/contracts/{contract_id}/model-versions", {"contract_id": "jobs"}),
    # Deployment: the contract's approvers (pcb and the owner, oem) only.
    member_read(
        "/v1/contracts/{contract_id}/model-versions/{version}",
        {"contract_id": "models", "version": "one"},
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/contracts/{contract_id}/model-versions/{version}/approvals",
        "org",
        As(PCB),
        {"contract_id": "models", "version": "three"},
        js(lambda _: {"approver": "pcb"}),
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(PCB, scope="contracts:write jobs:run"),
        terminates="models",
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/contracts/{contract_id}/deployment/rollback",
        "org",
        As(OWNER),
        {"contract_id": "models"},
        outsider=As(OUTSIDER),
        wrong_role=As(PASTE),
        no_scope=As(OWNER, scope="contracts:write jobs:run"),
        terminates="models",
    ),
    # Usage (the label party; per-event refusals are answered 200) and revenue reports (every
    # organisation gets the rows it may see: an outsider an empty report, not a 403).
    Endpoint(
        "registry",
        "POST",
        "/v1/usage",
        "org",
        As(PCB),
        body=js(usage_batch),
        no_scope=As(PCB, scope="contracts:sign jobs:run reports:read"),
    ),
    Endpoint(
        "registry",
        "GET",
        "/v1/reports/revenue",
        "org",
        As(OWNER),
        body=lambda _: {"params": {"period": "2026-11"}},
        no_scope=As(OWNER, scope="contracts:write jobs:run usage:write"),
    ),
    # The feature party's own serving records (per-record refusals are answered 200); what a
    # buyer is billed for and the reconciliation (rows the caller may see, empty otherwise).
    Endpoint(
        "registry",
        "POST",
        "/v1/usage/observations",
        "org",
        As(PASTE),
        body=js(observation_batch),
        no_scope=As(PASTE, scope="contracts:sign jobs:run reports:read party:call"),
    ),
    *(
        Endpoint(
            "registry",
            "GET",
            route,
            "org",
            As(OWNER),
            body=lambda _: {"params": {"period": "2026-11"}},
            no_scope=As(OWNER, scope="contracts:write jobs:run usage:write"),
        )
        for route in ("/v1/usage/events", "/v1/usage/reconciliation")
    ),
    # The revocation feed party services subscribe to (their clients: scope party:call).
    Endpoint(
        "registry",
        "GET",
        "/v1/revocations",
        "org",
        As(PASTE),
        no_scope=As(PASTE, scope="contracts:sign jobs:run reports:read"),
    ),
    # OAuth endpoints with client authentication, registration, applications.
    *(Endpoint("registry", "POST", route, "client") for route in CLIENT_FORMS),
    Endpoint(
        "registry",
        "POST",
        "/v1/oauth/register",
        "initial",
        body=js(lambda _: {"token_endpoint_auth_method": "client_secret_basic", **JOBS_RUN}),
        ok=201,
    ),
    Endpoint(
        "registry",
        "POST",
        "/v1/organisations/applications",
        "invitation",
        ok=201,
    ),
    # People (issue 19): an organisation's admin invites; the invitation code is the credential
    # of its acceptance; members list their organisation's people.
    manage(
        "POST",
        "/v1/organisations/{org_id}/user-invitations",
        PCB_ORG,
        js(lambda _: {"email": "new-person@pcb.example", "role": "viewer"}),
        201,
    ),
    Endpoint("registry", "POST", "/v1/user-invitations/accept", "invitation", ok=201),
    own_org("GET", "/v1/organisations/{org_id}/users", PCB_ORG),
    # Webhooks (issue 18): the organisation's admin sets and removes it, its members read it.
    manage(
        "PUT",
        "/v1/organisations/{org_id}/webhook",
        PCB_ORG,
        js(lambda _: {"url": "https://events.pcb.example/splice"}),
    ),
    own_org("GET", "/v1/organisations/{org_id}/webhook", PCB_ORG),
    manage("DELETE", "/v1/organisations/{org_id}/webhook", PCB_ORG, None, 204),
    Endpoint(
        "registry",
        "GET",
        "/v1/audit/organisation",
        "org",
        MANAGER,
        no_scope=As(PCB),
        operator_refused=True,
    ),
    # The feature party (paste supplier): the contract's label party only.
    for_label(
        "PUT",
        "/v1/jobs/{job_id}",
        "running",
        js(lambda w: prepare_body(w.ids["running"])),
        201,
        other="read",
    ),
    for_label("GET", "/v1/jobs/{job_id}", "read", None),
    for_label("DELETE", "/v1/jobs/{job_id}", "del", None, 204),
    for_label(
        "POST", "/v1/jobs/{job_id}/forward", "fwd", frame(lambda j: forward_frame(j, 0), "fwd")
    ),
    for_label(
        "POST", "/v1/jobs/{job_id}/backward", "bwd", frame(lambda j: backward_frame(j, 0), "bwd")
    ),
    for_label("POST", "/v1/jobs/{job_id}/embed", "read", frame(embed_frame, "read")),
    for_label("GET", "/v1/jobs/{job_id}/keys", "ckks job", None, contract="ckks"),
    # A real mix needs the label party's ciphertexts: the control shows that valid credentials
    # reach the handler, which answers that a plain job has nothing to mix.
    for_label("POST", "/v1/jobs/{job_id}/mix", "read", frame(mix_frame, "read"), ok=400),
    # Likewise a PSI message to a job aligned by key list: credentials reach the handler (400).
    for_label("POST", "/v1/jobs/{job_id}/psi", "read", octets(b"SPSI\x01"), ok=400),
    # A serving round's garbage frame: credentials reach the handler (400), nothing changes.
    for_label("POST", "/v1/jobs/{job_id}/serving-psi", "read", octets(b"SPSI\x02"), ok=400),
    for_label("GET", "/v1/jobs/{job_id}/drift", "read", None),
    # A tree request to a job that is not a tree job: credentials reach the handler (400
    # family_not_implemented), nothing changes.
    replace(
        for_label("POST", "/v1/jobs/{job_id}/trees/{kind}", "read", octets(b"SGBT"), ok=400),
        params={"job_id": "read", "kind": "tree request"},
    ),
    for_label("POST", "/v1/jobs/{job_id}/checkpoints", "read", js(lambda _: {"tag": "c1"})),
    for_label("POST", "/v1/jobs/{job_id}/restore", "read", js(lambda _: {"tag": "t0"})),
    # The label party (PCB maker): its own organisation's operators only.
    Endpoint(
        "pcb",
        "POST",
        "/v1/trainings",
        "operator",
        As(PCB, PCB_URL, "jobs:run"),
        body=spec("new", "trainings"),
        ok=202,
        outsider=As(PASTE, PCB_URL, "jobs:run"),
        no_scope=As(PCB, PCB_URL, "party:call"),
        terminates="trainings",
        bodies={
            OUTSIDE: spec("outside job", "outside"),
            WRONG_ROLE: spec("swapped job", "swapped"),
            OTHER_JOB: spec("done", "trainings"),
        },
    ),
    Endpoint(
        "pcb",
        "POST",
        "/v1/contracts/{contract_id}/trainings",
        "operator",
        As(PCB, PCB_URL, "jobs:run"),
        {"contract_id": "derived"},
        body=js(lambda w: {"job_id": w.ids["derived job"], "feature_urls": {"paste": PASTE_URL}}),
        ok=202,
        outsider=As(PASTE, PCB_URL, "jobs:run"),
        no_scope=As(PCB, PCB_URL, "party:call"),
        terminates="derived",
        bodies={OTHER_JOB: js(lambda w: {"job_id": w.ids["done"]})},
    ),
    # Retraining: the contract "derived" states no retraining policy, so valid credentials reach
    # the policy check (409 retraining_not_allowed) and nothing starts.
    Endpoint(
        "pcb",
        "POST",
        "/v1/contracts/{contract_id}/retrainings",
        "operator",
        As(PCB, PCB_URL, "jobs:run"),
        {"contract_id": "derived"},
        body=js(lambda _: {"feature_urls": {"paste": PASTE_URL}}),
        ok=409,
        outsider=As(PASTE, PCB_URL, "jobs:run"),
        no_scope=As(PCB, PCB_URL, "party:call"),
        terminates="derived",
    ),
    Endpoint(
        "pcb",
        "GET",
        "/v1/trainings/{job_id}",
        "operator",
        As(PCB, PCB_URL, "jobs:run"),
        {"job_id": "run"},
        outsider=As(PASTE, PCB_URL, "jobs:run"),
        no_scope=As(PCB, PCB_URL, "party:call"),
    ),
    # Every party's table versions: its own organisation's operators only. The controls send a
    # version that is refused (422): valid credentials reach the checks, nothing is loaded.
    Endpoint(
        "paste",
        "GET",
        "/v1/table",
        "operator",
        As(PASTE, PASTE_URL, "jobs:run"),
        outsider=As(PCB, PASTE_URL, "jobs:run"),
        no_scope=As(PASTE, PASTE_URL, "party:call"),
    ),
    Endpoint(
        "paste",
        "POST",
        "/v1/table/rows",
        "operator",
        As(PASTE, PASTE_URL, "jobs:run"),
        body=js(lambda _: {"rows": [{"no_such_column": 1}]}),
        ok=422,
        outsider=As(PCB, PASTE_URL, "jobs:run"),
        no_scope=As(PASTE, PASTE_URL, "party:call"),
    ),
    Endpoint(
        "paste",
        "POST",
        "/v1/table/versions",
        "operator",
        As(PASTE, PASTE_URL, "jobs:run"),
        body=lambda _: {"content": b"a,b\n1,2\n", "headers": {"content-type": "text/csv"}},
        ok=422,
        outsider=As(PCB, PASTE_URL, "jobs:run"),
        no_scope=As(PASTE, PASTE_URL, "party:call"),
    ),
    # Outcomes and live quality: the callers of predictions; the deployed model's job is not
    # held by the PCB maker here, so valid credentials reach the model lookup (409).
    *(
        Endpoint(
            "pcb",
            method,
            route,
            "org",
            As(OWNER, PCB_URL, "predict:call", "active"),
            {"contract_id": "active"},
            body,
            ok=409,
            outsider=As(OUTSIDER, PCB_URL, "predict:call", "active"),
            no_scope=As(OWNER, PCB_URL, "party:call", "active"),
            other_job=As(OWNER, PCB_URL, "predict:call", "jobs"),
            terminates="active",
        )
        for method, route, body in (
            (
                "POST",
                "/v1/contracts/{contract_id}/outcomes",
                js(lambda _: {"outcomes": [{"prediction_id": "e:0", "outcome": "1"}]}),
            ),
            ("GET", "/v1/contracts/{contract_id}/quality", None),
        )
    ),
    # Shadow scoring of a challenger: the contract's label party only (scope predict:call, a
    # token naming the contract); the deployed model is not held here, so valid credentials
    # reach the model lookup (409) and nothing is metered.
    Endpoint(
        "pcb",
        "POST",
        "/v1/contracts/{contract_id}/challengers/{job_id}/shadow",
        "org",
        As(PCB, PCB_URL, "predict:call", "active"),
        {"contract_id": "active", "job_id": "run"},
        js(lambda _: {"rows": [{"line": "L1", "paste_lot_id": "PL-1"}], "row_ids": ["b1"]}),
        ok=409,
        outsider=As(OUTSIDER, PCB_URL, "predict:call", "active"),
        no_scope=As(PCB, PCB_URL, "party:call", "active"),
        other_job=As(PCB, PCB_URL, "predict:call", "jobs"),
        terminates="active",
    ),
    # The label party's predictions: the contract's owner and parties (scope predict:call, a
    # token naming the contract). The active contract's deployed model is job "read"'s, which
    # the PCB maker never trained: valid credentials reach the model lookup (409).
    Endpoint(
        "pcb",
        "POST",
        "/v1/contracts/{contract_id}/predict",
        "org",
        As(OWNER, PCB_URL, "predict:call", "active"),
        {"contract_id": "active"},
        js(lambda _: {"rows": [{"line": "L1", "paste_lot_id": "PL-000001"}]}),
        ok=409,
        outsider=As(OUTSIDER, PCB_URL, "predict:call", "active"),
        no_scope=As(OWNER, PCB_URL, "party:call", "active"),
        other_job=As(OWNER, PCB_URL, "predict:call", "jobs"),
        terminates="active",
    ),
]

PUBLIC: dict[tuple[Service, str, str], str] = {
    ("registry", "GET", "/v1/health"): "liveness for load balancers; names no caller or data",
    ("registry", "GET", "/.well-known/jwks.json"): "public keys every verifier must fetch",
    ("registry", "GET", "/.well-known/oauth-authorization-server"): "RFC 8414 metadata",
    ("paste", "GET", "/v1/health"): "liveness; job counts only",
    ("pcb", "GET", "/v1/health"): "liveness; job counts only",
}
"""Endpoints that take no credentials, and why. (The OAuth token, introspection and revocation
endpoints, registration and applications take other credentials: they are in the matrix with
conditions of their own.)"""

CELLS = [(e, c) for e in ENDPOINTS for c in e.conditions()]


# --- the world ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def matrix_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated database on each backend, for this module."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _reset_postgres(url)
    migrate.upgrade(url)
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    matrix_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MatrixWorld]:
    """The matrix's world on one backend (see ``matrix_world.py``)."""
    app = create_app(registry_settings(matrix_url))
    with app.state.sessions() as session:
        admin_token = bootstrap_admin(session).token
        session.commit()
    tmp: Path = tmp_path_factory.mktemp("parties")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        w = await build_world(app, c, admin_token, matrix_url, tmp)
        try:
            yield w
        finally:
            await w.parties.aclose()
            dispose(w.engine)
            dispose(app.state.engine)


# --- one cell -----------------------------------------------------------------------------------


def client_for(w: MatrixWorld, service: Service) -> httpx.AsyncClient:
    return {"registry": w.registry, "paste": w.parties.paste, "pcb": w.parties.pcb}[service]


def base_caller(e: Endpoint) -> As:
    """Whose valid token the forged, revoked and suspended conditions start from (an
    organisation's for operator endpoints: it fails authentication before authorization)."""
    return As(OWNER) if e.caller.org == ADMIN else e.caller


async def bearer_request(w: MatrixWorld, e: Endpoint, condition: str) -> Body:
    """The request of a bearer-token endpoint, with the condition's Authorization header."""
    make = e.bodies.get(condition, e.body)
    request: Body = make(w) if make is not None else {}
    headers: dict[str, str] = dict(request.pop("headers", {}))
    standin = {
        NO_SCOPE: e.no_scope,
        OUTSIDE: e.outsider,
        OTHER_ORG: e.outsider,
        WRONG_ROLE: e.wrong_role,
        OTHER_JOB: e.other_job,
        ORG_TOKEN: As(OWNER),
    }
    if condition in FORGED:
        headers |= bearer(w.forge(await w.token(base_caller(e)), condition))
    elif condition in (REVOKED_TOKEN, REVOKED, SUSPENDED):
        headers |= bearer(await w.token(base_caller(e)))
    elif condition == UNKNOWN_ADMIN:
        headers |= bearer(ADMIN_PREFIX + secrets.token_urlsafe(32))
    elif condition == OPERATOR_REFUSED:
        headers |= bearer(w.admin_token)
    elif condition in standin and condition not in e.bodies:
        who = standin[condition]
        assert who is not None
        headers |= bearer(await w.token(who))
    elif condition in (TERMINATED, CONTROL, *e.bodies):
        headers |= bearer(await w.token(e.caller))
    else:
        assert condition == NO_TOKEN, condition
    return {**request, "headers": headers}


async def client_request(w: MatrixWorld, e: Endpoint, condition: str) -> Body:
    """An OAuth endpoint request, authenticated as the condition says."""
    pcb, keyed = w.client_of(PCB), w.client_of(KEYED)
    who = keyed if condition in ("assertion signed by another key", ASSERTION_CONTROL) else pcb
    form = await CLIENT_FORMS[e.route](w, who)
    assert pcb.secret is not None and keyed.key is not None
    auth: httpx.BasicAuth | None = httpx.BasicAuth(pcb.client_id, pcb.secret)
    if condition in ("assertion signed by another key", ASSERTION_CONTROL):
        key = keyed.key if condition == ASSERTION_CONTROL else _stranger(keyed.key)
        form |= {
            "client_id": keyed.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(keyed.client_id, key),
        }
        auth = None
    elif condition == "no client authentication":
        auth = None
    elif condition == "wrong secret":
        auth = httpx.BasicAuth(pcb.client_id, "spl_cs_" + secrets.token_urlsafe(32))
    elif condition == "unknown client":
        auth = httpx.BasicAuth("no-such-client", pcb.secret)
    return {"data": form, "auth": auth}


def _stranger(key: ECKey) -> ECKey:
    """A key that is not the client's, under the client's ``kid``."""
    assert key.kid is not None
    return ECKey.generate_key("P-256", private=True, parameters={"kid": key.kid})


async def initial_request(w: MatrixWorld, e: Endpoint, condition: str) -> Body:
    """A registration request with the condition's initial access token."""
    assert e.body is not None
    token = {
        "unknown initial token": INITIAL_ACCESS_PREFIX + secrets.token_urlsafe(32),
        "used initial token": w.credentials["used initial token"],
        "expired initial token": w.credentials["expired initial token"],
        SUSPENDED: w.credentials["initial token"],
        CONTROL: w.credentials["initial token"],
    }.get(condition)
    if condition == "access token instead":
        token = await w.token(As(PCB))
    return {**e.body(w), "headers": bearer(token) if token is not None else {}}


async def invitation_request(w: MatrixWorld, e: Endpoint, condition: str) -> Body:
    """An application (or a person's acceptance) with the condition's invitation code."""
    if e.route == "/v1/user-invitations/accept":
        code = {
            "unknown invitation": "spl_uin_" + secrets.token_urlsafe(32),
            "used invitation": w.credentials["used user invitation"],
            "expired invitation": w.credentials["expired user invitation"],
            CONTROL: w.credentials["user invitation"],
        }[condition]
        return {"json": {"code": code, "name": "New Person", "password": "p" * 16}}
    code = {
        "unknown invitation": INVITATION_PREFIX + secrets.token_urlsafe(32),
        "used invitation": w.credentials["used invitation"],
        "expired invitation": w.credentials["expired invitation"],
        CONTROL: w.credentials["invitation"],
    }[condition]
    body = {
        "name": "newcomer-oy",
        "kind": "supplier",
        "contact_email": "ops@example.com",
        "invitation_code": code,
    }
    return {"json": body}


async def make_request(w: MatrixWorld, e: Endpoint, condition: str) -> Body:
    if e.guard == "client":
        return await client_request(w, e, condition)
    if e.guard == "initial":
        return await initial_request(w, e, condition)
    if e.guard == "invitation":
        return await invitation_request(w, e, condition)
    return await bearer_request(w, e, condition)


async def bring_about(w: MatrixWorld, e: Endpoint, condition: str) -> bool:
    """Make the registry state the condition needs, through its API: the caller's token
    revoked (RFC 7009, by its own client), its client revoked, its organisation suspended, the
    endpoint's contract terminated. Whether the condition needed a change."""
    admin = bearer(w.admin_token)
    org = PCB if e.guard in ("client", "initial") else base_caller(e).org
    if condition == REVOKED_TOKEN:
        who = w.client_of(org)
        assert who.secret is not None
        form = {"token": await w.token(base_caller(e))}
        auth = httpx.BasicAuth(who.client_id, who.secret)
        r = await w.registry.post("/oauth/revoke", data=form, auth=auth)
    elif condition == REVOKED:
        url = f"/v1/oauth/clients/{w.client_of(org).client_id}/revoke"
        r = await w.registry.post(url, headers=admin)
    elif condition == SUSPENDED:
        url = f"/v1/organisations/{w.client_of(org).org_id}/suspend"
        r = await w.registry.post(url, json={"reason": "matrix"}, headers=admin)
    elif condition == TERMINATED:
        assert e.terminates is not None
        url = f"/v1/contracts/{w.ids[e.terminates]}/terminate"
        r = await w.registry.post(url, json={"reason": "matrix"}, headers=w.orgs.auth(OWNER))
    else:
        return False
    assert r.status_code == 200, r.text
    return True


def expected(e: Endpoint, condition: str) -> tuple[int, str]:
    """The status and error code a condition must get."""
    if e.guard == "client":
        return 401, "invalid_client"
    if e.guard == "invitation":
        return 403, "invalid_invitation"
    if e.guard == "initial" and condition == SUSPENDED:
        return 403, "forbidden"  # the token is valid; the organisation may not register
    if condition == NO_TOKEN:
        return 401, "unauthenticated"
    own = {"pcb": PCB, "paste": PASTE}.get(e.service)
    if condition in (REVOKED, SUSPENDED) and own is not None and base_caller(e).org == own:
        # the party's own client is the one refused (the caller is its organisation): it can
        # verify no token, and says its credentials are at fault (issue 19)
        return 502, "peer_error"
    if condition in (*FORGED, REVOKED_TOKEN, REVOKED, SUSPENDED, UNKNOWN_ADMIN):
        return 401, "invalid_token"
    if condition in INITIAL_CONDITIONS:
        return 401, "invalid_token"
    if condition == TERMINATED and e.service == "registry":
        # The caller may act on the contract; a terminated contract is final (a conflict).
        return 409, "invalid_transition"
    return 403, "forbidden"


def check_refusal(e: Endpoint, condition: str, r: httpx.Response) -> None:
    status, code = expected(e, condition)
    assert r.status_code == status, f"{r.status_code} {r.text}"
    if e.guard == "client":  # RFC 6749 error body
        assert r.json()["error"] == code, r.text
        return
    body = r.json()
    assert set(body) == {"code", "message", "detail"}, body
    ErrorBody.model_validate(body)
    assert body["code"] == code and body["message"], body
    if status == 401 and e.service == "registry":
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("endpoint", "condition"), CELLS, ids=[f"{e.name} | {c}" for e, c in CELLS]
)
async def test_cell(world: MatrixWorld, endpoint: Endpoint, condition: str) -> None:
    w, e = world, endpoint
    control = condition in (CONTROL, ASSERTION_CONTROL)
    request = await make_request(w, e, condition)
    changed = await bring_about(w, e, condition)
    party = e.service != "registry"
    if party:
        w.forget_party_caches()
    # Every cell leaves the world pristine, so only a condition's own change needs a dump.
    tables = w.dump() if changed else w.pristine
    parties = await w.party_state() if party else None
    after: Dump | None = None
    try:
        r = await client_for(w, e.service).request(e.method, e.path(w), **request)
        if control and e.route in TRAINED and r.status_code == e.ok:
            await w.training_done(TRAINED[e.route])
        after = w.dump()
    finally:
        w.restore(after if after is not None else w.dump())
    if control:
        assert r.status_code == e.ok, r.text
        return
    check_refusal(e, condition, r)
    assert after == tables, "the registry's tables changed"
    if party:
        assert await w.party_state() == parties, "a party's state changed"


# --- every scope x every management route -------------------------------------------------------

MANAGEMENT = [
    *((m, r, p, b, ok, refused, False) for m, r, p, b, ok, refused in MANAGED),
    *(
        (m, GRANT_ROUTE, {"org_id": "pcb", "grant": "reports grant"}, None, 200, False, True)
        for m in ("PUT", "DELETE")
    ),
]
"""Client-management and grant routes acting on the PCB maker's organisation or its spare
client, with whether operators are refused and whether only operators may call it."""
OPERATOR = "operator"
SCOPE_CALLERS = [*sorted(CLIENT_SCOPES), OPERATOR]
SCOPE_CELLS = [(route, who) for route in MANAGEMENT for who in SCOPE_CALLERS]
SELF = "/v1/oauth/clients/{client_id}"
SELF_CELLS = [("GET", SELF), ("POST", SELF + "/rotate"), ("POST", SELF + "/revoke")]


async def _scope_call(
    w: MatrixWorld,
    method: str,
    route: str,
    params: Mapping[str, str],
    body: BodyFn | None,
    headers: dict[str, str],
) -> tuple[httpx.Response, Dump]:
    """One management request; the registry's tables after it (then restored)."""
    request = body(w) if body is not None else {}
    path = route.format(**{k: w.ids[v] for k, v in params.items()})
    after: Dump | None = None
    try:
        r = await w.registry.request(method, path, headers=headers, **request)
        after = w.dump()
    finally:
        w.restore(after if after is not None else w.dump())
    return r, after


@pytest.mark.parametrize(
    ("route", "who"),
    SCOPE_CELLS,
    ids=[f"{r[0]} {r[1]} | {who}" for r, who in SCOPE_CELLS],
)
async def test_scope_cell(
    world: MatrixWorld,
    route: tuple[str, str, Mapping[str, str], BodyFn | None, int, bool, bool],
    who: str,
) -> None:
    """A token of the PCB maker's first client holding exactly one scope (or the operator's
    token) on each management route: only ``org:admin`` manages the organisation's clients,
    only operators grant roles, and operators never rotate a client (its secret is not theirs)."""
    w = world
    method, path, params, body, ok, operator_refused, operators_only = route
    if who == OPERATOR:
        headers = bearer(w.admin_token)
        allowed = not operator_refused
    else:
        headers = bearer(await w.token(As(PCB, scope=who)))
        allowed = who == ORG_ADMIN and not operators_only
    r, after = await _scope_call(w, method, path, params, body, headers)
    if allowed:
        assert r.status_code == ok, r.text
        return
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and "client_secret" not in r.text
    assert after == w.pristine, "a refused request changed the registry's tables"


@pytest.mark.parametrize(("method", "route"), SELF_CELLS, ids=[f"{m} {r}" for m, r in SELF_CELLS])
async def test_a_client_without_org_admin_manages_only_itself(
    world: MatrixWorld, method: str, route: str
) -> None:
    """A predict-only token of the PCB maker's client (the penetration test's attacker) reads,
    rotates and revokes its own client, and nothing else of its organisation's."""
    w = world
    headers = bearer(await w.token(As(PCB, scope="predict:call")))
    r, _ = await _scope_call(w, method, route, {"client_id": "pcb-client"}, None, headers)
    assert r.status_code == 200, r.text
    r, after = await _scope_call(w, method, route, {"client_id": "pcb-spare"}, None, headers)
    assert r.status_code == 403 and after == w.pristine, r.text


# --- coverage -----------------------------------------------------------------------------------


def routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) of an app's OpenAPI document."""
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


async def test_every_endpoint_is_in_the_matrix(world: MatrixWorld) -> None:
    apps: dict[Service, FastAPI] = {
        "registry": world.app,
        "paste": world.parties.paste_app,
        "pcb": world.parties.pcb_app,
    }
    matrix = {(e.service, e.method, e.route) for e in ENDPOINTS}
    assert len(matrix) == len(ENDPOINTS), "an endpoint is in the matrix twice"
    # Party endpoints are the same on every party: each is covered on the party that serves it.
    party_routes = {(m, p) for s, m, p in matrix | set(PUBLIC) if s != "registry"}
    assert routes(apps["paste"]) == routes(apps["pcb"]) == party_routes
    registry = {(m, p) for s, m, p in matrix | set(PUBLIC) if s == "registry"}
    assert routes(apps["registry"]) == registry
    assert not matrix & set(PUBLIC)
    for service, method, path in PUBLIC:
        client = client_for(world, service)
        assert (await client.request(method, path)).status_code == 200, (service, path)
