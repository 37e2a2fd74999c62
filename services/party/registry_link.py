"""This party's link to the contract registry: token checks in, tokens out, contract checks."""

from __future__ import annotations

import json
import logging
import math

import httpx
from joserfc.jwk import ECKey, RSAKey

from services.party.auth import Authorizer, ContractStanding, JwksCache, Role
from services.party.settings import PartySettings
from services.protocol.errors import BadRequest, PeerError, SpliceError
from services.protocol.messages import JobState, TrainingStatus
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource

log = logging.getLogger("splice.registry")


class RegistryLink:
    """Everything a party needs to talk to the registry, built once per app."""

    def __init__(
        self, settings: PartySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        issuer, registry = settings.issuer, settings.registry_url
        if issuer is None or registry is None:
            raise BadRequest("no registry configured")
        if not (settings.org_id and settings.client_id):
            raise BadRequest("with a registry, org_id and client_id are required")
        key = None
        if settings.client_key_file is not None:
            key = _load_key(settings.client_key_file.read_text())
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        creds = ClientCredentials(f"{issuer}/oauth/token", settings.client_id, secret, key)
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=registry.rstrip("/"),
            timeout=httpx.Timeout(settings.peer_timeout_seconds, connect=10.0),
            transport=transport,
        )
        self.tokens = TokenSource(creds, self.http)
        self.authorizer = Authorizer(
            issuer=issuer,
            audience=settings.audience,
            jwks=JwksCache(self.http, f"{registry.rstrip('/')}/.well-known/jwks.json"),
            check=self.check,
            check_ttl=settings.contract_check_ttl_seconds,
            liveness=self.introspect,
        )

    async def check(self, contract_id: str, caller_org: str, job_id: str) -> ContractStanding:
        """The registry's view of ``contract_id`` for a call from ``caller_org`` to this party."""
        issuer = self.settings.issuer
        assert issuer is not None
        token = await self.tokens.token(issuer, "party:call")
        resp = await self.http.get(
            f"/v1/contracts/{contract_id}/check",
            params={"party": self.settings.name, "job_id": job_id},
            headers={"authorization": f"Bearer {token}"},
        )
        if resp.status_code in (403, 404):
            return ContractStanding(False, None, None, False)
        if resp.status_code != 200:
            raise PeerError(f"the registry's contract check failed ({resp.status_code})")
        doc = resp.json()
        roles = {p["org_id"]: p["role"] for p in doc.get("parties", [])}
        mine = doc.get("role") if doc.get("org_id") == self.settings.org_id else None
        return ContractStanding(
            active=bool(doc.get("active")),
            caller_role=_role(roles.get(caller_org)),
            callee_role=_role(mine),
            job_ok=bool(doc.get("job_ok")),
            contract_version=doc.get("contract_version"),
        )

    async def introspect(self, token: str) -> bool:
        """Whether the registry still honours ``token`` (RFC 7662 introspection as this party's
        client): not revoked, its client not revoked, its organisation not suspended.

        False as well when the registry refuses this party's own client (revoked, suspended or
        misconfigured): a party the registry no longer vouches for serves no one.
        """
        form = {"token": token, "token_type_hint": "access_token"}
        auth = self.tokens.authenticate(form)
        if auth is None:
            resp = await self.http.post("/oauth/introspect", data=form)
        else:
            resp = await self.http.post("/oauth/introspect", data=form, auth=auth)
        if resp.status_code == 401:
            log.error("the registry refused this party's client: refusing every caller")
            return False
        if resp.status_code != 200:
            raise PeerError(f"the registry's token introspection failed ({resp.status_code})")
        return resp.json().get("active") is True

    async def report(self, status: TrainingStatus, artifacts: dict[str, str]) -> None:
        """Tell the registry how a job this party drives is doing; never fails training."""
        issuer = self.settings.issuer
        assert issuer is not None
        body: dict[str, object] = {"status": _JOB_STATUS[status.state]}
        if status.epochs:
            body["progress"] = min(1.0, len(status.history) / status.epochs)
        if status.history:
            body["metrics"] = _finite(
                {f"validation.{k}": v for k, v in status.history[-1].validation.items()}
            )
        try:
            token = await self.tokens.token(issuer, "jobs:run")
            headers = {"authorization": f"Bearer {token}"}
            resp = await self.http.post(
                f"/v1/jobs/{status.job_id}/progress", json=body, headers=headers
            )
            if resp.status_code >= 400:
                log.warning("registry refused progress of %s: %s", status.job_id, resp.text[:200])
            if status.state is JobState.FINISHED and artifacts:
                version = {"metrics": _finite(status.test), "artifact_digests": artifacts}
                resp = await self.http.post(
                    f"/v1/jobs/{status.job_id}/model-versions", json=version, headers=headers
                )
                if resp.status_code >= 400:
                    log.warning("registry refused the model version: %s", resp.text[:200])
        except (httpx.HTTPError, SpliceError) as exc:
            log.warning("cannot report job %s to the registry: %s", status.job_id, exc)

    def outgoing(self, audience: str, contract_id: str, job_id: str) -> httpx.Auth:
        """Auth for calls this party makes to ``audience`` under a contract and job."""
        return BearerAuth(self.tokens, audience.rstrip("/"), contract_id=contract_id, job_id=job_id)

    async def aclose(self) -> None:
        """Close the registry connection pool."""
        await self.http.aclose()


_JOB_STATUS = {
    JobState.PENDING: "created",
    JobState.ALIGNING: "aligning",
    JobState.TRAINING: "training",
    JobState.FINISHED: "finished",
    JobState.FAILED: "failed",
}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _role(value: object) -> Role | None:
    if value == "label":
        return "label"
    if value == "feature":
        return "feature"
    return None


def _load_key(text: str) -> ECKey | RSAKey:
    doc = json.loads(text)
    if doc.get("kty") == "EC":
        return ECKey.import_key(doc)
    return RSAKey.import_key(doc)
