"""Dependencies of the registry API, as ``Annotated`` aliases."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.protocol.errors import (
    BadRequest,
    ErrorCode,
    Forbidden,
    Unauthenticated,
    UnsupportedMediaType,
)
from services.protocol.jwt_verify import InvalidToken
from services.registry.auth import Caller
from services.registry.credentials import ADMIN_PREFIX, SecretHasher
from services.registry.models import InitialAccessToken
from services.registry.oauth.access import check_access_token
from services.registry.oauth.claimed import claimed_client_id
from services.registry.oauth.keys import KeyVault
from services.registry.oauth.server import HttpRequest, OAuthContext, RegistryAuthorizationServer
from services.registry.settings import RegistrySettings
from services.registry.store import admins, clients, rate_limits
from services.registry.store.contracts import ContractExpired

log = logging.getLogger("splice.registry.auth")

_registry_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RegistryToken",
    description=(
        "An access token from `POST /oauth/token` (client credentials), or the operator admin "
        "token."
    ),
)
_initial_access_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="InitialAccessToken",
    description="The one-time initial access token issued when an organisation is approved.",
)
BearerCredentials = HTTPAuthorizationCredentials | None


async def _settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


async def _hasher(request: Request) -> SecretHasher:
    hasher: SecretHasher = request.app.state.hasher
    return hasher


async def _vault(request: Request) -> KeyVault:
    vault: KeyVault = request.app.state.vault
    return vault


def _session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


SettingsDep = Annotated[RegistrySettings, Depends(_settings)]
HasherDep = Annotated[SecretHasher, Depends(_hasher)]
VaultDep = Annotated[KeyVault, Depends(_vault)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]
"""One session per request, for reading; anything uncommitted is rolled back."""


def _unit_of_work(session: SessionDep) -> Iterator[Session]:
    """The request's session as one unit of work: committed when the route returns, rolled
    back when it raises, except that a contract the store found expired stays expired (that
    change is committed before the 409 leaves)."""
    try:
        yield session
    except ContractExpired:
        session.commit()
        raise
    except BaseException:
        session.rollback()
        raise
    session.commit()


WorkDep = Annotated[Session, Depends(_unit_of_work, scope="function")]
"""The session of a route that changes something: see :func:`_unit_of_work`."""


def _limit(session: Session, settings: RegistrySettings, limits: dict[str, int]) -> None:
    """Count the request in the database (committed at once: the session has only read so
    far); 429 past a limit."""
    if settings.rate_limits:
        rate_limits.check(session, limits, settings.rate_window_seconds)


def _caller(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[BearerCredentials, Depends(_registry_bearer)],
) -> Caller:
    if credentials is None:
        raise Unauthenticated("this endpoint needs an 'Authorization: Bearer <token>' header")
    token = credentials.credentials
    if token.startswith(ADMIN_PREFIX):
        admin = admins.admin_for_token(session, token)
        if admin is None:
            raise Unauthenticated("the bearer token is not valid", code=ErrorCode.INVALID_TOKEN)
        _limit(session, settings, {f"api:admin:{admin.id}": settings.api_rate_per_client})
        return Caller.admin(admin.id)
    if token.count(".") != 2:
        raise Unauthenticated("the bearer token is not valid", code=ErrorCode.INVALID_TOKEN)
    try:
        access = check_access_token(session, settings, token, audience=settings.issuer)
    except InvalidToken as exc:
        log.info("access token refused: %s", exc.reason)
        raise
    if not access.active or access.org_id is None:
        raise Unauthenticated(
            "the access token was revoked, or its client or organisation is no longer active",
            code=ErrorCode.INVALID_TOKEN,
        )
    _limit(session, settings, {f"api:client:{access.client_id}": settings.api_rate_per_client})
    return Caller.client(access.client_id, access.org_id, access.scopes)


CallerDep = Annotated[Caller, Depends(_caller)]
"""The authenticated caller: an organisation's client (a registry access token whose audience
is the registry) or the operator admin; 401 without valid credentials."""


async def _admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this endpoint is for registry operators")
    return caller


AdminDep = Annotated[Caller, Depends(_admin)]
"""An operator admin; 401 without credentials, 403 for anyone else."""


def _initial_access(
    session: SessionDep,
    credentials: Annotated[BearerCredentials, Depends(_initial_access_bearer)],
) -> InitialAccessToken:
    if credentials is None:
        raise Unauthenticated("client registration needs 'Authorization: Bearer <initial token>'")
    return clients.initial_access_for_token(session, credentials.credentials)


InitialAccessDep = Annotated[InitialAccessToken, Depends(_initial_access)]
"""A valid (unused, unexpired) initial access token; 401 otherwise."""


async def _json_media(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"this endpoint takes application/json, not {media or 'no content type'}",
            detail={"expected": "application/json"},
        )


JSON_BODY = Depends(_json_media)
"""Route dependency of endpoints with a JSON body: any other content type is a 415."""


async def _json_media_if_any(request: Request) -> None:
    if await request.body():
        await _json_media(request)


OPTIONAL_JSON_BODY = Depends(_json_media_if_any)
"""Route dependency of endpoints whose JSON body may be left out: a body of another content type
is a 415."""


async def _form(request: Request) -> HttpRequest:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"this endpoint takes application/x-www-form-urlencoded, not {media or 'nothing'}",
            detail={"expected": "application/x-www-form-urlencoded"},
        )
    try:
        text = (await request.body()).decode("utf-8")
        form = parse_qs(text, keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the form body is not valid UTF-8 url-encoded data") from exc
    return HttpRequest(
        method=request.method, path=request.url.path, headers=request.headers, form=form
    )


FormDep = Annotated[HttpRequest, Depends(_form)]
"""An OAuth endpoint request (RFC 6749 form body); 415 for any other content type."""


def _oauth_server(
    session: SessionDep, settings: SettingsDep, hasher: HasherDep, vault: VaultDep
) -> RegistryAuthorizationServer:
    return RegistryAuthorizationServer(OAuthContext(session, settings, hasher, vault))


OAuthServerDep = Annotated[RegistryAuthorizationServer, Depends(_oauth_server)]
"""The OAuth2 authorization server, bound to this request's session."""


def _token_rate(
    request: Request, form: FormDep, session: SessionDep, settings: SettingsDep
) -> None:
    ip = request.client.host if request.client else "unknown"
    limits = {f"token-ip:{ip}": settings.token_rate_per_ip}
    claimed = claimed_client_id(form)
    if claimed:
        limits[f"token-client:{claimed[:150]}"] = settings.token_rate_per_client
    _limit(session, settings, limits)


TOKEN_RATE = Depends(_token_rate)
"""Route dependency of the token endpoint: per source address and per (claimed) client id,
counted in the database before the client is authenticated (so failed attempts count too)."""


def _address_rate(request: Request, session: SessionDep, settings: SettingsDep) -> None:
    ip = request.client.host if request.client else "unknown"
    _limit(session, settings, {f"token-ip:{ip}": settings.token_rate_per_ip})


ADDRESS_RATE = Depends(_address_rate)
"""Route dependency of introspection and revocation: per source address only (parties
introspect their callers' tokens; a party's own client is not held to the token-request limit
for that)."""
