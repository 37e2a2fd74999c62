"""An organisation's webhook: where the registry POSTs the events of its contracts (issue 18)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field

from services.registry import webhooks
from services.registry.api.deps import JSON_BODY, CallerDep, SessionDep, SettingsDep, WorkDep

router = APIRouter(tags=["webhooks"])
OrgIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Organisation id.")]


class WebhookIn(BaseModel):
    """Where the registry should POST events."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2048, description="https URL (http on loopback).")


class WebhookOut(BaseModel):
    """An organisation's webhook."""

    org_id: str
    url: str
    created_at: datetime


@router.put("/v1/organisations/{org_id}/webhook", dependencies=[JSON_BODY])
def set_webhook(
    session: WorkDep, caller: CallerDep, settings: SettingsDep, org_id: OrgIdPath, body: WebhookIn
) -> WebhookOut:
    """Register or replace the organisation's webhook (its admin, scope ``org:admin``). The
    registry then POSTs every quality alert (``model.quality_alert`` / ``model.quality_ok``) of
    the contracts the organisation owns or is a party to, as JSON with a ``Splice-Signature``
    header: a detached JWS of the body under the registry's signing key, to verify against
    ``/.well-known/jwks.json``."""
    hook = webhooks.set_webhook(
        session, caller, org_id, body.url, allow_http=settings.allow_insecure_http
    )
    return WebhookOut(org_id=hook.org_id, url=hook.url, created_at=hook.created_at)


@router.get("/v1/organisations/{org_id}/webhook")
def get_webhook(session: SessionDep, caller: CallerDep, org_id: OrgIdPath) -> WebhookOut | None:
    """The organisation's webhook (its members); null if it has none."""
    hook = webhooks.get_webhook(session, caller, org_id)
    if hook is None:
        return None
    return WebhookOut(org_id=hook.org_id, url=hook.url, created_at=hook.created_at)


@router.delete("/v1/organisations/{org_id}/webhook", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(session: WorkDep, caller: CallerDep, org_id: OrgIdPath) -> None:
    """Remove the organisation's webhook, if it has one (its admin, scope ``org:admin``)."""
    webhooks.delete_webhook(session, caller, org_id)
