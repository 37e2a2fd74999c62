"""Usage metering: the label party reports the predictions it served, the feature parties the
serving calls they answered."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.registry.api.deps import JSON_BODY, CallerDep, SettingsDep, WorkDep
from services.registry.api.schemas_usage import (
    ObservationBatchIn,
    UsageBatchIn,
    UsageReceiptOut,
)
from services.registry.models import utcnow
from services.registry.observability import metrics_of
from services.registry.store import observations, usage

router = APIRouter(tags=["usage"])


@router.post("/v1/usage", dependencies=[JSON_BODY])
def report_usage(
    request: Request,
    session: WorkDep,
    settings: SettingsDep,
    caller: CallerDep,
    body: UsageBatchIn,
) -> UsageReceiptOut:
    """Count usage events (the label party of each event's contract, scope ``usage:write``).

    Idempotent per event id: an event already stored with the same fields is listed in
    ``duplicates`` and counted once, however often or concurrently it is posted. Other events
    are ``accepted`` or ``refused`` with a code: ``unknown_contract``; ``not_label_party`` (the
    caller is not the label party of the event's contract version or of the version in
    force); ``unknown_version`` (no such contract version was ever in force, or no such model
    version); ``outside_window`` (timestamp more than 7 days ago or more than 5 minutes
    ahead); ``unverified_caller`` (``caller_token``, the access token the prediction call
    carried, is missing, not signed by this registry, not valid when the call was served, not
    for this contract or this label party, or of an organisation that is no member of the
    contract); ``caller_mismatch`` (``caller_org`` is not the token's organisation: the token's
    is billed); ``usage_cap_reached`` (the contract's cap for the event's period, in UTC, is
    used up); ``event_conflict`` (the id is stored with other fields). A refused event will be
    refused again: do not retry it. A batch that does not parse (1 to 1000 events, integer
    counts of at least 1, no unknown fields) is a 422 naming the field, and nothing is written.
    """
    outcome = usage.ingest(session, caller, body.events, now=utcnow(), settings=settings)
    metrics_of(request).usage(len(outcome.accepted), len(outcome.duplicates), len(outcome.refused))
    return UsageReceiptOut.of(outcome)


@router.post("/v1/usage/observations", dependencies=[JSON_BODY])
def report_observations(
    session: WorkDep, caller: CallerDep, body: ObservationBatchIn
) -> UsageReceiptOut:
    """Store a feature party's own records of the serving calls it answered (a feature party of
    each observation's contract, scope ``usage:write``): its side of metering, reconciled with
    the label party's usage events (``GET /v1/usage/reconciliation``).

    Idempotent per observation id, answered like usage events: ``accepted``, ``duplicates``,
    or ``refused`` with ``unknown_contract``, ``not_feature_party``, ``unknown_job`` (the job
    is not the contract's), ``outside_window`` or ``event_conflict``. A batch that does not
    parse is a 422 naming the field, and nothing is written.
    """
    outcome = observations.ingest(session, caller, body.observations, now=utcnow())
    return UsageReceiptOut.of(outcome)
