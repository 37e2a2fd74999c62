"""Usage metering (label party -> registry)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
)

from services.protocol.bounds import INT32_MAX
from services.protocol.messages.base import MAX_PREDICT_ROWS, EventId, JobId, Strict

# --- usage metering (label party -> registry) ---------------------------------------------------


class UsageEvent(Strict):
    """Served predictions of one request: the unit the registry meters and bills.

    ``event_id`` is chosen by the label party (a UUID) and is the idempotency key: the registry
    counts an event once however often it is posted. ``caller_token`` is the access token the
    prediction call carried, as presented: the registry verifies it (its signature, that it was
    issued for this label party and contract and valid when the call was served) and bills the
    organisation it names, never the label party's word for it (``caller_org`` must agree).
    """

    event_id: EventId
    contract_id: str = Field(min_length=1, max_length=64)
    contract_version: int = Field(ge=1, le=INT32_MAX)
    model_version: int = Field(ge=1, le=INT32_MAX)
    caller_org: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=MAX_PREDICT_ROWS)
    timestamp: AwareDatetime
    caller_token: str | None = Field(default=None, min_length=1, max_length=8192)


class UsageBatch(Strict):
    """Usage events the label party ships to the registry in one ``POST /v1/usage``."""

    events: list[UsageEvent] = Field(min_length=1, max_length=500)


class ServingObservation(Strict):
    """A feature party's own record of one serving call: it computed its part of the joint
    model for ``rows`` handles of a deployed ``job_id``, for the usage event the label party
    named (``event_id``; empty when the call named none). Reported independently of the label
    party, so the registry can reconcile the two sides (``POST /v1/usage/observations``)."""

    observation_id: EventId
    event_id: Annotated[str, Field(pattern=r"^([A-Za-z0-9-]{8,64})?$")]
    contract_id: str = Field(min_length=1, max_length=64)
    job_id: JobId
    rows: int = Field(ge=0, le=MAX_PREDICT_ROWS)
    timestamp: AwareDatetime


class ObservationBatch(Strict):
    """Serving observations a feature party ships to the registry in one request."""

    observations: list[ServingObservation] = Field(min_length=1, max_length=500)


class UsageRefusal(BaseModel):
    """One event the registry will never count, and why (e.g. ``usage_cap_reached``)."""

    model_config = ConfigDict(extra="ignore")

    event_id: str
    code: str
    message: str = ""


class UsageReceipt(BaseModel):
    """The registry's answer to a usage batch: ids stored now, ids it already held, refusals.

    Read leniently (unknown fields are ignored): the registry may say more than this."""

    model_config = ConfigDict(extra="ignore")

    accepted: list[str] = Field(default_factory=list)
    duplicates: list[str] = Field(default_factory=list)
    refused: list[UsageRefusal] = Field(default_factory=list)
