"""Onboarding pages: apply as an organisation, people and roles, OAuth clients.

Each action calls the store function the API route calls, as the signed-in person's
:class:`~services.registry.auth.Caller`; the store checks the same scopes for both.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.responses import Response

from services.protocol.errors import NotFound, SpliceError
from services.registry.api.deps import HasherDep, SessionDep, SettingsDep
from services.registry.api.schemas import ClientRegistration, OrganisationApplication
from services.registry.console.forms import (
    FieldErrors,
    from_domain,
    parse_json_upload,
    validated,
)
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
from services.registry.models import AuthMethod, OrgKind
from services.registry.models_people import Role
from services.registry.oauth.scopes import CLIENT_SCOPES, ORG_ADMIN
from services.registry.people import ROLE_TEXT
from services.registry.store import clients, console_sessions, organisations, users

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
IdPath = Annotated[str, Path(min_length=1, max_length=36)]
CONSOLE_SCOPES = sorted(s for s in CLIENT_SCOPES if s != ORG_ADMIN)
"""Scopes a client registered in the console may hold (org:admin stays with the API)."""


@router.get("/console/register")
def register_form(request: Request) -> Response:
    """Apply to join the registry with an invitation code."""
    return page(request, "register.html", {"errors": {}, "values": {}, "kinds": list(OrgKind)})


def _register_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    context = {"errors": {"name": message}, "values": {}, "kinds": list(OrgKind)}
    return page(request, "register.html", context, status=413)


@router.post("/console/register")
@when_too_large(_register_too_large)
async def register(request: Request, session: SessionDep) -> Response:
    """The application: the organisation starts pending until an operator approves it."""
    form = await form_of(request)
    values = {
        k: field(form, k, limit=400) for k in ("name", "kind", "contact_email", "invitation_code")
    }
    try:
        body = validated(OrganisationApplication, values)
        org = organisations.apply(
            session,
            name=body.name,
            kind=body.kind,
            contact_email=body.contact_email,
            invitation_code=body.invitation_code,
        )
        session.commit()
    except (FieldErrors, SpliceError) as exc:
        session.rollback()
        errors = (
            exc.errors
            if isinstance(exc, FieldErrors)
            else from_domain(exc, "invitation_code").errors
        )
        context = {"errors": errors, "values": values, "kinds": list(OrgKind)}
        return page(request, "register.html", context, status=422)
    return page(request, "registered.html", {"org": org})


@router.get("/console/users")
def people(request: Request, session: SessionDep, person: PersonDep) -> Response:
    """The organisation's people and open invitations (its admins)."""
    return _people(request, session, person, errors={}, issued=None, status=200)


def _people(
    request: Request,
    session: SessionDep,
    person: PersonDep,
    *,
    errors: dict[str, str],
    issued: dict[str, Any] | None,
    status: int,
    values: dict[str, str] | None = None,
) -> Response:
    org_id = person.user.org_id
    pending = users.pending_invitations(session, person.caller, org_id)  # checks org:admin
    context = {
        "users": users.list_users(session, person.caller, org_id),
        "pending": pending,
        "roles": [r.value for r in Role],
        "role_text": ROLE_TEXT,
        "errors": errors,
        "issued": issued,
        "values": values or {},
    }
    return page(request, "users.html", context, person=person, status=status)


@router.post("/console/users/invite")
async def invite(
    request: Request, session: SessionDep, settings: SettingsDep, person: ActorDep
) -> Response:
    """Invite a person by e-mail with a role; the code is shown once."""
    person.caller.require_manager(person.user.org_id)
    form = await form_of(request)
    values = {"email": field(form, "email", limit=400), "role": field(form, "role", limit=20)}
    try:
        if values["role"] not in {r.value for r in Role}:
            raise FieldErrors({"role": f"one of {', '.join(r.value for r in Role)}"})
        issued = users.invite(
            session,
            person.caller,
            person.user.org_id,
            email=values["email"],
            role=Role(values["role"]),
            ttl=timedelta(hours=settings.user_invitation_ttl_hours),
        )
        session.commit()
    except (FieldErrors, SpliceError) as exc:
        session.rollback()
        errors = exc.errors if isinstance(exc, FieldErrors) else from_domain(exc, "email").errors
        return _people(
            request, session, person, errors=errors, issued=None, status=422, values=values
        )
    shown = {
        "email": issued.invitation.email,
        "code": issued.code,
        "link": f"{settings.issuer}/console/join?code={issued.code}",
        "expires_at": issued.invitation.expires_at,
    }
    return _people(request, session, person, errors={}, issued=shown, status=201)


