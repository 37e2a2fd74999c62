"""Dependencies of the registry API, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.protocol.errors import ErrorCode, Forbidden, Unauthenticated, UnsupportedMediaType
from services.registry.auth import Caller
from services.registry.credentials import SecretHasher
from services.registry.models import InitialAccessToken
from services.registry.settings import RegistrySettings
from services.registry.store import admins, clients

_registry_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RegistryToken",
    description="The operator admin token (OAuth2 access tokens follow).",
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


def _session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


SettingsDep = Annotated[RegistrySettings, Depends(_settings)]
HasherDep = Annotated[SecretHasher, Depends(_hasher)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]
"""One session per request; routes commit explicitly, anything uncommitted is rolled back."""


def _caller(
    session: SessionDep,
    credentials: Annotated[BearerCredentials, Depends(_registry_bearer)],
) -> Caller:
    if credentials is None:
        raise Unauthenticated("this endpoint needs an 'Authorization: Bearer <token>' header")
    admin = admins.admin_for_token(session, credentials.credentials)
    if admin is None:
        raise Unauthenticated("the bearer token is not valid", code=ErrorCode.INVALID_TOKEN)
    return Caller.admin(admin.id)


CallerDep = Annotated[Caller, Depends(_caller)]
"""The authenticated caller; 401 without valid credentials."""


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
