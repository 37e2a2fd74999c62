"""Sign-in of people: the OAuth2 authorization code grant with PKCE (RFC 6749 4.1, RFC 7636).

The console is a public client of the registry's own authorization server
(:data:`CONSOLE_CLIENT_ID`, no secret, one redirect URI: ``<issuer>/console/callback``). PKCE is
required and only ``S256`` is accepted. Codes live ten minutes at most, are stored as SHA-256
digests and are spent once. The access token a code buys is an RFC 9068 JWT whose ``sub`` is
``user:<id>``, whose scopes are the user's role's and whose audience is the console
(:func:`console_audience`): the API, whose audience is the issuer, refuses it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import KeySet
from sqlalchemy import delete, select

from services.registry.credentials import token_digest
from services.registry.models import utcnow
from services.registry.models_people import AuthorizationCode, User
from services.registry.people import scopes_of
from services.registry.store.users import live_user

if TYPE_CHECKING:
    from services.registry.oauth.server import RegistryAuthorizationServer
    from services.registry.settings import RegistrySettings

CONSOLE_CLIENT_ID = "splice-console"
AUTHORIZATION_CODE = "authorization_code"
CODE_TTL = timedelta(minutes=10)
CODE_CHALLENGE_METHODS = ["S256"]


def console_redirect_uri(settings: RegistrySettings) -> str:
    """Where the authorization endpoint sends the browser back with the code."""
    return f"{settings.issuer}/console/callback"


def console_audience(settings: RegistrySettings) -> str:
    """The audience of people's access tokens: the console, not the API."""
    return f"{settings.issuer}/console"


class ConsoleClient(ClientMixin):  # type: ignore[misc]
    """The console as Authlib sees it: a public client using the authorization code grant."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.redirect_uri = console_redirect_uri(settings)

    def get_client_id(self) -> str:
        return CONSOLE_CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str | None) -> str:
        return ""  # the user's role decides, when the code is saved

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" and endpoint == "token"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == AUTHORIZATION_CODE


class Person:
    """A :class:`User` as Authlib's resource owner."""

    def __init__(self, user: User) -> None:
        self.user = user

    def get_user_id(self) -> str:
        return f"user:{self.user.id}"


class _Code:
    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE, required on every authorization request, S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD = CODE_CHALLENGE_METHODS

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class ConsoleCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """The authorization code grant on the registry's tables."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    @property
    def registry(self) -> RegistryAuthorizationServer:
        server: RegistryAuthorizationServer = self.server
        return server

    def save_authorization_code(self, code: str, request: Any) -> None:
        person: Person = request.user
        now = utcnow()
        payload = request.payload.data
        self.registry.ctx.session.add(
            AuthorizationCode(
                code_hash=token_digest(code),
                client_id=request.client.get_client_id(),
                user_id=person.user.id,
                redirect_uri=request.payload.redirect_uri or request.client.redirect_uri,
                scope=" ".join(sorted(scopes_of(person.user.role))),
                code_challenge=payload["code_challenge"],
                code_challenge_method=payload["code_challenge_method"],
                created_at=now,
                expires_at=now + CODE_TTL,
            )
        )
        self.registry.ctx.session.flush()

    def query_authorization_code(self, code: str, client: ConsoleClient) -> _Code | None:
        session = self.registry.ctx.session
        row = session.scalar(
            select(AuthorizationCode)
            .where(AuthorizationCode.code_hash == token_digest(code))
            .with_for_update()
        )
        if row is None or row.client_id != client.get_client_id():
            return None
        if row.expires_at <= utcnow():
            return None
        return _Code(row)

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        session = self.registry.ctx.session
        session.execute(
            delete(AuthorizationCode).where(
                AuthorizationCode.code_hash == authorization_code.row.code_hash
            )
        )

    def authenticate_user(self, authorization_code: _Code) -> Person | None:
        user = live_user(self.registry.ctx.session, authorization_code.row.user_id)
        return Person(user) if user is not None else None


class UserTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens for people: ``sub`` ``user:<id>``, ``org_id``, ``role``,
    audience the console."""

    def __init__(self, server: RegistryAuthorizationServer) -> None:
        settings = server.ctx.settings
        super().__init__(
            issuer=settings.issuer, alg="ES256", expires_generator=settings.access_token_ttl_seconds
        )
        self.server = server

    def get_jwks(self) -> KeySet:
        return KeySet([self.server.signing_key()])

    def get_audiences(self, client: ConsoleClient, user: Person, scope: str) -> str:
        return console_audience(self.server.ctx.settings)

    def get_extra_claims(
        self, client: ConsoleClient, grant_type: str, user: Person, scope: str
    ) -> dict[str, Any]:
        return {"org_id": user.user.org_id, "role": user.user.role.value}
