"""A typed client of the contract registry's HTTP API (onboarding, contracts, jobs).

Answers are the registry's own answer types (:mod:`services.protocol.registry_types`,
:mod:`services.protocol.registry_contracts`), parsed; errors raise the protocol's exception
hierarchy (:mod:`services.protocol.errors`). The caller chooses how to authenticate: the
operator's admin token (:class:`StaticBearer`) or an organisation's OAuth client
(:class:`services.protocol.oauth_client.BearerAuth`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, TypeAdapter

from services.protocol.client import ServiceClient
from services.protocol.registry_contracts import (
    ContractOut,
    ContractSummary,
    JobOut,
    ModelVersionOut,
)
from services.protocol.registry_types import (
    Approval,
    AuditEntryOut,
    ChainVerification,
    ClientRegistered,
    InvitationCreated,
    OrganisationOut,
)

Json = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


class StaticBearer(httpx.Auth):
    """A fixed bearer token (the operator's admin token, or an initial access token)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the token."""
        request.headers["authorization"] = f"Bearer {self.token}"
        yield request


class RegistryClient(ServiceClient):
    """The registry API. Mutating calls are not retried after they may have reached the server."""

    async def _send(
        self, answer: type[M], method: str, path: str, body: Any = None, **kw: Any
    ) -> M:
        resp = await self.request(method, path, json=body, retry_reads=method == "GET", **kw)
        return answer.model_validate_json(resp.content)

    async def _list(self, answer: type[M], path: str) -> list[M]:
        resp = await self.request("GET", path)
        return TypeAdapter(list[answer]).validate_json(resp.content)  # type: ignore[valid-type]

    # --- onboarding ----------------------------------------------------------------------------

    async def invite(self, note: str = "", ttl_hours: int | None = None) -> str:
        """A fresh invitation code (operator); ``note`` says who it is for."""
        body: Json = {"note": note} if note else {}
        if ttl_hours is not None:
            body["ttl_hours"] = ttl_hours
        return (await self._send(InvitationCreated, "POST", "/v1/invitations", body)).code

    async def apply(
        self, name: str, kind: str, contact_email: str, invitation_code: str
    ) -> OrganisationOut:
        """An organisation applies to join."""
        body = {
            "name": name,
            "kind": kind,
            "contact_email": contact_email,
            "invitation_code": invitation_code,
        }
        return await self._send(OrganisationOut, "POST", "/v1/organisations/applications", body)

    async def approve(self, org_id: str) -> Approval:
        """Approve an application (operator); the answer carries the initial access token."""
        return await self._send(Approval, "POST", f"/v1/organisations/{org_id}/approve")

    async def register_client(
        self,
        scope: str,
        *,
        method: str = "client_secret_basic",
        jwks: Json | None = None,
        name: str | None = None,
    ) -> ClientRegistered:
        """RFC 7591-style registration (authenticate with the initial access token)."""
        body: Json = {"token_endpoint_auth_method": method, "scope": scope}
        if jwks is not None:
            body["jwks"] = jwks
        if name is not None:
            body["client_name"] = name
        return await self._send(ClientRegistered, "POST", "/v1/oauth/register", body)

    async def organisations(self, status: str | None = None) -> list[OrganisationOut]:
        """Organisations the caller may see, optionally only those with ``status``."""
        query = "" if status is None else "?" + urlencode({"status": status})
        return await self._list(OrganisationOut, "/v1/organisations" + query)

    async def grant(self, org_id: str, grant: str, *, revoke: bool = False) -> OrganisationOut:
        """Grant (or ``revoke``) an organisation a cross-contract role (operator):
        ``reports:all-contracts`` or ``audit:verify``. The organisation as it is now."""
        method = "DELETE" if revoke else "PUT"
        path = f"/v1/organisations/{org_id}/grants/{grant}"
        return await self._send(OrganisationOut, method, path)

    async def suspend_organisation(self, org_id: str, reason: str) -> OrganisationOut:
        """Suspend an organisation (operator): its clients get no more tokens."""
        path = f"/v1/organisations/{org_id}/suspend"
        return await self._send(OrganisationOut, "POST", path, {"reason": reason})

    # --- contracts -----------------------------------------------------------------------------

    async def create_contract(self, document: Json) -> ContractOut:
        """A new contract from a document (draft, version 1)."""
        return await self._send(ContractOut, "POST", "/v1/contracts", document)

    async def create_contract_yaml(self, text: bytes) -> ContractOut:
        """A new contract from a YAML document, sent as written."""
        return await self._document("POST", "/v1/contracts", text)

    async def amend(self, contract_id: str, text: bytes) -> ContractOut:
        """Start an amendment (owner): the document (JSON or YAML, sent as written) becomes a new
        draft version; the version in force stays in force until the amendment is agreed."""
        return await self._document("POST", f"/v1/contracts/{contract_id}/amendments", text)

    async def replace_draft(self, contract_id: str, text: bytes) -> ContractOut:
        """Replace the draft's document (owner; JSON or YAML, sent as written)."""
        return await self._document("PUT", f"/v1/contracts/{contract_id}/draft", text)

    async def _document(self, method: str, path: str, text: bytes) -> ContractOut:
        media = "application/json" if text.lstrip()[:1] == b"{" else "application/yaml"
        resp = await self.request(method, path, content=text, media_type=media, retry_reads=False)
        return ContractOut.model_validate_json(resp.content)

    async def contract(self, contract_id: str) -> ContractOut:
        """A contract with its versions, signatures and state."""
        return await self._send(ContractOut, "GET", f"/v1/contracts/{contract_id}")

    async def contracts(self) -> list[ContractSummary]:
        """Contracts the caller may see."""
        return await self._list(ContractSummary, "/v1/contracts")

    async def propose(self, contract_id: str) -> ContractOut:
        """Propose the draft to every party (owner)."""
        return await self._send(ContractOut, "POST", f"/v1/contracts/{contract_id}/propose")

    async def sign(
        self,
        contract_id: str,
        party: str,
        digest: str,
        decision: str = "accept",
        reason: str | None = None,
    ) -> ContractOut:
        """Accept or reject the proposed version with this digest, for ``party``."""
        body = {"party": party, "decision": decision, "digest": digest}
        if reason is not None:
            body["reason"] = reason
        return await self._send(ContractOut, "POST", f"/v1/contracts/{contract_id}/sign", body)

    async def suspend(self, contract_id: str, reason: str) -> ContractOut:
        """Suspend an active contract (owner or operator)."""
        path = f"/v1/contracts/{contract_id}/suspend"
        return await self._send(ContractOut, "POST", path, {"reason": reason})

    async def reinstate(self, contract_id: str) -> ContractOut:
        """Reinstate a suspended contract (owner or operator)."""
        return await self._send(ContractOut, "POST", f"/v1/contracts/{contract_id}/reinstate")

    async def terminate(self, contract_id: str, reason: str) -> ContractOut:
        """Terminate a contract (final)."""
        path = f"/v1/contracts/{contract_id}/terminate"
        return await self._send(ContractOut, "POST", path, {"reason": reason})

    # --- jobs ----------------------------------------------------------------------------------

    async def create_job(self, contract_id: str, key_fingerprints: Json | None = None) -> JobOut:
        """A training job under an active contract (label party)."""
        body = {"contract_id": contract_id, "key_fingerprints": key_fingerprints or {}}
        return await self._send(JobOut, "POST", "/v1/jobs", body)

    async def job(self, job_id: str) -> JobOut:
        """A job's status."""
        return await self._send(JobOut, "GET", f"/v1/jobs/{job_id}")

    async def jobs(
        self, contract_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[JobOut]:
        """Jobs the caller may see, newest first (one contract's, in one status)."""
        query: dict[str, str | int] = {"limit": limit}
        if contract_id is not None:
            query["contract_id"] = contract_id
        if status is not None:
            query["status"] = status
        return await self._list(JobOut, f"/v1/jobs?{urlencode(query)}")

    async def cancel_job(self, job_id: str, reason: str) -> JobOut:
        """Stop a running job (its label party, the contract's owner, an operator)."""
        return await self._send(JobOut, "POST", f"/v1/jobs/{job_id}/cancel", {"reason": reason})

    async def register_key(self, job_id: str, party: str, fingerprint: str) -> JobOut:
        """Record ``party``'s key fingerprint (SHA-256 hex) for a job, as that party's
        organisation (scope ``party:call``); the job as it is now.

        Write-once, so safe to retry: the same fingerprint again is accepted, another raises
        :class:`services.protocol.errors.Conflict` with code ``key_conflict``.
        """
        resp = await self.request(
            "PUT",
            f"/v1/jobs/{job_id}/keys/{party}",
            json={"fingerprint": fingerprint},
            retry_reads=True,
        )
        return JobOut.model_validate_json(resp.content)

    async def report_progress(self, job_id: str, **fields: Any) -> JobOut:
        """Status, progress or metrics of a job (label party)."""
        return await self._send(JobOut, "POST", f"/v1/jobs/{job_id}/progress", fields)

    async def record_model_version(
        self, job_id: str, metrics: Json, **fields: Any
    ) -> ModelVersionOut:
        """The model version a finished job produced."""
        body = {"metrics": metrics, **fields}
        path = f"/v1/jobs/{job_id}/model-versions"
        return await self._send(ModelVersionOut, "POST", path, body)

    # --- model versions ------------------------------------------------------------------------

    async def model_versions(self, contract_id: str) -> list[ModelVersionOut]:
        """A contract's model versions, oldest first, with what each is and its approvals."""
        return await self._list(ModelVersionOut, f"/v1/contracts/{contract_id}/model-versions")

    async def model_version(self, contract_id: str, version: int) -> ModelVersionOut:
        """One model version: what it is (task, columns, digests), metrics, approvals."""
        path = f"/v1/contracts/{contract_id}/model-versions/{version}"
        return await self._send(ModelVersionOut, "GET", path)

    async def approve_model(self, contract_id: str, version: int, approver: str) -> ModelVersionOut:
        """Approve a model version for ``approver`` (scope ``contracts:sign``); the last
        approval deploys it."""
        path = f"/v1/contracts/{contract_id}/model-versions/{version}/approvals"
        return await self._send(ModelVersionOut, "POST", path, {"approver": approver})

    async def rollback(self, contract_id: str) -> ModelVersionOut:
        """Roll the contract's model back to the one deployed before (scope ``contracts:sign``);
        the model version now deployed."""
        path = f"/v1/contracts/{contract_id}/deployment/rollback"
        return await self._send(ModelVersionOut, "POST", path)

    # --- audit ---------------------------------------------------------------------------------

    async def audit(self, after: int = 0, limit: int = 100) -> list[AuditEntryOut]:
        """Audit log entries after sequence number ``after`` (operators, or ``audit:verify``)."""
        query = urlencode({"after": after, "limit": limit})
        return await self._list(AuditEntryOut, f"/v1/audit?{query}")

    async def verify_audit(self) -> ChainVerification:
        """Recompute the audit log's hash chain."""
        return await self._send(ChainVerification, "GET", "/v1/audit/verify")
