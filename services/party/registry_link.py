"""This party's link to the contract registry: token checks in, tokens out, contract checks,
and the CKKS key fingerprints recorded with each job."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa
from joserfc.jwk import ECKey, RSAKey
from pydantic import ValidationError

from contracts.errors import ContractValidationError
from contracts.loader import validate_stored
from contracts.spec import Contract
from services.engine.harmonise import (
    HarmonisationError,
    UnitsError,
    check_party_table,
    read_units,
)
from services.engine.source import TableSource, as_source
from services.party.auth import Authorizer, ContractStanding, Role
from services.party.caches import JwksCache
from services.party.contract_terms import IMPLEMENTED_FAMILIES as PARTY_FAMILIES
from services.party.settings import PartySettings
from services.protocol import correlation
from services.protocol.client import error_of
from services.protocol.errors import (
    BadRequest,
    Conflict,
    ErrorBody,
    ErrorCode,
    PeerError,
    Unauthenticated,
    Unprocessable,
)
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.registry_contracts import JobOut
from services.protocol.retry import RETRY_STATUS, Retryable, RetryPolicy

log = logging.getLogger("splice.registry")

PARTY_CALL = "party:call"
REGISTRY_RETRIES = RetryPolicy(retries=2, backoff=0.2, backoff_cap=5.0)
"""Idempotent registry requests after a connection error or a 429/503 (``Retry-After`` honoured)."""


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
        self.policy = REGISTRY_RETRIES
        self.http = httpx.AsyncClient(
            base_url=registry.rstrip("/"),
            timeout=httpx.Timeout(settings.peer_timeout_seconds, connect=10.0),
            transport=transport,
            verify=settings.client_tls(),
            event_hooks={"request": [correlation.send_header]},
        )
        self.tokens = TokenSource(creds, self.http)
        self._contracts: dict[tuple[str, int], Contract] = {}
        self._owners: dict[str, str] = {}
        self._audience_claimed = False
        self.authorizer = Authorizer(
            issuer=issuer,
            audience=settings.audience,
            jwks=JwksCache(self.http, f"{registry.rstrip('/')}/.well-known/jwks.json"),
            check=self.check,
            check_ttl=settings.contract_check_ttl_seconds,
            liveness=self.introspect,
            grace=settings.registry_grace_seconds,
        )

    async def check(
        self, contract_id: str, caller_org: str, job_id: str | None
    ) -> ContractStanding:
        """The registry's view of ``contract_id`` for a call from ``caller_org`` to this party
        (about ``job_id``, when the call is about a job)."""
        issuer = self.settings.issuer
        assert issuer is not None
        token = await self.tokens.token(issuer, PARTY_CALL)
        params = {"party": self.settings.name}
        if job_id is not None:
            params["job_id"] = job_id
        resp = await self.http.get(
            f"/v1/contracts/{contract_id}/check",
            params=params,
            headers={"authorization": f"Bearer {token}"},
        )
        if resp.status_code in (403, 404):
            return ContractStanding(False, None, None, False)
        if resp.status_code != 200:
            raise PeerError(f"the registry's contract check failed ({resp.status_code})")
        doc = resp.json()
        roles = {p["org_id"]: p["role"] for p in doc.get("parties", [])}
        mine = doc.get("role") if doc.get("org_id") == self.settings.org_id else None
        protection = doc.get("protection")
        caller_role = _role(roles.get(caller_org))
        owner = _str(doc.get("owner_org_id"))
        if owner is None and caller_role is None:  # a buyer that is no party: the owner?
            owner = await self.owner_of(contract_id)
        return ContractStanding(
            active=bool(doc.get("active")),
            caller_role=caller_role,
            callee_role=_role(mine),
            job_ok=bool(doc.get("job_ok")),
            contract_version=_int(doc.get("contract_version")),
            protection=protection if isinstance(protection, dict) else None,
            job_status=_str(doc.get("job_status")),
            deployed_model_version=_int(doc.get("deployed_model_version")),
            deployed_job_id=_str(doc.get("deployed_job_id")),
            owner_org_id=owner,
            training_deadline=_when(doc.get("training_deadline")),
            job_locked=doc.get("job_locked") is True,
            deployed_model_digest=_str(doc.get("deployed_model_digest")),
            deployed_segment_digests=_digests(doc.get("deployed_segment_digests")),
        )

    async def owner_of(self, contract_id: str) -> str | None:
        """The organisation owning ``contract_id`` (cached: a contract's owner never changes);
        None if the registry does not show this party the contract."""
        if contract_id not in self._owners:
            resp = await self._idempotent("GET", f"/v1/contracts/{contract_id}")
            if resp.status_code in (403, 404):
                return None
            if resp.status_code != 200:
                raise PeerError(f"the registry did not serve contract {contract_id}")
            owner = _str(resp.json().get("owner_org_id"))
            if owner is None:
                return None
            self._owners[contract_id] = owner
        return self._owners[contract_id]

    async def register_key(self, job_id: str, party: str, fingerprint: str) -> None:
        """Record with the job the fingerprint (SHA-256 hex) of this party's CKKS key bundle, as
        this party's client. Repeating the same fingerprint is fine; :class:`Conflict` if the job
        already holds another one or is over, :class:`PeerError` for any other failure."""
        body = {"fingerprint": fingerprint}
        resp = await self._idempotent("PUT", f"/v1/jobs/{job_id}/keys/{party}", json=body)
        if resp.status_code == 200:
            return
        err = _error_body(resp)
        what = f"the registry refused the key fingerprint of {party!r} for job {job_id}"
        if resp.status_code == 409:
            code = ErrorCode(err.code) if err.code in set(ErrorCode) else ErrorCode.CONFLICT
            raise Conflict(f"{what}: {err.message}", code=code, detail=err.detail)
        raise PeerError(
            f"{what} ({resp.status_code}): {err.message}",
            detail={"status": resp.status_code, "code": err.code},
        )

    async def job(self, job_id: str) -> JobOut:
        """The job as the registry holds it; :class:`PeerError` if the registry does not
        answer with the job."""
        resp = await self._idempotent("GET", f"/v1/jobs/{job_id}")
        if resp.status_code != 200:
            err = _error_body(resp)
            raise PeerError(
                f"cannot read job {job_id} from the registry ({resp.status_code}): {err.message}",
                detail={"status": resp.status_code, "code": err.code},
            )
        try:
            return JobOut.model_validate_json(resp.content)
        except ValidationError as exc:
            raise PeerError(f"the registry's answer about job {job_id} is malformed") from exc

    async def key_fingerprints(self, job_id: str) -> dict[str, str]:
        """The key fingerprints the registry holds for a job, by party name (what each feature
        party registered); :class:`PeerError` if the registry does not answer with the job."""
        found = (await self.job(job_id)).key_fingerprints
        return {str(k): v for k, v in found.items() if isinstance(v, str)}

    async def _idempotent(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """An idempotent request as this party's client (scope ``party:call``), retried a few
        times on connection errors and 429/503, and once with a fresh token after a 401;
        :class:`PeerError` if the registry is out of reach or refuses this party a token."""
        issuer = self.settings.issuer
        assert issuer is not None

        async def attempt() -> httpx.Response:
            for fresh in (False, True):
                try:
                    token = await self.tokens.token(issuer, PARTY_CALL, fresh=fresh)
                except Unauthenticated as exc:
                    raise self.credentials_refused("a token", exc.message) from exc
                headers = {"authorization": f"Bearer {token}"}
                try:
                    resp = await self.http.request(method, path, headers=headers, **kw)
                except httpx.TransportError as exc:
                    raise Retryable(type(exc).__name__) from exc
                if resp.status_code != 401:
                    break
            if resp.status_code in RETRY_STATUS:
                raise Retryable.of(resp)
            return resp

        try:
            return await self.policy.call(attempt)
        except Retryable as exc:
            if exc.response is not None:
                return exc.response
            raise PeerError(
                f"the registry is unreachable ({exc})", detail={"path": path}
            ) from exc.__cause__

    async def contract(self, contract_id: str, version: int) -> Contract:
        """The contract document of ``version`` (validated; cached: versions are immutable)."""
        key = (contract_id, version)
        if key not in self._contracts:
            issuer = self.settings.issuer
            assert issuer is not None
            token = await self.tokens.token(issuer, "party:call")
            resp = await self.http.get(
                f"/v1/contracts/{contract_id}/versions/{version}/document",
                headers={"authorization": f"Bearer {token}"},
            )
            if resp.status_code != 200:
                raise PeerError(f"the registry did not serve the contract ({resp.status_code})")
            try:
                self._contracts[key] = validate_stored(resp.json())
            except ContractValidationError as exc:
                if any(e["loc"] == "model.family" for e in exc.errors):
                    family = _family(resp)
                    raise Unprocessable(
                        f"party {self.settings.name} does not implement model family "
                        f"{family!r}, which contract {contract_id} names",
                        code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
                        detail={
                            "party": self.settings.name,
                            "field": "model.family",
                            "family": family,
                        },
                    ) from exc
                raise PeerError(f"the registry served an invalid contract: {exc}") from exc
            except ValueError as exc:
                raise PeerError(f"the registry served an invalid contract: {exc}") from exc
            family = self._contracts[key].model.family
            if family not in PARTY_FAMILIES:
                del self._contracts[key]
                raise Unprocessable(
                    f"party {self.settings.name} does not implement model family "
                    f"{family!r}, which contract {contract_id} names",
                    code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
                    detail={"party": self.settings.name, "field": "model.family", "family": family},
                )
        return self._contracts[key]

    async def create_job(self, contract_id: str) -> str:
        """Open a training job under ``contract_id`` at the registry as this (label) party's
        client (scope ``jobs:run``); its id. The registry's refusal is passed on."""
        issuer = self.settings.issuer
        assert issuer is not None
        token = await self.tokens.token(issuer, "jobs:run")
        resp = await self.http.post(
            "/v1/jobs",
            json={"contract_id": contract_id},
            headers={"authorization": f"Bearer {token}"},
        )
        if resp.status_code != 201:
            raise error_of(resp.status_code, resp.content)
        job_id = resp.json().get("id")
        if not isinstance(job_id, str):
            raise PeerError("the registry answered a job without an id")
        return job_id

    async def check_table(
        self, table: pa.Table | TableSource, contract_id: str, version: int | None, *, label: bool
    ) -> None:
        """Refuse (409 ``schema_violation``) when this party's table breaks its contract schema.

        Only counts and reasons leave the party (the report never holds row values). The check
        reads the whole table (of a Parquet file too, for the time of the check)."""
        if version is None:
            return
        contract = await self.contract(contract_id, version)
        try:
            units = None
            if self.settings.units_file is not None:
                units = read_units(self.settings.units_file)
            report = check_party_table(
                as_source(table).read(),
                contract,
                self.settings.name,
                declared_units=units,
                require_label=label,
            )
        except (HarmonisationError, UnitsError) as exc:
            raise Conflict(str(exc), code=ErrorCode.SCHEMA_VIOLATION) from exc
        if not report.passed:
            raise Conflict(
                f"party {self.settings.name}'s table breaks its contract schema: "
                + "; ".join(report.reasons[:5]),
                code=ErrorCode.SCHEMA_VIOLATION,
                detail=json.loads(report.to_json()),
            )

    async def claim_audience(self) -> None:
        """Declare this party's audience as a resource its client serves (once per process):
        the registry answers introspection of tokens for it to this client only.

        A resource another organisation holds is logged and left: introspection then answers
        ``active: false`` and this party serves no one until an operator sorts it out.
        """
        if self._audience_claimed:
            return
        body = {"resource": self.settings.audience}
        resp = await self._idempotent(
            "POST", f"/v1/oauth/clients/{self.settings.client_id}/resources", json=body
        )
        if resp.status_code == 200:
            self._audience_claimed = True
            return
        err = _error_body(resp)
        log.error(
            "the registry refused this party's audience %s as a resource of its client "
            "(%s %s): callers' tokens cannot be checked",
            self.settings.audience,
            resp.status_code,
            err.message,
        )
        if resp.status_code >= 500 or resp.status_code == 429:
            raise PeerError(f"the registry did not take this party's audience ({resp.status_code})")

    async def introspect(self, token: str) -> bool:
        """Whether the registry still honours ``token`` (RFC 7662 introspection as this party's
        client): not revoked, its client not revoked, its organisation not suspended.

        When the registry refuses this party's own client (revoked, suspended or misconfigured:
        a wrong client id or secret), :class:`PeerError` naming this party's credentials, not the
        caller's token: a party the registry no longer vouches for serves no one.
        """
        await self.claim_audience()
        form = {"token": token, "token_type_hint": "access_token"}
        auth = self.tokens.authenticate(form)
        if auth is None:
            resp = await self.http.post("/oauth/introspect", data=form)
        else:
            resp = await self.http.post("/oauth/introspect", data=form, auth=auth)
        if resp.status_code == 401:
            log.error("the registry refused this party's client: refusing every caller")
            raise self.credentials_refused("its token introspection")
        if resp.status_code != 200:
            raise PeerError(f"the registry's token introspection failed ({resp.status_code})")
        return resp.json().get("active") is True

    def credentials_refused(self, what: str, reason: str = "") -> PeerError:
        """The error when the registry refuses this party's own client credentials."""
        name, client_id = self.settings.name, self.settings.client_id
        return PeerError(
            f"the registry refuses party {name!r}'s client credentials (client id "
            f"{client_id!r}) for {what}{': ' + reason if reason else ''}; check the party's "
            "SPLICE_PARTY_CLIENT_ID and its secret or key file (the caller's token is not at "
            "fault)",
            detail={"party": name, "client_id": client_id, "at_fault": "party_credentials"},
        )

    async def require_credentials(self) -> None:
        """:class:`PeerError` unless the registry issues this party's client a token (its
        readiness: a party with a wrong client id or secret is not ready)."""
        issuer = self.settings.issuer
        assert issuer is not None
        try:
            await self.tokens.token(issuer, PARTY_CALL)
        except Unauthenticated as exc:
            raise self.credentials_refused("a token", exc.message) from exc

    def outgoing(self, audience: str, contract_id: str, job_id: str) -> httpx.Auth:
        """Auth for calls this party makes to ``audience`` under a contract and job."""
        return BearerAuth(self.tokens, audience.rstrip("/"), contract_id=contract_id, job_id=job_id)

    async def aclose(self) -> None:
        """Close the registry connection pool."""
        await self.http.aclose()


def _error_body(resp: httpx.Response) -> ErrorBody:
    try:
        return ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        return ErrorBody(code=ErrorCode.PEER_ERROR.value, message=f"HTTP {resp.status_code}")


def _family(resp: httpx.Response) -> object:
    try:
        model = resp.json().get("model")
        return model.get("family") if isinstance(model, dict) else None
    except (ValueError, AttributeError):
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _digests(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _when(value: object) -> datetime | None:
    """An ISO 8601 instant (naive values are UTC), or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
