"""Who a usage event bills: the organisation of the access token its prediction call carried.

The label party cannot be taken at its word (a penetration test had it post events for an
invented caller, and for an outsider, with a million predictions each). Each event carries the
token the buyer presented (``caller_token``), and the registry accepts the event only if that
token proves a real call:

* it is a token this registry signed (any key it ever signed with: events may arrive days after
  an outage), valid (``iat``/``exp`` with leeway) at the event's timestamp, and not revoked by
  then;
* it holds scope ``predict:call`` and names the event's contract (``contract_id`` claim);
* its audience is a resource of the reporting label party's organisation: the token was issued
  to be presented to this label party, not to another service;
* its organisation owns or is a party to the event's contract version.

The organisation the token names is the payer; the event's ``caller_org`` must agree with it.
What a token cannot prove is how many calls it was used for: the feature parties' own records
are reconciled with the events for that (:mod:`services.registry.store.reconcile`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.jwt_verify import (
    InvalidToken,
    token_audiences,
    token_scopes,
    verify_access_token,
)
from services.registry.models_oauth import OAuthResource, RevokedToken
from services.registry.settings import RegistrySettings
from services.registry.store.signing_keys import every_public_key
from services.registry.store.usage_terms import Terms

PREDICT_CALL = "predict:call"


@dataclass(frozen=True)
class VerifiedCaller:
    """The payer of an event: the organisation, client and token id of its prediction call."""

    org_id: str
    client_id: str
    jti: str


@dataclass(frozen=True)
class Unverified:
    """Why an event's caller could not be verified (``code``: a refusal code)."""

    code: str
    message: str


class CallerCheck:
    """Verifies the caller tokens of one batch (the keys, the reporter's resources and the
    revocations are read once per batch)."""

    def __init__(
        self,
        session: Session,
        settings: RegistrySettings,
        reporter_org: str | None,
        tokens: Iterable[str],
    ) -> None:
        self.settings = settings
        self.keys = every_public_key(session)
        self.audiences: set[str] = set()
        if reporter_org is not None:
            self.audiences = set(
                session.scalars(
                    select(OAuthResource.resource).where(OAuthResource.org_id == reporter_org)
                )
            )
        self._claims: dict[str, dict[str, object] | InvalidToken] = {}
        for token in set(tokens):
            try:
                self._claims[token] = self._signed(token)
            except InvalidToken as exc:
                self._claims[token] = exc
        jtis = [c["jti"] for c in self._claims.values() if isinstance(c, dict) and "jti" in c]
        self.revoked: dict[str, datetime] = dict(
            session.execute(
                select(RevokedToken.jti, RevokedToken.revoked_at).where(
                    RevokedToken.jti.in_([str(j) for j in jtis])
                )
            ).all()
        )

    def _signed(self, token: str) -> dict[str, object]:
        """The claims of a token this registry signed, checked as of its own ``iat`` (once per
        token; whether it was valid when a call was served is checked per event)."""
        try:
            payload = token.split(".")[1]
            unverified = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            issued = unverified["iat"]
        except (IndexError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidToken("not a compact JWT with an iat claim") from exc
        if not isinstance(issued, int) or isinstance(issued, bool):
            raise InvalidToken("iat is not a whole number of seconds")
        claims = verify_access_token(
            token,
            self.keys,
            issuer=self.settings.issuer,
            audience=None,
            leeway=self.settings.token_leeway_seconds,
            now=issued,
        )
        return dict(claims)

    def _valid_at(self, claims: dict[str, object], at: datetime) -> bool:
        leeway = self.settings.token_leeway_seconds
        moment = at.timestamp()
        iat, exp, nbf = claims.get("iat"), claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not all(isinstance(v, int | float) for v in (iat, exp, nbf)):
            return False
        assert isinstance(iat, int | float) and isinstance(exp, int | float)
        assert isinstance(nbf, int | float)
        return max(iat, nbf) - leeway <= moment <= exp + leeway

    def verify(
        self, token: str | None, *, terms: Terms, row: dict[str, object]
    ) -> VerifiedCaller | Unverified:
        """The payer of the event ``row`` (contract, version, caller_org, occurred_at)."""
        if token is None:
            return Unverified(
                "unverified_caller",
                "the event carries no access token of the prediction call (caller_token)",
            )
        checked = self._claims.get(token)
        if not isinstance(checked, dict):
            reason = checked.reason if isinstance(checked, InvalidToken) else "unreadable"
            return Unverified("unverified_caller", f"the caller's token is not valid: {reason}")
        at = row["occurred_at"]
        assert isinstance(at, datetime)
        claims = checked
        if not self._valid_at(claims, at):
            return Unverified(
                "unverified_caller", "the caller's token was not valid when the call was served"
            )
        if PREDICT_CALL not in token_scopes(claims):
            return Unverified("unverified_caller", "the caller's token lacks scope predict:call")
        if claims.get("contract_id") != row["contract_id"]:
            return Unverified("unverified_caller", "the caller's token is for another contract")
        if not self.audiences.intersection(token_audiences(claims)):
            return Unverified(
                "unverified_caller",
                "the caller's token was not issued for this label party (its audience is no "
                "resource of the reporting organisation)",
            )
        jti = str(claims["jti"])
        revoked = self.revoked.get(jti)
        if revoked is not None and revoked <= at:
            return Unverified("unverified_caller", "the caller's token was revoked before the call")
        org = claims.get("org_id")
        version = terms.versions.get(int(str(row["contract_version"])))
        if not isinstance(org, str) or version is None or org not in version.members:
            return Unverified(
                "unverified_caller",
                "the caller's organisation neither owns nor is a party to the contract version",
            )
        if row["caller_org_id"] != org:
            return Unverified(
                "caller_mismatch",
                "caller_org is not the organisation of the caller's token (which is billed)",
            )
        return VerifiedCaller(org_id=org, client_id=str(claims["client_id"]), jti=jti)