@router.post("/console/users/{user_id}/role")
async def change_role(
    request: Request, session: SessionDep, person: ActorDep, user_id: IdPath
) -> Response:
    """Give a person another role."""
    person.caller.require_manager(person.user.org_id)
    form = await form_of(request)
    role = field(form, "role", limit=20)
    if role not in {r.value for r in Role}:
        return _people(
            request, session, person, errors={"role": "unknown role"}, issued=None, status=422
        )
    users.set_role(session, person.caller, user_id, Role(role))
    session.commit()
    return see_other("/console/users")


@router.post("/console/users/{user_id}/disable")
def disable_user(session: SessionDep, person: ActorDep, user_id: IdPath) -> Response:
    """Disable a person: their sessions end at once."""
    users.disable(session, person.caller, user_id)
    console_sessions.revoke_all(session, user_id)
    session.commit()
    return see_other("/console/users")


@router.get("/console/clients")
def client_list(request: Request, session: SessionDep, person: PersonDep) -> Response:
    """The organisation's OAuth clients (its admins)."""
    return _clients(request, session, person, errors={}, created=None, status=200)


def _clients(
    request: Request,
    session: SessionDep,
    person: PersonDep,
    *,
    errors: dict[str, str],
    created: dict[str, Any] | None,
    status: int,
    values: dict[str, Any] | None = None,
) -> Response:
    org_id = person.user.org_id
    person.caller.require_manager(org_id)
    context = {
        "clients": clients.list_clients(session, org_id),
        "scopes": CONSOLE_SCOPES,
        "scope_text": CLIENT_SCOPES,
        "errors": errors,
        "created": created,
        "values": values or {"scopes": []},
    }
    return page(request, "clients.html", context, person=person, status=status)


def _clients_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    assert person is not None  # read from the cookie before the form
    return _clients(request, session, person, errors={"jwks": message}, created=None, status=413)


@router.post("/console/clients")
@when_too_large(_clients_too_large)
async def register_client(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    person: ActorDep,
) -> Response:
    """Register an OAuth client: a secret (shown once) or an uploaded public key set."""
    person.caller.require_manager(person.user.org_id)
    form = await form_of(request)
    method = field(form, "auth_method", limit=40)
    scopes = [s for s in form.getlist("scope") if isinstance(s, str)]
    values: dict[str, Any] = {
        "client_name": field(form, "client_name", limit=300),
        "auth_method": method,
        "scopes": scopes,
    }
    try:
        jwks = None
        upload = form.get("jwks")
        if method == AuthMethod.PRIVATE_KEY_JWT.value:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise FieldErrors({"jwks": "upload the client's public key set (JWKS, JSON)"})
            raw = await upload.read(settings.console_max_upload_bytes + 1)
            jwks = parse_json_upload(raw, "jwks", settings.console_max_upload_bytes)
        body = validated(
            ClientRegistration,
            {
                "token_endpoint_auth_method": method,
                "scope": " ".join(scopes),
                "jwks": jwks,
                "client_name": values["client_name"] or None,
            },
        )
        issued = organisations.issue_initial_access_token(
            session,
            person.user.org_id,
            actor=person.caller.subject,
            ttl=timedelta(minutes=5),
        )
        created = clients.register_client(
            session,
            hasher,
            issued.record,
            auth_method=AuthMethod(body.token_endpoint_auth_method),
            scope=body.scope,
            jwks=body.jwks.as_json() if body.jwks is not None else None,
            client_name=body.client_name,
            actor=person.caller.subject,
        )
        session.commit()
    except (FieldErrors, SpliceError) as exc:
        session.rollback()
        errors = exc.errors if isinstance(exc, FieldErrors) else from_domain(exc, "form").errors
        return _clients(
            request, session, person, errors=errors, created=None, status=422, values=values
        )
    shown = {
        "client_id": created.client.client_id,
        "secret": created.secret,
        "scope": created.client.scope,
    }
    return _clients(request, session, person, errors={}, created=shown, status=201)


@router.post("/console/clients/{client_id}/revoke")
def revoke_client(session: SessionDep, person: ActorDep, client_id: IdPath) -> Response:
    """Revoke a client of the organisation: its tokens stop working at once."""
    person.caller.require_manager(person.user.org_id)
    try:
        client = clients.get_client(session, client_id)
    except NotFound:
        client = None
    if client is None or client.org_id != person.user.org_id:
        raise NotFound("no such client")
    clients.revoke_client(session, client_id, actor=person.caller.subject)
    session.commit()
    return see_other("/console/clients")
