"""What metering recorded, for the organisations it bills and pays: the events a buyer is billed
for, and the reconciliation of the label party's events with the feature parties' records."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from services.protocol.bounds import INT32_MAX
from services.registry.api.deps import CallerDep, SessionDep
from services.registry.api.routes.reports import PeriodQuery, resolve_period, stamp
from services.registry.api.schemas_usage import (
    BilledEventOut,
    EventsPage,
    ListingTotalOut,
    ReconciliationOut,
)
from services.registry.api.usage_formats import render_events
from services.registry.store import reconcile, usage_listing
from services.registry.store.usage_listing import EventFilter

router = APIRouter(tags=["usage"])

IdQuery = Annotated[str | None, Query(min_length=1, max_length=36)]


@router.get(
    "/v1/usage/events",
    response_model=EventsPage,
    responses={
        200: {
            "content": {
                "text/csv": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            }
        }
    },
)
def list_events(
    session: SessionDep,
    caller: CallerDep,
    period: PeriodQuery,
    contract_id: IdQuery = None,
    model_version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    payer: Annotated[
        str | None, Query(min_length=1, max_length=64, description="The billed organisation.")
    ] = None,
    after: Annotated[
        str | None, Query(max_length=400, description="The ``next`` cursor of the last page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    fmt: Annotated[Literal["json", "csv", "xlsx"], Query(alias="format")] = "json",
) -> EventsPage | Response:
    """The usage events of a period (scope ``reports:read``), oldest first, each with its price
    (``amount`` = predictions x unit price): a buyer lists what it is billed for.

    A payer sees its own events (the organisation of the access token of each prediction call,
    verified by the registry); a contract's owner and parties every event of the contract;
    operators and organisations granted ``reports:all-contracts`` every event. Filter by
    ``contract_id``, ``model_version`` and ``payer`` (an organisation id); the period is given
    as for the revenue report (``period``, or ``from`` and ``to``, and ``tz``).

    JSON pages ``limit`` events at a time (``next`` is the cursor of the following page) and
    carries the ``totals`` of the whole listing per currency, which equal the revenue report's
    gross for the same payer and period to the cent. ``format=csv|xlsx`` exports every event
    (at most 100,000; a 422 asks to narrow the listing) with a totals row per currency.
    """
    start, end = resolve_period(period.start, period.end, period.period, period.tz)
    f = EventFilter(start, end, contract_id, model_version, payer)
    totals = usage_listing.totals(session, caller, f)
    if fmt != "json":
        rendered = render_events(usage_listing.export_events(session, caller, f), totals, fmt)
        name = f"usage_{stamp(start)}_{stamp(end)}.{rendered.extension}"
        return Response(
            content=rendered.content,
            media_type=rendered.media_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    page, cursor = usage_listing.list_events(session, caller, f, after=after, limit=limit)
    return EventsPage(
        events=[BilledEventOut.of(e) for e in page],
        next=cursor,
        totals=[ListingTotalOut.of(t) for t in totals],
    )


@router.get("/v1/usage/reconciliation")
def reconciliation(
    session: SessionDep, caller: CallerDep, period: PeriodQuery, contract_id: IdQuery = None
) -> list[ReconciliationOut]:
    """The label party's usage events against each feature party's own records of the serving
    calls, per contract, for a period (scope ``reports:read``; a contract's owner and parties,
    operators, and ``reports:all-contracts``).

    Per feature party: ``calls`` it recorded, ``matched`` events, ``unconfirmed`` events (no
    record at that party: metered without it being asked), ``unreported`` events (served, but
    the label party reported no usage event), ``unattributed`` calls (naming no event).
    ``consistent`` is false, and ``differences`` say why, whenever any of the last three is
    not zero.
    """
    start, end = resolve_period(period.start, period.end, period.period, period.tz)
    found = reconcile.reconcile(session, caller, start, end, contract_id)
    return [ReconciliationOut.of(r, start, end) for r in found]
