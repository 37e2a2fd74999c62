"""People's sign-in: the authorization endpoint, the console's callback, sign-out, joining.

The console is an OAuth2 public client of the registry's own authorization server:

1. ``GET /console/login`` makes a ``state`` and a PKCE verifier (kept in an HttpOnly cookie) and
   shows the authorization endpoint's sign-in form with the S256 challenge;
2. ``POST /oauth/authorize`` checks the form's CSRF token, the password (argon2id) and the TOTP
   code, and sends the browser to ``/console/callback`` with a one-time code;
3. ``GET /console/callback`` checks ``state``, redeems the code with the verifier at the token
   endpoint's grant, verifies the access token it gets and opens a server-side session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.protocol.errors import BadRequest, Forbidden
from services.protocol.jwt_verify import InvalidToken, verify_access_token
from services.registry.api.deps import HasherDep, SessionDep, SettingsDep, VaultDep
from services.registry.console.web import (
    AUTHZ_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    ActorDep,
    ConsoleRoute,
    clear_cookie,
    field,
    form_of,
    page,
    see_other,
    set_cookie,
)
from services.registry.credentials import SecretHasher
from services.registry.models_people import User
from services.registry.oauth.access import published_jwks
from services.registry.oauth.keys import KeyVault
from services.registry.oauth.server import (
    HttpRequest,
    OAuthContext,
    RegistryAuthorizationServer,
)
from services.registry.oauth.user_grant import (
    CONSOLE_CLIENT_ID,
    Person,
    console_audience,
    console_redirect_uri,
)
from services.registry.settings import RegistrySettings
from services.registry.store import console_sessions, rate_limits, users
from services.registry.store.users import live_user

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

LOGIN_TTL = 600
_AUTHZ_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _server(
    session: SessionDep, settings: RegistrySettings, hasher: SecretHasher, vault: KeyVault
) -> RegistryAuthorizationServer:
    return RegistryAuthorizationServer(OAuthContext(session, settings, hasher, vault))


def _sign_in_form(
    request: Request, params: dict[str, str], *, csrf: str, error: str | None, status: int
) -> Response:
    response = page(
        request,
        "login.html",
        {"params": params, "authz_csrf": csrf, "error": error, "email": params.get("email", "")},
        status=status,
    )
    set_cookie(response, AUTHZ_COOKIE, csrf, max_age=LOGIN_TTL, same_site="lax")
    return response


@router.get("/console/login")
def login(request: Request, settings: SettingsDep) -> Response:
    """The sign-in form (the console starts an authorization code request with PKCE)."""
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    params = {
        "response_type": "code",
        "client_id": CONSOLE_CLIENT_ID,
        "redirect_uri": console_redirect_uri(settings),
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
    }
    response = _sign_in_form(
        request, params, csrf=secrets.token_urlsafe(24), error=None, status=200
    )
    set_cookie(response, LOGIN_COOKIE, f"{state}.{verifier}", max_age=LOGIN_TTL, same_site="lax")
    return response


@router.get("/oauth/authorize")
def authorize_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    vault: VaultDep,
) -> Response:
    """The authorization endpoint (RFC 6749 4.1.1): the sign-in form for a valid request."""
    params = {k: v for k, v in request.query_params.items() if k in _AUTHZ_FIELDS}
    form = HttpRequest(
        "GET", "/oauth/authorize", request.headers, {k: [v] for k, v in params.items()}
    )
    problem = _server(session, settings, hasher, vault).check_authorization(form)
    if problem is not None:
        raise BadRequest(f"this sign-in request cannot be served: {problem}")
    return _sign_in_form(request, params, csrf=secrets.token_urlsafe(24), error=None, status=200)


@router.post("/oauth/authorize")
async def authorize(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    vault: VaultDep,
) -> Response:
    """Check the person's credentials and answer the authorization request with a code."""
    form = await form_of(request)
    sent, kept = field(form, "csrf_token", limit=100), request.cookies.get(AUTHZ_COOKIE, "")
    if not sent or not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        raise Forbidden("the sign-in form's CSRF token is missing or wrong: reload the page")
    params = {k: field(form, k, limit=500) for k in _AUTHZ_FIELDS if k in form}
    oauth = HttpRequest(
        "POST", "/oauth/authorize", request.headers, {k: [v] for k, v in params.items()}
    )
    server = _server(session, settings, hasher, vault)
    problem = server.check_authorization(oauth)
    if problem is not None:
        raise BadRequest(f"this sign-in request cannot be served: {problem}")
    email = field(form, "email", limit=320)
    if settings.rate_limits:
        ip = request.client.host if request.client else "unknown"
        window = settings.rate_window_seconds
        rate_limits.check(session, {f"sign-in-ip:{ip}": settings.token_rate_per_ip}, window)
        per_email = {f"sign-in:{email.strip().lower()}": settings.sign_in_attempts_per_minute}
        rate_limits.check(session, per_email, 60)
    user = users.authenticate(
        session,
        hasher,
        vault,
        email=email,
        password=field(form, "password", limit=1000),
        totp=field(form, "totp", limit=16) or None,
    )
    if user is None:
        return _sign_in_form(
            request,
            {**params, "email": email},
            csrf=kept,
            error="The e-mail, password or authenticator code is wrong, or the account is "
            "not active.",
            status=400,
        )
    response = server.authorization_response(oauth, Person(user))
    session.commit()
    return response


