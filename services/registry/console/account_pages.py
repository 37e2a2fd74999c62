"""The person's own pages: accepting an invitation (name and password) and the account with
two-factor sign-in (TOTP)."""

from __future__ import annotations

from typing import Annotated

import pyotp
from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from services.protocol.errors import SpliceError
from services.registry.api.deps import HasherDep, SessionDep, VaultDep
from services.registry.console.forms import from_domain
from services.registry.console.web import (
    ActorDep,
    ConsoleRoute,
    Person,
    PersonDep,
    field,
    form_of,
    page,
    see_other,
    when_too_large,
)
from services.registry.models_people import User
from services.registry.store import users

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/console/join")
def join_form(request: Request, code: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Accept an invitation: choose a name and a password."""
    return page(request, "join.html", {"code": code, "errors": {}, "name": ""})


def _join_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    return page(
        request, "join.html", {"code": "", "errors": {"name": message}, "name": ""}, status=413
    )


@router.post("/console/join")
@when_too_large(_join_too_large)
async def join(request: Request, session: SessionDep, hasher: HasherDep) -> Response:
    """Create the account an invitation was for; then sign in."""
    form = await form_of(request)
    code, name = field(form, "code", limit=200), field(form, "name", limit=300)
    password, again = field(form, "password", limit=1000), field(form, "password2", limit=1000)
    errors: dict[str, str] = {}
    if password != again:
        errors["password2"] = "the two passwords differ"
    else:
        try:
            users.accept(session, hasher, code, name=name, password=password)
            session.commit()
            return see_other("/console/login")
        except SpliceError as exc:
            session.rollback()
            errors = from_domain(exc, "code").errors
    return page(request, "join.html", {"code": code, "errors": errors, "name": name}, status=422)


@router.get("/console/account")
def account(request: Request, person: PersonDep) -> Response:
    """The person's account: role, scopes, two-factor sign-in."""
    seed = users.new_totp_seed()
    return page(
        request,
        "account.html",
        {"seed": seed, "uri": _otpauth(person.user.email, seed), "error": None, "done": False},
        person=person,
    )


def _otpauth(email: str, seed: str) -> str:
    return pyotp.TOTP(seed).provisioning_uri(name=email, issuer_name="Splice")


@router.post("/console/account/totp")
async def enable_totp(
    request: Request, session: SessionDep, vault: VaultDep, person: ActorDep
) -> Response:
    """Turn on TOTP once a code from the authenticator proves it holds the seed."""
    form = await form_of(request)
    seed, code = field(form, "seed", limit=64), field(form, "totp", limit=16)
    user = session.get_one(User, person.user.id)
    if len(seed) < 16 or not users.enable_totp(session, vault, user, seed, code):
        return page(
            request,
            "account.html",
            {
                "seed": seed,
                "uri": _otpauth(person.user.email, seed),
                "error": "wrong code",
                "done": False,
            },
            person=person,
            status=422,
        )
    session.commit()
    return page(
        request, "account.html", {"seed": "", "uri": "", "error": None, "done": True}, person=person
    )
