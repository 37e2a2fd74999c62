"""Request and answer bodies of usage ingestion.

The events are the wire type the label party writes to its outbox
(:class:`services.protocol.messages.UsageEvent`), read strictly: numbers must be JSON integers
(``"5"`` or ``5.0`` is a 422, not 5) and unknown fields are refused. A batch that does not parse
writes nothing; one that parses gets an answer per event.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictInt

from services.protocol.messages import UsageEvent
from services.registry.models_usage import UsageEvent as StoredEvent
from services.registry.store.usage import Outcome

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
    contract_version: StrictInt = Field(ge=1)
    model_version: StrictInt = Field(ge=1)
    count: StrictInt = Field(ge=1, le=1_000_000, description="Predictions served.")


class UsageBatchIn(BaseModel):
    """Usage events to count (1 to 1000)."""

    model_config = {"extra": "forbid"}

    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class RefusedEvent(BaseModel):
    """An event that is not counted, now or ever: posting it again gets the same answer."""

    event_id: str
    code: str = Field(
        description="unknown_contract, not_label_party, unknown_version, outside_window, "
        "usage_cap_reached or event_conflict."
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
