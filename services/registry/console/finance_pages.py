"""Usage and revenue, and the audit log.

The revenue table and its downloads come from :func:`services.registry.store.reports.revenue`
and :func:`services.registry.api.revenue_formats.render`, the functions behind
``GET /v1/reports/revenue``: a download is byte for byte the API's export for the same caller
and period. The audit page lists the organisation's entries and verifies the hash chain with
the API's rules (``reports:read`` and the operator's ``audit:verify`` grant).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.protocol.errors import Forbidden, Unprocessable
from services.registry.api.deps import SessionDep
from services.registry.api.revenue_formats import render
from services.registry.api.routes.reports import resolve_period, stamp
from services.registry.console.web import ActorDep, ConsoleRoute, PersonDep, page
from services.registry.store import audit, grants, reports, usage_listing
from services.registry.store.grants import AUDIT_VERIFY
from services.registry.store.usage_listing import EventFilter

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PeriodQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9]{4}-[0-9]{2}$")]


def _month(period: str | None) -> str:
    return period or datetime.now(UTC).strftime("%Y-%m")


@router.get("/console/finance")
def finance(
    request: Request, session: SessionDep, person: PersonDep, period: PeriodQuery = None
) -> Response:
    """Revenue per contract, model version and party over a month, and the month's usage."""
    month = _month(period)
    lo, hi = resolve_period(None, None, month, None)
    rows = reports.revenue(session, person.caller, lo, hi)  # checks reports:read
    totals = usage_listing.totals(session, person.caller, EventFilter(start=lo, end=hi))
    context = {
        "chart": _daily_chart(session, person, lo, hi),
        "period": month,
        "rows": [r for r in rows if r.row_type == "line"],
        "totals": [r for r in rows if r.row_type == "total"],
        "usage": totals,
    }
    return page(request, "finance.html", context, person=person)


def _daily_chart(
    session: SessionDep, person: PersonDep, lo: datetime, hi: datetime
) -> dict[str, Any] | None:
    """Predictions per day of the period as SVG bars (None: too many events to draw)."""
    try:
        events = usage_listing.export_events(session, person.caller, EventFilter(start=lo, end=hi))
    except Unprocessable:
        return None
    days = max(1, (hi - lo).days)
    per_day = [0] * days
    for e in events:
        per_day[min(days - 1, (e.occurred_at - lo).days)] += e.predictions
    top = max(per_day) or 1
    width, height = 720, 140
    step = width / days
    bars = [
        {
            "x": round(i * step + 1, 1),
            "w": round(step - 2, 1),
            "h": round(height * n / top, 1),
            "y": round(height - height * n / top, 1),
            "day": (lo + timedelta(days=i)).strftime("%Y-%m-%d"),
            "n": n,
        }
        for i, n in enumerate(per_day)
    ]
    return {"bars": bars, "width": width, "height": height, "top": top, "total": sum(per_day)}


@router.get("/console/finance/revenue")
def download(
    session: SessionDep,
    person: PersonDep,
    period: PeriodQuery = None,
    fmt: Annotated[Literal["csv", "json", "xlsx"], Query(alias="format")] = "csv",
) -> Response:
    """The month's revenue report as the API exports it (same rows, same bytes)."""
    lo, hi = resolve_period(None, None, _month(period), None)
    rows = reports.revenue(session, person.caller, lo, hi)
    rendered = render(rows, fmt)
    audit.append(
        session,
        actor=person.caller.subject,
        action="report.downloaded",
        subject=f"organisation:{person.user.org_id}",
        payload={"period": _month(period), "format": fmt, "rows": len(rows)},
    )
    session.commit()
    name = f"revenue_{stamp(lo)}_{stamp(hi)}.{rendered.extension}"
    return Response(
        content=rendered.content,
        media_type=rendered.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/console/audit")
def audit_log(
    request: Request,
    session: SessionDep,
    person: PersonDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """The organisation's audit entries (its admins), newest first, with filters."""
    person.caller.require_manager(person.user.org_id, operators=False)
    found = audit.organisation_entries(
        session, person.user.org_id, action=action or None, before=before, limit=50
    )
    context = {
        "entries": found,
        "action": action or "",
        "may_verify": person.may("reports:read")
        and grants.holds(session, person.caller, AUDIT_VERIFY),
        "report": None,
    }
    return page(request, "audit.html", context, person=person)


@router.post("/console/audit/verify")
def verify(request: Request, session: SessionDep, person: ActorDep) -> Response:
    """Recompute the hash chain (htmx swaps the answer in)."""
    person.caller.require_scope("reports:read")
    if not grants.holds(session, person.caller, AUDIT_VERIFY):
        raise Forbidden(f"verifying the audit log needs the operator's grant {AUDIT_VERIFY!r}")
    report = audit.verify(session)
    audit.append(
        session,
        actor=person.caller.subject,
        action="audit.verified",
        subject=f"organisation:{person.user.org_id}",
        payload={"ok": report.ok, "entries": report.entries},
    )
    session.commit()
    return page(request, "audit_verify.html", {"report": report}, person=person)
