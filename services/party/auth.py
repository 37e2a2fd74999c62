"""Who may call this party: registry-issued access tokens, checked against an active contract.

Every party-to-party call carries a JWT access token issued by the registry (``aud`` = this
party's audience, scope ``party:call``, claims ``contract_id`` and ``job_id``). The party verifies
it locally against the registry's JWK Set (cached; fetched again when a token names an unknown
``kid``), then asks the registry, through short-lived caches, whether it still honours the token
(introspection: not revoked, its client not revoked, its organisation not suspended), whether the
contract is active, whether the caller's organisation holds the role the endpoint needs and whether
the job belongs to the contract. Revocation, suspension and termination therefore take effect
within the cache TTL (<= 30 s).

While the registry is unreachable, the last answers stay in use for a grace period after they
expired (``registry_grace_seconds``): serving survives a registry outage, and whatever changed
at the registry meanwhile takes effect once it answers again.

Without a registry (``registry_url`` unset) the party runs open, for local pilots only, and says
so in its health document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from services.party.caches import JwksCache, TtlCache
from services.protocol.errors import (
    Conflict,
    ErrorCode,
    Forbidden,
    PeerError,
    Unauthenticated,
)
from services.protocol.jwt_verify import (
    DEFAULT_LEEWAY_SECONDS,
    InvalidToken,
    UnknownSigningKey,
    token_scopes,
    verify_access_token,
)

Role = Literal["label", "feature"]
PARTY_CALL = "party:call"
PREDICT_CALL = "predict:call"
RUNNING_JOB = frozenset({"created", "aligning", "training"})
"""Registry job statuses of a job still training (its evaluation calls embed and mix too)."""


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
    ``ProtectionSpec`` JSON (None when the registry did not say). ``job_status`` is the job's
    status at the registry; ``deployed_model_version`` and ``deployed_job_id`` name the model
    version the contract serves (None: nothing deployed). ``owner_org_id`` is the contract
    owner's organisation when the check needed it (a caller that is no party).
    ``training_deadline`` is the version in force's: no training of the contract runs past it.
    ``job_locked``: the job has a model version that is approved or was deployed (the job is
    immutable). ``deployed_model_digest`` and ``deployed_segment_digests`` are the registry's
    record of the deployed model version (None: not recorded).
    """

    active: bool
    caller_role: Role | None
    callee_role: Role | None
    job_ok: bool
    contract_version: int | None = None
    protection: dict[str, Any] | None = None
    job_status: str | None = None
    deployed_model_version: int | None = None
    deployed_job_id: str | None = None
    owner_org_id: str | None = None
    training_deadline: datetime | None = None
    job_locked: bool = False
    deployed_model_digest: str | None = None
    deployed_segment_digests: dict[str, str] | None = None


ContractCheck = Callable[[str, str, str | None], Awaitable[ContractStanding]]
"""(contract_id, caller_org_id, job_id or None) -> standing, as seen by this party."""

