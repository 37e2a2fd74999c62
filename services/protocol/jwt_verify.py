"""Verify a registry-issued JWT access token (RFC 9068) against a JWK Set, with no I/O.

The registry and every party service use this one function, so "valid token" means the same
everywhere. It is deliberately strict:

* ``alg`` must be on an allowlist of asymmetric algorithms (ES256, RS256 by default). ``none``
  and every HMAC algorithm are refused *before* any key is looked at, so a public key can never
  be used as an HMAC secret.
* ``typ`` must be ``at+jwt`` (or ``application/at+jwt``): an ID token or a client assertion
  signed by the same keys is not an access token.
* ``kid`` must name a key of the set whose type fits ``alg``. A ``kid`` the set does not have
  raises :class:`UnknownSigningKey`, so a caller with a cached JWK Set can fetch it again and
  retry once (the registry publishes its next key before it signs with it).
* ``iss`` must equal the expected issuer; ``aud`` (a string or a list) must contain the expected
  audience; ``exp``, ``iat``, ``sub``, ``jti`` and ``client_id`` are required; ``exp``, ``nbf``
  and ``iat`` are checked with a small leeway for clock skew.

Failures raise :class:`InvalidToken` (a 401 ``invalid_token`` in the error hierarchy) whose
``reason`` says what was wrong, for logs; the message sent to callers stays generic.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from services.protocol.errors import ErrorCode, Unauthenticated

DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "RS256")
"""Signature algorithms accepted unless the caller narrows them."""

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
"""``typ`` header values of an RFC 9068 access token (compared case-insensitively)."""

DEFAULT_LEEWAY_SECONDS = 30

_KEY_TYPES: dict[str, tuple[type[ECKey] | type[RSAKey], str | None]] = {
    "ES256": (ECKey, "P-256"),
    "ES384": (ECKey, "P-384"),
    "RS256": (RSAKey, None),
    "PS256": (RSAKey, None),
}


class InvalidToken(Unauthenticated):
    """The token is not a valid access token for this audience. ``reason`` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__("the access token is not valid", code=ErrorCode.INVALID_TOKEN)
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid_token: {self.reason}"


class UnknownSigningKey(InvalidToken):
    """The token names a ``kid`` the key set does not have: refetch the set, then retry once."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key with kid {kid!r} in the key set")
        self.kid = kid


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, without verifying anything. For routing only."""
    try:
        return dict(jws.extract_compact(token.encode("ascii")).headers())
    except (JoseError, UnicodeEncodeError, ValueError) as exc:
        raise InvalidToken("not a compact JWS") from exc


def _key_for(header: Mapping[str, Any], jwks: Mapping[str, Any], alg: str) -> ECKey | RSAKey:
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("the header has no kid")
    candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if not candidates:
        raise UnknownSigningKey(kid)
    if len(candidates) > 1:
        raise InvalidToken(f"the key set has several keys with kid {kid!r}")
    public = {k: v for k, v in candidates[0].items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    try:
        key = KeySet.import_key_set({"keys": [public]}).keys[0]
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidToken(f"key {kid!r} in the key set is malformed") from exc
    key_type, curve = _KEY_TYPES.get(alg, (None, None))
    if key_type is None or not isinstance(key, key_type):
        raise InvalidToken(f"key {kid!r} is a {key.key_type} key: it cannot verify {alg}")
    if curve is not None and key.get("crv") != curve:
        raise InvalidToken(f"key {kid!r} is not on curve {curve}, as {alg} needs")
    if key.alg is not None and key.alg != alg:
        raise InvalidToken(f"key {kid!r} is for {key.alg}, not {alg}")
    if key.get("use") not in (None, "sig"):
        raise InvalidToken(f"key {kid!r} is not a signing key")
    return key


def verify_access_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    audience: str | None,
    algorithms: Collection[str] = DEFAULT_ALGORITHMS,
    leeway: int = DEFAULT_LEEWAY_SECONDS,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature, header and claims have all checked out.

    ``jwks`` is a JWK Set document (``{"keys": [...]}``) of public keys; ``audience`` must be
    one of the token's ``aud`` values. Only an authorization server answering for tokens of every
    audience (introspection) passes ``audience=None``; a resource server always names itself.
    ``now`` (seconds since the epoch) is for tests.
    Raises :class:`InvalidToken`, or :class:`UnknownSigningKey` for a ``kid`` not in ``jwks``.
    """
    allowed = [a for a in algorithms if a in _KEY_TYPES]
    if not allowed:
        raise ValueError(f"no supported algorithm in {list(algorithms)}; use {list(_KEY_TYPES)}")
    header = unverified_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise InvalidToken(f"alg {alg!r} is not allowed (allowed: {', '.join(allowed)})")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken(f"typ {typ!r} is not an access token type (at+jwt)")
    if "crit" in header:
        raise InvalidToken("critical header extensions are not supported")
    key = _key_for(header, jwks, alg)
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except JoseError as exc:
        raise InvalidToken(f"signature or payload rejected: {exc.error}") from exc
    required: jwt.ClaimsOption = {"essential": True}
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=leeway,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "values": [audience]} if audience is not None else required,
        sub=required,
        exp=required,
        iat=required,
        jti=required,
        client_id=required,
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise InvalidToken(f"claims rejected: {exc.error}: {exc.description}") from exc
    for name in ("sub", "client_id", "jti"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise InvalidToken(f"claim {name!r} must be a non-empty string")
    if "scope" in claims and not isinstance(claims["scope"], str):
        raise InvalidToken("claim 'scope' must be a space-separated string")
    return dict(claims)


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes of verified claims (RFC 9068: a space-separated ``scope`` string)."""
    scope = claims.get("scope")
    return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def token_audiences(claims: Mapping[str, Any]) -> list[str]:
    """The ``aud`` of verified claims as a list."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
