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
from services.registry.oauth.keys import KeyVault
from services.registry.oauth.server import HttpRequest, OAuthContext, RegistryAuthorizationServer
from services.registry.settings import RegistrySettings
from services.registry.store import admins, clients

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
"""One session per request; routes commit explicitly, anything uncommitted is rolled back."""


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