TokenLiveness = Callable[[str], Awaitable[bool]]
"""token -> whether the registry still honours it (not revoked, client live, org approved)."""


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
        grace: float = 0.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.check = check
        self.standing = TtlCache(check_ttl, grace)
        self.liveness = liveness
        self.live = TtlCache(check_ttl, grace)
        self._holders: dict[str, tuple[object, object]] = {}
        """jti -> (client id, organisation) of the tokens in ``live``."""

    async def verify(self, authorization: str | None) -> dict[str, Any]:
        """Claims of the bearer token in an ``Authorization`` header (401 otherwise)."""
        token = _bearer(authorization)
        try:
            claims = verify_access_token(
                token, await self.jwks.get(), issuer=self.issuer, audience=self.audience
            )
        except UnknownSigningKey:
            keys = await self.jwks.get(refresh=True)
            claims = verify_access_token(token, keys, issuer=self.issuer, audience=self.audience)
        await self._require_live(token, claims)
        return claims

    # --- changes the registry pushes (services/party/revocations.py) --------------------------

    def token_revoked(self, jti: str) -> None:
        """The registry revoked token ``jti``: refuse it from now on (also while the registry
        is unreachable: the cached answer is a refusal)."""
        self.live.put(jti, False)

    def callers_changed(self, *, client_id: str | None = None, org_id: str | None = None) -> None:
        """A client was revoked or an organisation suspended or reinstated: ask the registry
        again about its tokens (every token when neither is named) before honouring them, and
        about that organisation's contract standing."""
        if client_id is None and org_id is None:
            self.live.drop()
            self._holders.clear()
            return

        def unconcerned(jti: object) -> bool:
            holder = self._holders.get(str(jti))
            return holder is not None and client_id not in holder and org_id not in holder

        self.live.drop(unconcerned)
        if org_id is not None:
            self.standing.drop(lambda key: key[1] != org_id)

    def contract_changed(self, contract_id: str) -> None:
        """A contract's standing changed: ask the registry again before the next call under it."""
        self.standing.drop(lambda key: key[0] != contract_id)

    async def recheck(self, authorization: str | None, claims: dict[str, Any]) -> None:
        """For a stream opened with ``claims`` (verified then): its token must still be unexpired
        and honoured by the registry, so a long-lived connection ends with its token."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or time.time() >= exp + DEFAULT_LEEWAY_SECONDS:
            raise InvalidToken("the token expired while its stream was open")
        await self._require_live(_bearer(authorization), claims)

    async def _require_live(self, token: str, claims: dict[str, Any]) -> None:
        if self.liveness is None:
            return
        live: bool | None = self.live.get(claims["jti"])
        if live is None:
            try:
                live = await self.liveness(token)
            except (PeerError, httpx.TransportError) as exc:
                live = _fallback(self.live.stale(claims["jti"]), exc)
            self.live.put(claims["jti"], live)
            if len(self._holders) > 10_000:
                self._holders.clear()
            self._holders[claims["jti"]] = (claims.get("client_id"), claims.get("org_id"))
        if not live:
            raise InvalidToken("the registry no longer honours the token")

    async def authorize(
        self, authorization: str | None, *, role: Role, job_id: str | None
    ) -> PeerCaller:
        """A caller allowed to act as ``role`` on ``job_id`` under an active contract."""
        claims = await self.verify(authorization)
        return await self.authorize_claims(claims, role=role, job_id=job_id)

    async def authorize_claims(
        self, claims: dict[str, Any], *, role: Role, job_id: str | None
    ) -> PeerCaller:
        """:meth:`authorize` for claims already verified."""
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
        standing = await self.standing_of(contract_id, org_id, job_id)
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

    async def standing_of(
        self, contract_id: str, org_id: str, job_id: str | None
    ) -> ContractStanding:
        """The registry's answer about (contract, caller org, job), through the cache; the last
        answer (within the grace period) while the registry cannot be reached."""
        key = (contract_id, org_id, job_id)
        standing: ContractStanding | None = self.standing.get(key)
        if standing is None:
            try:
                standing = await self.check(contract_id, org_id, job_id)
            except (PeerError, httpx.TransportError) as exc:
                standing = _fallback(self.standing.stale(key), exc)
            self.standing.put(key, standing)
        return standing

    async def authorize_predict(
        self, authorization: str | None, contract_id: str
    ) -> tuple[PeerCaller, ContractStanding]:
        """A caller allowed to ask this (label) party for predictions under ``contract_id``:
        scope ``predict:call``, a token naming the contract, an organisation that owns or is a
        party to it, an active contract whose label party this party is."""
        claims = await self.verify(authorization)
        scopes = token_scopes(claims)
        if PREDICT_CALL not in scopes:
            raise Forbidden(f"the token lacks scope {PREDICT_CALL}", detail={"scope": PREDICT_CALL})
        org_id = claims.get("org_id")
        if claims.get("contract_id") != contract_id:
            raise Forbidden(
                "the token is for another contract", detail={"contract_id": contract_id}
            )
        if not isinstance(org_id, str) or not org_id:
            raise Forbidden("the token names no organisation")
        standing = await self.standing_of(contract_id, org_id, None)
        if not standing.active:
            raise Forbidden("the contract is not active", detail={"contract": contract_id})
        if standing.caller_role is None and org_id != standing.owner_org_id:
            raise Forbidden("this organisation is neither the owner of nor a party to the contract")
        if standing.callee_role != "label":
            raise Forbidden("this party is not the label party of the contract")
        caller = PeerCaller(org_id, str(claims["client_id"]), contract_id, "", scopes)
        return caller, standing


def require_serving(standing: ContractStanding, job_id: str, *, shadow: bool = False) -> None:
    """Refuse (409 ``model_not_deployed``) evaluation calls for a job that no longer trains,
    unless it is the job of the contract's deployed model version or, in shadow mode (the label
    party comparing a challenger with the deployed champion, nothing metered), any finished job
    of the contract while a model version is deployed."""
    status = standing.job_status
    if status is None or status in RUNNING_JOB:
        return
    if status == "finished" and standing.deployed_job_id == job_id:
        return
    if shadow and status == "finished" and standing.deployed_job_id is not None:
        return
    raise Conflict(
        f"job {job_id} is {status} and its model is not the contract's deployed one",
        code=ErrorCode.MODEL_NOT_DEPLOYED,
        detail={"job_id": job_id, "status": status, "deployed_job_id": standing.deployed_job_id},
    )


def _fallback(stale: Any | None, exc: Exception) -> Any:
    """``stale`` (the last answer, within grace), or :class:`PeerError` for ``exc``."""
    if stale is None:
        if isinstance(exc, PeerError):
            raise exc
        raise PeerError(f"the registry is unreachable ({type(exc).__name__})") from exc
    return stale


def bearer_token(authorization: str | None) -> str:
    """The token of a ``Bearer`` ``Authorization`` header (401 without one)."""
    return _bearer(authorization)


def _bearer(authorization: str | None) -> str:
    """The token of a ``Bearer`` ``Authorization`` header (401 without one)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated("a bearer access token is required")
    return authorization[7:].strip()
