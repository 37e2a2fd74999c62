"""The OAuth2 authorization server: token, introspection, revocation, keys and metadata.

These endpoints speak OAuth: form-encoded requests and RFC 6749 error bodies
(``{"error": ..., "error_description": ...}``), so any standard OAuth2 client works unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.registry.api.deps import (
    ADDRESS_RATE,
    TOKEN_RATE,
    AdminDep,
    FormDep,
    OAuthServerDep,
    SessionDep,
    SettingsDep,
    VaultDep,
    WorkDep,
)
from services.registry.credentials import ADMIN_PREFIX
from services.registry.oauth.access import published_jwks
from services.registry.oauth.grants import ASSERTION_ALGORITHMS, AUTH_METHODS, CLIENT_CREDENTIALS
from services.registry.oauth.scopes import CLIENT_SCOPES
from services.registry.oauth.server import INTROSPECTION, REVOCATION, HttpRequest
from services.registry.oauth.user_grant import AUTHORIZATION_CODE, CODE_CHALLENGE_METHODS
from services.registry.observability import metrics_of
from services.registry.store import admins, signing_keys
from services.web.openapi import OAUTH_ERROR_RESPONSES

router = APIRouter(tags=["oauth2"])

JWKS_MAX_AGE_SECONDS = 60


def _form_body(fields: dict[str, str], required: list[str]) -> dict[str, Any]:
    properties = {name: {"type": "string", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


_TOKEN_FORM = _form_body(
    {
        "grant_type": "client_credentials",
        "scope": "Space-separated scopes, each registered for the client. Default: all of them.",
        "resource": "Audience of the token (RFC 8707), e.g. a party. Default: the registry.",
        "audience": "Same as resource; give one of the two.",
        "contract_id": "Optional: the contract the token acts under (becomes a claim).",
        "job_id": "Optional: the training job the token acts for (becomes a claim).",
        "client_assertion_type": "private_key_jwt: urn:ietf:params:oauth:client-assertion-type:"
        "jwt-bearer",
        "client_assertion": "private_key_jwt: the signed assertion (RFC 7523).",
    },
    ["grant_type"],
)
_TOKEN_PARAM_FORM = _form_body(
    {"token": "The access token.", "token_type_hint": "Optional: access_token."}, ["token"]
)


@router.post(
    "/oauth/token",
    dependencies=[TOKEN_RATE],
    responses=OAUTH_ERROR_RESPONSES,
    openapi_extra=_TOKEN_FORM,
    response_class=JSONResponse,
)
def token(
    request: Request, server: OAuthServerDep, session: SessionDep, form: FormDep
) -> JSONResponse:
    """Issue an access token (RFC 6749 client credentials grant).

    Authenticate with HTTP Basic (``client_secret_basic``) or a signed client assertion
    (``private_key_jwt``, RFC 7523; each assertion is accepted once). The token is a JWT
    (RFC 9068, ``typ: at+jwt``) signed with the key published at ``/.well-known/jwks.json``.
    Failed client authentication, a revoked client and a suspended organisation all get
    401 ``invalid_client``; a scope the client did not register gets 400 ``invalid_scope``.
    """
    response = server.token_response(form)
    session.commit()  # spent client assertions stay spent, whatever the outcome
    if response.status_code == 200:
        metrics_of(request).tokens_issued.inc()
    return response


@router.post(
    "/oauth/introspect",
    dependencies=[ADDRESS_RATE],
    responses=OAUTH_ERROR_RESPONSES,
    openapi_extra=_TOKEN_PARAM_FORM,
    response_class=JSONResponse,
)
def introspect(server: OAuthServerDep, session: SessionDep, form: FormDep) -> JSONResponse:
    """Tell whether an access token is active (RFC 7662), to the resource servers it is for.

    Authenticate as the client that holds one of the token's audiences as a resource
    (``POST /v1/oauth/clients/{id}/resources``; a party service claims its URL when it
    starts), or as the operator with the admin token (``Authorization: Bearer spl_adm_...``).
    ``{"active": false}`` for any other client, and for a token that is expired, revoked,
    malformed, not signed by this registry, or whose client was revoked or organisation
    suspended; otherwise its claims.
    """
    operator = _operator_token(form)
    if operator is None:
        return server.endpoint_response(INTROSPECTION, form)
    if admins.admin_for_token(session, operator) is None:
        error = {"error": "invalid_client", "error_description": "Unknown admin token."}
        return JSONResponse(error, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return server.operator_introspection(form)


def _operator_token(form: HttpRequest) -> str | None:
    """The operator's admin token, when the request authenticates with one."""
    scheme, _, value = form.headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value.startswith(ADMIN_PREFIX) else None


@router.post(
    "/oauth/revoke",
    dependencies=[ADDRESS_RATE],
    responses=OAUTH_ERROR_RESPONSES,
    openapi_extra=_TOKEN_PARAM_FORM,
    response_class=JSONResponse,
)
def revoke(server: OAuthServerDep, session: WorkDep, form: FormDep) -> JSONResponse:
    """Revoke one of the calling client's access tokens (RFC 7009).

    From then on the registry refuses it and introspection reports it inactive; party services
    that only verify signatures accept it until it expires (minutes). Unknown or expired tokens
    get the same 200.
    """
    response = server.endpoint_response(REVOCATION, form)
    return response


@router.get("/.well-known/jwks.json")
def jwks(session: SessionDep, settings: SettingsDep, vault: VaultDep) -> JSONResponse:
    """The public keys access tokens are signed with (RFC 7517 JWK Set).

    The active key, the next key (published before it signs anything) and retired keys until
    the tokens they signed have expired. Select a key by the token's ``kid``; when a ``kid`` is
    unknown, fetch this document again.
    """
    document = published_jwks(session, settings)
    if not document["keys"]:  # a new registry: make its first keys, so verifiers can cache them
        signing_keys.active_signing_key(session, vault)
        session.commit()
        document = published_jwks(session, settings)
    return JSONResponse(
        document, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}
    )


@router.get("/.well-known/oauth-authorization-server")
def metadata(settings: SettingsDep) -> dict[str, Any]:
    """Authorization server metadata (RFC 8414): endpoints, grants, scopes, auth methods.

    Organisations' clients use the client credentials grant; people sign in to the console with
    the authorization code grant and PKCE (S256 only; the console is the public client
    ``splice-console``, token endpoint auth method ``none``)."""
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "registration_endpoint": f"{issuer}/v1/oauth/register",
        "scopes_supported": sorted(CLIENT_SCOPES),
        "response_types_supported": ["code"],
        "grant_types_supported": [CLIENT_CREDENTIALS, AUTHORIZATION_CODE],
        "code_challenge_methods_supported": CODE_CHALLENGE_METHODS,
        "token_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
    }


@router.post("/v1/oauth/signing-keys/rotate")
def rotate_signing_keys(
    session: WorkDep, admin: AdminDep, settings: SettingsDep, vault: VaultDep
) -> dict[str, Any]:
    """Rotate the token signing keys (operators only).

    The next key becomes active, the active key is retired (still published until its tokens
    expire) and a new next key is made. Rotate no more often than parties refresh their cached
    key set, so every party has seen a key before it signs.
    """
    active = signing_keys.rotate_signing_keys(session, vault, actor=admin.subject)
    published = published_jwks(session, settings)["keys"]
    return {"active": active.kid, "published": [k["kid"] for k in published]}
