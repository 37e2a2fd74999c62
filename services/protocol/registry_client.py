"""A typed client of the contract registry's HTTP API (onboarding, contracts, jobs).

Answers are returned as JSON documents; errors raise the protocol's exception hierarchy
(:mod:`services.protocol.errors`). The caller chooses how to authenticate: the operator's admin
token (:class:`StaticBearer`) or an organisation's OAuth client
(:class:`services.protocol.oauth_client.BearerAuth`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any
from urllib.parse import urlencode

import httpx

from services.protocol.client import ServiceClient

Json = dict[str, Any]


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

    async def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Json:
        resp = await self.request(method, path, json=body, retry_reads=method == "GET", **kw)
        doc: Json = resp.json()
        return doc

    # --- onboarding ----------------------------------------------------------------------------

    async def invite(self, note: str = "", ttl_hours: int | None = None) -> str:
        """A fresh invitation code (operator); ``note`` says who it is for."""
        body: Json = {"note": note} if note else {}
        if ttl_hours is not None:
            body["ttl_hours"] = ttl_hours
        return str((await self._json("POST", "/v1/invitations", body))["code"])

    async def apply(self, name: str, kind: str, contact_email: str, invitation_code: str) -> Json:
        """An organisation applies to join."""
        body = {
            "name": name,
            "kind": kind,
            "contact_email": contact_email,
            "invitation_code": invitation_code,
        }
        return await self._json("POST", "/v1/organisations/applications", body)

    async def approve(self, org_id: str) -> Json:
        """Approve an application (operator); the answer carries the initial access token."""
        return await self._json("POST", f"/v1/organisations/{org_id}/approve")

    async def register_client(
        self,
        scope: str,
        *,
        method: str = "client_secret_basic",
        jwks: Json | None = None,
        name: str | None = None,
    ) -> Json:
        """RFC 7591-style registration (authenticate with the initial access token)."""
        body: Json = {"token_endpoint_auth_method": method, "scope": scope}
        if jwks is not None:
            body["jwks"] = jwks
        if name is not None:
            body["client_name"] = name
        return await self._json("POST", "/v1/oauth/register", body)

    async def organisations(self, status: str | None = None) -> list[Json]:
        """Organisations the caller may see, optionally only those with ``status``."""
        query = "" if status is None else "?" + urlencode({"status": status})
        resp = await self.request("GET", "/v1/organisations" + query)
        docs: list[Json] = resp.json()
        return docs

    async def grant(self, org_id: str, grant: str, *, revoke: bool = False) -> Json:
        """Grant (or ``revoke``) an organisation a cross-contract role (operator):
        ``reports:all-contracts`` or ``audit:verify``. The organisation as it is now."""
        method = "DELETE" if revoke else "PUT"
        return await self._json(method, f"/v1/organisations/{org_id}/grants/{grant}")

    async def suspend_organisation(self, org_id: str, reason: str) -> Json:
        """Suspend an organisation (operator): its clients get no more tokens."""
        return await self._json("POST", f"/v1/organisations/{org_id}/suspend", {"reason": reason})

    # --- contracts -----------------------------------------------------------------------------

    async def create_contract(self, document: Json) -> Json:
        """A new contract from a document (draft, version 1)."""
        return await self._json("POST", "/v1/contracts", document)

    async def create_contract_yaml(self, text: bytes) -> Json:
        """A new contract from a YAML document, sent as written."""
        resp = await self.request(
            "POST", "/v1/contracts", content=text, media_type="application/yaml", retry_reads=False
        )
        doc: Json = resp.json()
        return doc

    async def contract(self, contract_id: str) -> Json:
        """A contract with its versions, signatures and state."""
        return await self._json("GET", f"/v1/contracts/{contract_id}")

    async def contracts(self) -> list[Json]:
        """Contracts the caller may see."""
        resp = await self.request("GET", "/v1/contracts")
        docs: list[Json] = resp.json()
        return docs

    async def propose(self, contract_id: str) -> Json:
        """Propose the draft to every party (owner)."""
        return await self._json("POST", f"/v1/contracts/{contract_id}/propose")

    async def sign(
        self,
        contract_id: str,
        party: str,
        digest: str,
        decision: str = "accept",
        reason: str | None = None,
    ) -> Json:
        """Accept or reject the proposed version with this digest, for ``party``."""
        body = {"party": party, "decision": decision, "digest": digest}
        if reason is not None:
            body["reason"] = reason
        return await self._json("POST", f"/v1/contracts/{contract_id}/sign", body)

    async def suspend(self, contract_id: str, reason: str) -> Json:
        """Suspend an active contract (owner or operator)."""
        return await self._json("POST", f"/v1/contracts/{contract_id}/suspend", {"reason": reason})

    async def terminate(self, contract_id: str, reason: str) -> Json:
        """Terminate a contract (final)."""
        body = {"reason": reason}
        return await self._json("POST", f"/v1/contracts/{contract_id}/terminate", body)

    # --- jobs ----------------------------------------------------------------------------------

    async def create_job(self, contract_id: str, key_fingerprints: Json | None = None) -> Json:
        """A training job under an active contract (label party)."""
        body = {"contract_id": contract_id, "key_fingerprints": key_fingerprints or {}}
        return await self._json("POST", "/v1/jobs", body)

    async def job(self, job_id: str) -> Json:
        """A job's status."""
        return await self._json("GET", f"/v1/jobs/{job_id}")

    async def register_key(self, job_id: str, party: str, fingerprint: str) -> Json:
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
        doc: Json = resp.json()
        return doc

    async def report_progress(self, job_id: str, **fields: Any) -> Json:
        """Status, progress or metrics of a job (label party)."""
        return await self._json("POST", f"/v1/jobs/{job_id}/progress", fields)

    async def record_model_version(self, job_id: str, metrics: Json, **fields: Any) -> Json:
        """The model version a finished job produced."""
        body = {"metrics": metrics, **fields}
        return await self._json("POST", f"/v1/jobs/{job_id}/model-versions", body)

    # --- model versions ------------------------------------------------------------------------

    async def model_versions(self, contract_id: str) -> list[Json]:
        """A contract's model versions, oldest first, with what each is and its approvals."""
        resp = await self.request("GET", f"/v1/contracts/{contract_id}/model-versions")
        docs: list[Json] = resp.json()
        return docs

    async def model_version(self, contract_id: str, version: int) -> Json:
        """One model version: what it is (task, columns, digests), metrics, approvals."""
        return await self._json("GET", f"/v1/contracts/{contract_id}/model-versions/{version}")

    async def approve_model(self, contract_id: str, version: int, approver: str) -> Json:
        """Approve a model version for ``approver`` (scope ``contracts:sign``)."""
        path = f"/v1/contracts/{contract_id}/model-versions/{version}/approvals"
        return await self._json("POST", path, {"approver": approver})
