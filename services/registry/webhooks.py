"""Organisations' webhooks (issue 18): the registry POSTs an event to every organisation of a
contract (owner and parties) that registered a webhook URL.

Today's event is ``model.quality_alert`` / ``model.quality_ok``: the label party reported a
change of a model version's live-quality status (the contract's monitoring thresholds). The
body is JSON; the ``Splice-Signature`` header is a detached compact JWS (RFC 7515, appendix F)
of the exact body bytes, signed with the registry's active token signing key (ES256, its
``kid`` in the header). A receiver verifies it with the key set the registry publishes at
``/.well-known/jwks.json``, so the registry stores no per-webhook secret
(docs/adr/0013-retraining-and-alerts.md). ``Splice-Event-Id`` makes redelivery idempotent.

Deliveries are computed in the request's transaction (an event whose change is rolled back is
never sent, as the route only schedules them once it committed) and sent after the answer, each
with the services' one retry policy (connection errors, 429, 5xx), then given up and logged.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.errors import BadRequest
from services.protocol.retry import Retryable, RetryPolicy
from services.protocol.tls import cleartext_over_network
from services.registry.auth import Caller
from services.registry.models_contracts import ContractParty, ContractRecord, ContractVersion
from services.registry.models_webhooks import Webhook
from services.registry.oauth.keys import KeyVault
from services.registry.store import audit, signing_keys
from services.registry.store.organisations import get_organisation

log = logging.getLogger("splice.registry.webhooks")
SIGNATURE_HEADER = "Splice-Signature"
EVENT_HEADER = "Splice-Event-Id"
JWS_TYPE = "splice-event+jws"
POLICY = RetryPolicy(retries=3, backoff=0.2, backoff_cap=5.0)
TIMEOUT = httpx.Timeout(10.0)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed event for one URL."""

    url: str
    event_id: str
    body: bytes
    signature: str


def set_webhook(
    session: Session, caller: Caller, org_id: str, url: str, *, allow_http: bool
) -> Webhook:
    """Register (or replace) ``org_id``'s webhook URL (its admin, scope ``org:admin``)."""
    caller.require_manager(org_id)
    get_organisation(session, org_id)
    if not url.startswith(("https://", "http://")):
        raise BadRequest("a webhook URL is http(s)", detail={"field": "url"})
    if not allow_http and cleartext_over_network(url):
        raise BadRequest(
            "a webhook URL off this machine must use https (events would travel in cleartext)",
            detail={"field": "url"},
        )
    hook = session.get(Webhook, org_id)
    if hook is None:
        hook = Webhook(org_id=org_id, url=url, created_by=caller.subject)
        session.add(hook)
    else:
        hook.url, hook.created_by = url, caller.subject
    audit.append(
        session, actor=caller.subject, action="webhook.set", subject=org_id, payload={"url": url}
    )
    session.flush()
    return hook


def get_webhook(session: Session, caller: Caller, org_id: str) -> Webhook | None:
    """``org_id``'s webhook, if it has one (its members, or operators)."""
    caller.require_org(org_id)
    get_organisation(session, org_id)
    return session.get(Webhook, org_id)


def delete_webhook(session: Session, caller: Caller, org_id: str) -> None:
    """Remove ``org_id``'s webhook, if it has one (its admin)."""
    caller.require_manager(org_id)
    hook = session.get(Webhook, org_id)
    if hook is not None:
        session.delete(hook)
        audit.append(session, actor=caller.subject, action="webhook.deleted", subject=org_id)


def contract_event(
    session: Session,
    vault: KeyVault,
    contract_id: str,
    event: str,
    payload: dict[str, Any],
    now: datetime,
) -> list[Delivery]:
    """The deliveries of ``event`` about ``contract_id`` to its organisations' webhooks."""
    record = session.get(ContractRecord, contract_id)
    if record is None:
        return []
    orgs = {record.owner_org_id} | set(
        session.scalars(
            select(ContractParty.org_id)
            .join(ContractVersion, ContractParty.version_id == ContractVersion.id)
            .where(ContractVersion.contract_id == contract_id)
        )
    )
    hooks = list(session.scalars(select(Webhook).where(Webhook.org_id.in_(orgs))))
    if not hooks:
        return []
    row = signing_keys.active_signing_key(session, vault)
    key = vault.private_key(row.kid, row.alg, row.private_key)
    out = []
    for hook in sorted(hooks, key=lambda h: h.org_id):
        event_id = str(uuid.uuid4())
        doc = {
            "id": event_id,
            "event": event,
            "contract_id": contract_id,
            "org_id": hook.org_id,
            "at": now.isoformat(),
            **payload,
        }
        body = json.dumps(doc, sort_keys=True).encode()
        out.append(Delivery(hook.url, event_id, body, sign(body, key, row.kid, row.alg)))
    return out


def sign(body: bytes, key: Any, kid: str, alg: str) -> str:
    """A detached compact JWS of ``body`` (``header..signature``)."""
    compact = jws.serialize_compact({"alg": alg, "kid": kid, "typ": JWS_TYPE}, body, key)
    header, _, signature = compact.split(".")
    return f"{header}..{signature}"


def verify(body: bytes, signature: str, key_set: Any) -> dict[str, Any]:
    """The event ``body`` carries, if ``signature`` is the registry's (``key_set``: its
    published JWKS as a joserfc ``KeySet``); ValueError otherwise. What a receiver does."""
    header, empty, sig = signature.split(".")
    if empty:
        raise ValueError("not a detached JWS")
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    try:
        token = jws.deserialize_compact(f"{header}.{payload}.{sig}", key_set)
    except JoseError as exc:
        raise ValueError(f"not signed by the registry: {exc}") from exc
    if token.protected.get("typ") != JWS_TYPE:
        raise ValueError("not a Splice event")
    doc: dict[str, Any] = json.loads(token.payload)
    return doc


async def deliver(
    deliveries: list[Delivery], transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, bool]:
    """POST each delivery with retries; event id -> whether its receiver took it (2xx)."""
    done: dict[str, bool] = {}
    async with httpx.AsyncClient(timeout=TIMEOUT, transport=transport) as client:
        for d in deliveries:

            async def attempt(d: Delivery = d) -> None:
                try:
                    r = await client.post(
                        d.url,
                        content=d.body,
                        headers={
                            "Content-Type": "application/json",
                            SIGNATURE_HEADER: d.signature,
                            EVENT_HEADER: d.event_id,
                        },
                    )
                except httpx.TransportError as exc:
                    raise Retryable(f"{type(exc).__name__}") from exc
                if r.status_code == 429 or r.status_code >= 500:
                    raise (
                        Retryable.of(r)
                        if r.status_code in (429, 503)
                        else Retryable(f"HTTP {r.status_code}")
                    )
                if r.status_code >= 300:
                    raise httpx.HTTPStatusError("refused", request=r.request, response=r)

            try:
                await POLICY.call(attempt)
                done[d.event_id] = True
            except (Retryable, httpx.HTTPStatusError) as exc:
                log.warning("webhook %s: event %s not delivered: %s", d.url, d.event_id, exc)
                done[d.event_id] = False
    return done


__all__ = [
    "Delivery",
    "contract_event",
    "delete_webhook",
    "deliver",
    "get_webhook",
    "set_webhook",
    "sign",
    "verify",
]
