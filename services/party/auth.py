"""Who may call this party: registry-issued access tokens, checked against an active contract.

Every party-to-party call carries a JWT access token issued by the registry (``aud`` = this
party's audience, scope ``party:call``, claims ``contract_id`` and ``job_id``). The party verifies
it locally against the registry's JWK Set (cached; fetched again when a token names an unknown
``kid``), then asks the registry, through short-lived caches, whether it still honours the token
(introspection: not revoked, its client not revoked, its organisation not suspended), whether the
contract is active, whether the caller's organisation holds the role the endpoint needs and whether
the job belongs to the contract. Revocation, suspension and termination therefore take effect
within the cache TTL (<= 30 s).

Without a registry (``registry_url`` unset) the party runs open, for local pilots only, and says
so in its health document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from services.protocol.errors import ErrorCode, Forbidden, PeerError, Unauthenticated
from services.protocol.jwt_verify import (
    InvalidToken,
    UnknownSigningKey,
    token_scopes,
    verify_access_token,
)
from services.protocol.messages import ProtectionSpec

Role = Literal["label", "feature"]
PARTY_CALL = "party:call"


@dataclass(frozen=True, slots=True)
class PeerCaller:
    """A verified caller: its organisation, client and the contract and job it acts under."""

    org_id: str
    client_id: str
    contract_id: str
    job_id: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ContractStanding:
    """The registry's answer about one (contract, caller org, job): may this call proceed?

    ``protection`` is the cut-layer protection of the version in force, as the protocol's
    ``ProtectionSpec`` JSON (None when the registry did not say).
    """

    active: bool
    caller_role: Role | None
    callee_role: Role | None
    job_ok: bool
    contract_version: int | None = None
    protection: dict[str, Any] | None = None


ContractCheck = Callable[[str, str, str], Awaitable[ContractStanding]]
"""(contract_id, caller_org_id, job_id) -> standing, as seen by this party."""

TokenLiveness = Callable[[str], Awaitable[bool]]
"""token -> whether the registry still honours it (not revoked, client live, org approved)."""


@dataclass(slots=True)
class _Cached:
    value: Any
    until: float


@dataclass(slots=True)
class TtlCache:
    """A tiny time-bounded cache (per process; entries expire, so workers never disagree long)."""

    ttl: float
    _items: dict[Any, _Cached] = field(default_factory=dict)

    def get(self, key: Any) -> Any | None:
        """The value for ``key`` while fresh, else None."""
        hit = self._items.get(key)
        if hit is None or hit.until < time.monotonic():
            self._items.pop(key, None)
            return None
        return hit.value

    def put(self, key: Any, value: Any) -> None:
        """Remember ``value`` for ``ttl`` seconds."""
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[key] = _Cached(value, time.monotonic() + self.ttl)


class JwksCache:
    """The registry's JWK Set, fetched on first use and again for an unknown ``kid``."""

    def __init__(self, http: httpx.AsyncClient, url: str, min_refetch_seconds: float = 5.0):
        self.http = http
        self.url = url
        self.min_refetch = min_refetch_seconds
        self._doc: dict[str, Any] | None = None
        self._fetched = -1e9

    async def get(self, *, refresh: bool = False) -> dict[str, Any]:
        """The key set; ``refresh`` fetches it again unless it was fetched moments ago."""
        stale = refresh and time.monotonic() - self._fetched >= self.min_refetch
        if self._doc is None or stale:
            try:
                resp = await self.http.get(self.url)
                resp.raise_for_status()
                doc = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise PeerError("the registry's key set is unavailable") from exc
            if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                raise PeerError("the registry's key set is malformed")
            self._doc, self._fetched = doc, time.monotonic()
        return self._doc


class Authorizer:
    """Verifies tokens and contract standing for one party service."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JwksCache,
        check: ContractCheck,
        check_ttl: float = 10.0,
        liveness: TokenLiveness | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.check = check
        self.standing = TtlCache(check_ttl)
        self.liveness = liveness
        self.live = TtlCache(check_ttl)

    async def verify(self, authorization: str | None) -> dict[str, Any]:
        """Claims of the bearer token in an ``Authorization`` header (401 otherwise)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthenticated("a bearer access token is required")
        token = authorization[7:].strip()
        try:
            claims = verify_access_token(
                token, await self.jwks.get(), issuer=self.issuer, audience=self.audience
            )
        except UnknownSigningKey:
            keys = await self.jwks.get(refresh=True)
            claims = verify_access_token(token, keys, issuer=self.issuer, audience=self.audience)
        if self.liveness is not None:
            live: bool | None = self.live.get(claims["jti"])
            if live is None:
                live = await self.liveness(token)
                self.live.put(claims["jti"], live)
            if not live:
                raise InvalidToken("the registry no longer honours the token")
        return claims

    async def authorize(
        self, authorization: str | None, *, role: Role, job_id: str | None
    ) -> PeerCaller:
        """A caller allowed to act as ``role`` on ``job_id`` under an active contract."""
        claims = await self.verify(authorization)
        scopes = token_scopes(claims)
        if PARTY_CALL not in scopes:
            raise Forbidden(f"the token lacks scope {PARTY_CALL}", detail={"scope": PARTY_CALL})
        contract_id, token_job, org_id = (
            claims.get("contract_id"),
            claims.get("job_id"),
            claims.get("org_id"),
        )
        if not all(isinstance(v, str) and v for v in (contract_id, token_job, org_id)):
            raise Forbidden("the token names no contract, job or organisation")
        assert isinstance(contract_id, str) and isinstance(token_job, str)
        assert isinstance(org_id, str)
        if job_id is not None and job_id != token_job:
            raise Forbidden("the token is for another job", detail={"job_id": job_id})
        await self.require_standing(contract_id, org_id, token_job, role=role)
        return PeerCaller(org_id, str(claims["client_id"]), contract_id, token_job, scopes)

    async def require_standing(
        self, contract_id: str, org_id: str, job_id: str, *, role: Role
    ) -> ContractStanding:
        """:class:`Forbidden` unless the contract is active, ``org_id`` is its ``role`` party,
        this party is a party to it and the job is its job."""
        key = (contract_id, org_id, job_id)
        standing: ContractStanding | None = self.standing.get(key)
        if standing is None:
            standing = await self.check(contract_id, org_id, job_id)
            self.standing.put(key, standing)
        if not standing.active:
            raise Forbidden(
                "the contract is not active",
                code=ErrorCode.FORBIDDEN,
                detail={"contract": contract_id},
            )
        if standing.caller_role != role:
            raise Forbidden(
                f"the caller is not the {role} party of this contract",
                detail={"needed": role, "caller": standing.caller_role},
            )
        if standing.callee_role is None or not standing.job_ok:
            raise Forbidden("this party or this job is not part of the contract")
        return standing


def require_contract_protection(standing: ContractStanding, asked: ProtectionSpec) -> None:
    """Refuse (403) a job whose protection differs from its contract's."""
    if standing.protection is None:
        return
    want = ProtectionSpec.model_validate(standing.protection)
    if want != asked:
        raise Forbidden(
            "the job's protection differs from its contract's",
            detail={"contract": want.model_dump(mode="json"), "job": asked.model_dump(mode="json")},
        )