def _redeem(
    session: SessionDep,
    settings: RegistrySettings,
    server: RegistryAuthorizationServer,
    code: str,
    verifier: str,
) -> tuple[User, str]:
    answer = server.token_response(
        HttpRequest(
            "POST",
            "/oauth/token",
            {},
            {
                "grant_type": ["authorization_code"],
                "code": [code],
                "redirect_uri": [console_redirect_uri(settings)],
                "client_id": [CONSOLE_CLIENT_ID],
                "code_verifier": [verifier],
            },
        )
    )
    if answer.status_code != 200:
        raise BadRequest("the sign-in code was refused: sign in again")
    token = json.loads(bytes(answer.body))["access_token"]
    try:
        claims = verify_access_token(
            token,
            published_jwks(session, settings),
            issuer=settings.issuer,
            audience=console_audience(settings),
            leeway=settings.token_leeway_seconds,
        )
    except InvalidToken as exc:
        raise BadRequest("the sign-in token did not verify: sign in again") from exc
    user = live_user(session, str(claims["sub"]).removeprefix("user:"))
    if user is None:
        raise Forbidden("the account is not active")
    return user, str(claims["jti"])


@router.get("/console/callback")
def callback(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    vault: VaultDep,
    code: Annotated[str, Query(max_length=200)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Where the authorization endpoint sends the browser: the code becomes a session."""
    kept_state, _, verifier = request.cookies.get(LOGIN_COOKIE, "").partition(".")
    if not code or not kept_state or not hmac.compare_digest(state.encode(), kept_state.encode()):
        raise BadRequest("this sign-in is not the one this browser started: sign in again")
    server = _server(session, settings, hasher, vault)
    user, jti = _redeem(session, settings, server, code, verifier)
    opened = console_sessions.open_session(
        session, user, token_jti=jti, ttl=timedelta(seconds=settings.console_session_ttl_seconds)
    )
    session.commit()
    response = see_other("/console/")
    set_cookie(response, SESSION_COOKIE, opened.token, max_age=settings.console_session_ttl_seconds)
    clear_cookie(response, LOGIN_COOKIE)
    clear_cookie(response, AUTHZ_COOKIE)
    return response


@router.post("/console/logout")
def logout(session: SessionDep, person: ActorDep) -> Response:
    """Sign out: the session is revoked server-side, the cookie removed."""
    console_sessions.revoke(session, person.session, actor=person.caller.subject)
    session.commit()
    response = see_other("/console/login")
    clear_cookie(response, SESSION_COOKIE)
    return response
