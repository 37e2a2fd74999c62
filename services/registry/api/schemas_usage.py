"""Request and answer bodies of usage ingestion.

The events are the wire type the label party writes to its outbox
(:class:`services.protocol.messages.UsageEvent`), read strictly: numbers must be JSON integers
(``"5"`` or ``5.0`` is a 422, not 5) and unknown fields are refused. A batch that does not parse
writes nothing; one that parses gets an answer per event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StrictInt

from services.protocol.bounds import INT32_MAX
from services.protocol.messages import MAX_PREDICT_ROWS, ServingObservation, UsageEvent
from services.registry.models_usage import UsageEvent as StoredEvent
from services.registry.store.reconcile import Reconciliation
from services.registry.store.usage import Outcome
from services.registry.store.usage_listing import BilledEvent, ListingTotal

MAX_EVENTS = 1000
EVENT_ID_MAX = StoredEvent.__table__.c.event_id.type.length or 36  # type: ignore[attr-defined]
"""Event ids are stored in a column of this width."""


class UsageEventIn(UsageEvent):
    """One usage event (see :class:`services.protocol.messages.UsageEvent`)."""

    event_id: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9-]{8,64}$",
            max_length=EVENT_ID_MAX,
            description="The label party's id of the event (a UUID): the idempotency key.",
        ),
    ]
    contract_version: StrictInt = Field(ge=1, le=INT32_MAX)
    model_version: StrictInt = Field(ge=1, le=INT32_MAX)
    count: StrictInt = Field(
        ge=1, le=MAX_PREDICT_ROWS, description="Predictions served (rows of one request)."
    )


class UsageBatchIn(BaseModel):
    """Usage events to count (1 to 1000)."""

    model_config = {"extra": "forbid"}

    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class RefusedEvent(BaseModel):
    """An event that is not counted, now or ever: posting it again gets the same answer."""

    event_id: str
    code: str = Field(
        description="unknown_contract, not_label_party, unknown_version, outside_window, "
        "unverified_caller, caller_mismatch, usage_cap_reached or event_conflict (usage "
        "events); unknown_contract, not_feature_party, unknown_job, outside_window or "
        "event_conflict (observations)."
    )
    message: str


class UsageReceiptOut(BaseModel):
    """What became of each event: stored now, already stored (the same event), or refused."""

    accepted: list[str]
    duplicates: list[str]
    refused: list[RefusedEvent]

    @classmethod
    def of(cls, outcome: Outcome) -> UsageReceiptOut:
        """The answer to a batch."""
        return cls(
            accepted=outcome.accepted,
            duplicates=outcome.duplicates,
            refused=[
                RefusedEvent(event_id=r.event_id, code=r.code.value, message=r.message)
                for r in outcome.refused
            ],
        )


class ObservationIn(ServingObservation):
    """A feature party's record of one serving call (strict numbers)."""

    rows: StrictInt = Field(ge=0, le=MAX_PREDICT_ROWS)


class ObservationBatchIn(BaseModel):
    """Serving observations to store (1 to 1000)."""

    model_config = {"extra": "forbid"}

    observations: list[ObservationIn] = Field(min_length=1, max_length=MAX_EVENTS)


class BilledEventOut(BaseModel):
    """A usage event with its price: ``amount`` = ``predictions`` x ``unit_price``."""

    event_id: str
    occurred_at: datetime
    contract_id: str
    contract_version: int
    model_version: int
    payer_org_id: str = Field(description="The organisation billed (the verified caller).")
    predictions: int
    unit_price: str
    currency: str
    amount: str

    @classmethod
    def of(cls, e: BilledEvent) -> BilledEventOut:
        """The wire view of a priced event."""
        return cls.model_validate(e, from_attributes=True)


class ListingTotalOut(BaseModel):
    """Events, predictions and amount of a whole listing (every page) in one currency."""

    currency: str
    events: int
    predictions: int
    amount: str

    @classmethod
    def of(cls, t: ListingTotal) -> ListingTotalOut:
        """The wire view of a total."""
        return cls.model_validate(t, from_attributes=True)


class EventsPage(BaseModel):
    """One page of a listing, the cursor of the next (null on the last) and the totals of the
    whole listing."""

    events: list[BilledEventOut]
    next: str | None = Field(description="Pass as ``after`` for the next page.")
    totals: list[ListingTotalOut]


class PartySideOut(BaseModel):
    """One feature party's records of a contract's serving calls in the period."""

    party: str
    org_id: str
    calls: int = Field(description="Serving calls it recorded.")
    rows: int
    matched: int = Field(description="Usage events of the period it recorded serving.")
    unconfirmed: int = Field(description="Usage events of the period it has no record of.")
    unreported: int = Field(description="Events it served that the label party never reported.")
    unattributed: int = Field(description="Calls it served that named no usage event.")


class ReconciliationOut(BaseModel):
    """A contract's usage events against its feature parties' records in one period."""

    contract_id: str
    period_start: datetime
    period_end: datetime
    events: int
    predictions: int
    parties: list[PartySideOut]
    consistent: bool
    differences: list[str]

    @classmethod
    def of(cls, r: Reconciliation, start: datetime, end: datetime) -> ReconciliationOut:
        """The wire view of a contract's reconciliation."""
        return cls(
            contract_id=r.contract_id,
            period_start=start,
            period_end=end,
            events=r.events,
            predictions=r.predictions,
            parties=[PartySideOut.model_validate(p, from_attributes=True) for p in r.parties],
            consistent=r.consistent,
            differences=r.differences,
        )
