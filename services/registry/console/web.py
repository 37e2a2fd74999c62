"""The console's web plumbing: templates, the signed-in person, CSRF, security headers.

Every console route runs through :class:`ConsoleRoute`: a domain error (the same
:class:`~services.protocol.errors.SpliceError` the API maps to JSON) becomes an HTML page with
the same status, and a request without a live session is sent to the sign-in page (303).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.protocol.errors import Forbidden, PayloadTooLarge, SpliceError
from services.registry.api.deps import SessionDep, SettingsDep
from services.registry.auth import Caller
from services.registry.models import Organisation
from services.registry.models_people import ConsoleSession, Role, User
from services.registry.people import scopes_of
from services.registry.settings import RegistrySettings
from services.registry.store import console_sessions
from services.registry.store.organisations import get_organisation

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
SESSION_COOKIE = "__Host-splice_session"
LOGIN_COOKIE = "__Host-splice_login"
"""The console client's state and PKCE verifier between sign-in form and callback."""
AUTHZ_COOKIE = "__Host-splice_authz"
"""The authorization endpoint's CSRF token (double submit) of the sign-in form."""
CSRF_HEADER = "x-csrf-token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


class SignInRequired(Exception):
    """No live console session: the browser goes to the sign-in page."""


@dataclass(frozen=True)
class Person:
    """The signed-in person: user, organisation, session and the caller it acts as."""

    user: User
    org: Organisation
    session: ConsoleSession

    @property
    def caller(self) -> Caller:
        """The API caller this person is: its organisation, its role's scopes."""
        return Caller.user(self.user.id, self.user.org_id, scopes_of(self.user.role))

    @property
    def csrf(self) -> str:
        """The session's CSRF token (forms carry it; htmx sends it as a header)."""
        return self.session.csrf_token

    def may(self, scope: str) -> bool:
        """Whether the person's role holds ``scope`` (to show or hide an action)."""
        return scope in scopes_of(self.user.role)

    @property
    def is_admin(self) -> bool:
        """An admin of its organisation."""
        return self.user.role == Role.ADMIN


def set_cookie(
    response: Response,
    name: str,
    value: str,
    *,
    max_age: int,
    same_site: Literal["lax", "strict"] = "strict",
) -> None:
    """An HttpOnly, Secure cookie for the whole site (``__Host-`` names need all of that)."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite=same_site
    )


def clear_cookie(response: Response, name: str) -> None:
    """Remove a cookie set by :func:`set_cookie`."""
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def _person(request: Request, session: SessionDep, settings: SettingsDep) -> Person:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    found = console_sessions.current(
        session, token, idle=timedelta(seconds=settings.console_idle_seconds)
    )
    if found is None:
        raise SignInRequired
    row, user = found
    session.commit()  # the touched idle clock
    person = Person(user=user, org=get_organisation(session, user.org_id), session=row)
    request.state.person = person  # for an error page's navigation
    request.state.session = session  # for a form re-rendered after the body was too large
    return person


PersonDep = Annotated[Person, Depends(_person)]
"""The signed-in person; without a live session the browser is sent to ``/console/login``."""


async def form_of(request: Request) -> FormData:
    """The request's form (url-encoded or multipart), bounded in fields and files."""
    return await request.form(max_files=2, max_fields=200)


async def _csrf_checked(request: Request, person: PersonDep) -> Person:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await form_of(request)
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), person.csrf.encode()):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
    return person


ActorDep = Annotated[Person, Depends(_csrf_checked)]
"""The signed-in person, on a state-changing request that carries the session's CSRF token
(form field ``csrf_token`` or header ``X-CSRF-Token``); 403 otherwise."""


def field(form: FormData, name: str, *, limit: int = 10_000) -> str:
    """A text field of ``form`` ('' when absent; a file counts as absent), cut at ``limit``."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def page(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    person: Person | None = None,
) -> Response:
    """Render template ``name`` with the person and its CSRF token."""
    values = {"person": person, "csrf": person.csrf if person else None, **context}
    return templates.TemplateResponse(request, name, values, status_code=status)


def see_other(url: str) -> RedirectResponse:
    """Post/redirect/get: 303 to ``url``."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: SpliceError) -> Response:
    """A domain error as an HTML page with its status (and its code, for machines), with the
    console's navigation when the request came from a signed-in person."""
    person: Person | None = getattr(request.state, "person", None)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"person": person, "csrf": person.csrf if person else None, "error": exc.body()},
        status_code=exc.status,
    )


TooLargeView = Callable[[Request, Session, "Person | None", str], Response]
"""Re-renders a form whose body was too large (status 413, or 200 for an htmx check that must
be swapped in): request, a session, the signed-in person (None on a public form), the message
for the field."""


F = TypeVar("F", bound=Callable[..., Any])


def when_too_large(view: TooLargeView) -> Callable[[F], F]:
    """Mark a form's route: a body over the registry's limit re-renders the form through
    ``view`` with the error on its field (413); nothing is read further or stored."""

    def mark(endpoint: F) -> F:
        endpoint.too_large_view = view  # type: ignore[attr-defined]
        return endpoint

    return mark


class ConsoleRoute(APIRoute):
    """A console route: domain errors as pages, no session as a redirect to sign-in, a form
    too large for the registry re-rendered with the error on its field (see
    :func:`when_too_large`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        too_large: TooLargeView | None = getattr(self.endpoint, "too_large_view", None)

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return see_other("/console/login")
            except PayloadTooLarge as exc:
                if too_large is None:
                    return error_page(request, exc)
                limit = exc.detail.get("limit") if isinstance(exc.detail, dict) else None
                message = f"the form is larger than the {limit} bytes the registry takes"
                # a signed-in person's request session (a second session would wait on its
                # SQLite lock; the route wrote nothing, its transaction ends here), else a new one
                person: Person | None = getattr(request.state, "person", None)
                session: Session = getattr(request.state, "session", None) or db(request)
                session.rollback()
                try:
                    return too_large(request, session, person, message + "; nothing was stored")
                finally:
                    session.close()
            except SpliceError as exc:
                return error_page(request, exc)
            finally:
                await request.close()  # the form's uploaded files

        return route


def db(request: Request) -> Session:
    """A new session on the app's engine (for code outside a request dependency)."""
    session: Session = request.app.state.sessions()
    return session


def settings_of(request: Request) -> RegistrySettings:
    """The app's settings."""
    settings: RegistrySettings = request.app.state.settings
    return settings


class SecurityHeaders:
    """Content-Security-Policy and friends on every console and sign-in response."""

    PREFIXES = ("/console", "/oauth/authorize")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.PREFIXES):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not str(scope["path"]).startswith("/console/static"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)
