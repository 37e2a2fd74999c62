"""The console's overview page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.registry.api.deps import SessionDep
from services.registry.console.web import ConsoleRoute, PersonDep, page, see_other
from services.registry.models import utcnow
from services.registry.people import ROLE_TEXT, scopes_of
from services.registry.store.contracts import effective_state, list_contracts

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console")
def bare() -> Response:
    """``/console`` is ``/console/``."""
    return see_other("/console/")


@router.get("/console/")
def overview(request: Request, session: SessionDep, person: PersonDep) -> Response:
    """What the person's organisation has going on, and what the person may do."""
    now = utcnow()
    contracts = [(c, effective_state(c, now)) for c in list_contracts(session, person.caller, None)]
    return page(
        request,
        "home.html",
        {
            "contracts": contracts[:10],
            "role_text": ROLE_TEXT[person.user.role],
            "scopes": sorted(scopes_of(person.user.role)),
        },
        person=person,
    )
