"""Usage metering: the label party reports the predictions it served."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.registry.api.deps import JSON_BODY, CallerDep, SessionDep
from services.registry.api.schemas_usage import UsageBatchIn, UsageReceiptOut
from services.registry.models import utcnow
from services.registry.observability import metrics_of
from services.registry.store import usage

router = APIRouter(tags=["usage"])


@router.post("/v1/usage", dependencies=[JSON_BODY])
def report_usage(
    request: Request, session: SessionDep, caller: CallerDep, body: UsageBatchIn
) -> UsageReceiptOut:
    """Count usage events (the label party of each event's contract, scope ``usage:write``).

    Idempotent per event id: an event already stored with the same fields is listed in
    ``duplicates`` and counted once, however often or concurrently it is posted. Other events
    are ``accepted`` or ``refused`` with a code: ``unknown_contract``; ``not_label_party`` (the
    caller is not the label party of the event's contract version or of the version in
    force); ``unknown_version`` (no such contract version was ever in force, or no such model
    version); ``outside_window`` (timestamp more than 7 days ago or more than 5 minutes
    ahead); ``usage_cap_reached`` (the contract's cap for the event's period, in UTC, is used
    up); ``event_conflict`` (the id is stored with other fields). A refused event will be
    refused again: do not retry it. A batch that does not parse (1 to 1000 events, integer
    counts of at least 1, no unknown fields) is a 422 naming the field, and nothing is written.
    """
    outcome = usage.ingest(session, caller, body.events, now=utcnow())
    session.commit()
    metrics_of(request).usage(len(outcome.accepted), len(outcome.duplicates), len(outcome.refused))
    return UsageReceiptOut.of(outcome)
