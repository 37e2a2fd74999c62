"""A FastAPI (Starlette) adapter around Authlib's framework-independent authorization server.

Authlib ships server integrations for Flask and Django only. This module is the equivalent for
the registry: :class:`HttpRequest` carries what Authlib needs of a Starlette request (the route
reads the body asynchronously, Authlib then runs synchronously in the worker thread of the
route), :class:`RegistryAuthorizationServer` implements the framework hooks
(``create_oauth2_request``, ``create_json_request``, ``handle_response``, ``send_signal``) and
the storage hooks (``query_client``, ``save_token``) on the registry's database.

One server is built per request around that request's database session: cheap (a handful of
registrations) and free of shared mutable state between concurrent requests.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidRequestError,
    JsonPayload,
    JsonRequest,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, RedirectResponse, Response

from services.registry.credentials import SecretHasher
from services.registry.oauth.endpoints import (
    RegistryIntrospectionEndpoint,
    RegistryRevocationEndpoint,
)
from services.registry.oauth.grants import (
    PrivateKeyJwt,
    RegistryClient,
    RegistryClientCredentialsGrant,
    RegistryTokenGenerator,
    TokenRequest,
    client_secret_basic,
)
from services.registry.oauth.keys import KeyVault
from services.registry.oauth.scopes import CLIENT_SCOPES
from services.registry.oauth.user_grant import (
    AUTHORIZATION_CODE,
    CONSOLE_CLIENT_ID,
    ConsoleClient,
    ConsoleCodeGrant,
    Person,
    S256Only,
    UserTokenGenerator,
)
from services.registry.settings import RegistrySettings
from services.registry.store import clients, signing_keys

log = logging.getLogger("splice.registry.oauth")

INTROSPECTION = "introspection"
REVOCATION = "revocation"


@dataclass(frozen=True)
class OAuthContext:
    """What the authorization server works with during one request."""

    session: Session
    settings: RegistrySettings
    hasher: SecretHasher
    vault: KeyVault


@dataclass(frozen=True)
class HttpRequest:
    """The parts of an HTTP request Authlib reads; ``form`` maps each name to all its values."""

    method: str
    path: str
    headers: Mapping[str, str]
    form: Mapping[str, list[str]] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None


class _FormPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: Mapping[str, list[str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, values in form.items():
            self._datalist[name].extend(values)
        self._data = {name: values[0] for name, values in form.items() if values}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """An :class:`HttpRequest` as Authlib's ``OAuth2Request``.

    ``uri`` is built from the configured issuer, not from the request: behind a TLS-terminating
    proxy the request URL says http. Authlib refuses (``insecure_transport``) an issuer that is
    neither https nor a loopback address.
    """

    def __init__(self, request: HttpRequest, uri: str) -> None:
        super().__init__(request.method, uri, headers=request.headers)
        self.payload = _FormPayload(request.form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, body: Mapping[str, Any] | None) -> None:
        self._body = dict(body or {})

    @property
    def data(self) -> dict[str, Any]:
        return self._body


class StarletteJsonRequest(JsonRequest):  # type: ignore[misc]
    """An :class:`HttpRequest` with a JSON body as Authlib's ``JsonRequest``."""

    def __init__(self, request: HttpRequest, uri: str) -> None:
        super().__init__(request.method, uri, request.headers)
        self.payload = _JsonPayload(request.json)


def client_authentications(request: HttpRequest) -> list[str]:
    """The ways a request authenticates its client: an ``Authorization`` header (HTTP Basic,
    or the operator's bearer token), a ``client_secret`` or a ``client_assertion`` in the body.
    A ``client_id`` alone authenticates nothing."""
    found = []
    header = request.headers.get("authorization")
    if header:
        found.append(header.partition(" ")[0].lower() or "authorization")
    for name in ("client_secret", "client_assertion"):
        if name in request.form:
            found.append(name)
    return found


class RegistryAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """The registry's OAuth2 authorization server for one request.

    Organisations' clients use the client credentials grant and authenticate with
    ``client_secret_basic`` or ``private_key_jwt``; people sign in to the console through the
    authorization code grant with PKCE (:mod:`services.registry.oauth.user_grant`). Access
    tokens are RFC 9068 JWTs; introspection (RFC 7662) and revocation (RFC 7009) are registered
    endpoints.
    """

    def __init__(self, ctx: OAuthContext) -> None:
        super().__init__(scopes_supported=sorted(CLIENT_SCOPES))
        self.ctx = ctx
        self.token_request: TokenRequest | None = None
        self.register_client_auth_method("client_secret_basic", client_secret_basic(self))
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.register_grant(RegistryClientCredentialsGrant)
        self.register_grant(ConsoleCodeGrant, [S256Only(required=True)])
        self.register_token_generator("default", RegistryTokenGenerator(self))
        self.register_token_generator(AUTHORIZATION_CODE, UserTokenGenerator(self))
        self.register_endpoint(RegistryIntrospectionEndpoint(self))
        self.register_endpoint(RegistryRevocationEndpoint(self))

    # Storage hooks.

    def query_client(self, client_id: str) -> RegistryClient | ConsoleClient | None:
        """A live client (not revoked, organisation approved), the console, or None."""
        if client_id == CONSOLE_CLIENT_ID:
            return ConsoleClient(self.ctx.settings)
        found = clients.get_live_client(self.ctx.session, client_id)
        return RegistryClient(found) if found is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Nothing to store: access tokens are self-contained JWTs, revocation is by ``jti``."""

    def signing_key(self) -> ECKey:
        """The active signing key's private key (creating the first keys if there are none)."""
        row = signing_keys.active_signing_key(self.ctx.session, self.ctx.vault)
        return self.ctx.vault.private_key(row.kid, row.alg, row.private_key)

    def requested(self) -> TokenRequest:
        """The validated token request parameters (set by the grant)."""
        if self.token_request is None:
            raise RuntimeError("the token request was not validated")
        return self.token_request

    # Framework hooks.

    def create_oauth2_request(self, request: HttpRequest | OAuth2Request) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return StarletteOAuth2Request(request, self.ctx.settings.issuer + request.path)

    def create_json_request(self, request: HttpRequest) -> JsonRequest:
        return StarletteJsonRequest(request, self.ctx.settings.issuer + request.path)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if status in (301, 302, 303):  # the authorization endpoint sends the browser back
            location = dict(headers)["Location"]
            return RedirectResponse(
                location, status_code=303, headers={"Cache-Control": "no-store"}
            )
        kept = {k: v for k, v in headers if k.lower() != "content-type"}
        return JSONResponse(body, status_code=status, headers=kept)

    def handle_error_response(self, request: OAuth2Request | None, error: OAuth2Error) -> Any:
        if error.error == "invalid_client":
            # RFC 6749 section 5.2: 401 when the client tried to authenticate, and the registry's
            # clients always do; a revoked client or suspended organisation ends here too.
            error.status_code = 401
        log.info("oauth error %s: %s", error.error, error.description)
        return super().handle_error_response(request, error)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        log.debug("oauth signal %s", name)

    # Entry points for the routes.

    def _parse(self, request: HttpRequest) -> OAuth2Request:
        if any(len(values) > 1 for values in request.form.values()):
            # RFC 6749 section 3.2; the names are not echoed: error texts allow few characters.
            raise InvalidRequestError("A parameter is repeated.")
        if len(client_authentications(request)) > 1:
            # RFC 6749 section 2.3: "MUST NOT use more than one authentication method in each
            # request". Authlib would try them in turn and accept the first that succeeds.
            raise InvalidRequestError("Use exactly one client authentication method.")
        return self.create_oauth2_request(request)

    def token_response(self, request: HttpRequest) -> JSONResponse:
        """Answer a token endpoint request."""
        try:
            parsed = self._parse(request)
        except OAuth2Error as error:
            return self.handle_error_response(None, error)  # type: ignore[no-any-return]
        return self.create_token_response(parsed)  # type: ignore[no-any-return]

    def operator_introspection(self, request: HttpRequest) -> JSONResponse:
        """Answer an introspection request the operator made with its admin token (checked by
        the route): any token, but the request is read as strictly as a client's."""
        endpoint = RegistryIntrospectionEndpoint(self)
        try:
            parsed = self._parse(request)
            endpoint.check_params(parsed, None)
            answer = endpoint.for_operator(parsed.form["token"])
        except OAuth2Error as error:
            return self.handle_error_response(None, error)  # type: ignore[no-any-return]
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    def check_authorization(self, request: HttpRequest) -> str | None:
        """Why an authorization request cannot be served (None: it can), before the sign-in
        form is shown: unknown client, wrong redirect URI, no PKCE S256 challenge."""
        try:
            parsed = self._parse(request)
            grant = self.get_authorization_grant(parsed)
            grant.validate_authorization_request()
        except OAuth2Error as error:
            return str(error.description or error.error)
        return None

    def authorization_response(self, request: HttpRequest, person: Person) -> Response:
        """Issue a code to ``person`` (who signed in) and send the browser back with it."""
        try:
            parsed = self._parse(request)
            grant = self.get_authorization_grant(parsed)
        except OAuth2Error as error:
            return self.handle_error_response(None, error)  # type: ignore[no-any-return]
        return self.create_authorization_response(  # type: ignore[no-any-return]
            parsed, grant_user=person, grant=grant
        )

    def endpoint_response(self, name: str, request: HttpRequest) -> JSONResponse:
        """Answer a request to the introspection or revocation endpoint."""
        try:
            parsed = self._parse(request)
        except OAuth2Error as error:
            return self.handle_error_response(None, error)  # type: ignore[no-any-return]
        return self.create_endpoint_response(name, parsed)  # type: ignore[no-any-return]
