"""The shared access token verifier, on its own: no registry, no database, local keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from services.protocol.errors import ErrorCode, Unauthenticated
from services.protocol.jwt_verify import (
    InvalidToken,
    UnknownSigningKey,
    token_audiences,
    token_scopes,
    unverified_header,
    verify_access_token,
)

ISSUER = "https://registry.example"
AUDIENCE = "paste-supplier"
NOW = 1_900_000_000
EC = ECKey.generate_key("P-256", private=True, parameters={"kid": "ec-1"})
RSA = RSAKey.generate_key(2048, private=True, parameters={"kid": "rsa-1"})
JWKS = {
    "keys": [
        {**EC.as_dict(private=False), "alg": "ES256", "use": "sig"},
        {**RSA.as_dict(private=False), "alg": "RS256", "use": "sig"},
    ]
}


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-1",
        "client_id": "client-1",
        "aud": AUDIENCE,
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "t-1",
        "scope": "party:call jobs:run",
        "org_id": "org-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: Any = EC, **header: Any) -> str:
    alg = "RS256" if isinstance(key, RSAKey) else "ES256"
    protected = {"alg": alg, "typ": "at+jwt", "kid": key.kid, **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    return jwt.encode(protected, claims, key, algorithms=[protected["alg"]], default_type=None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verify(token: str, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "now": NOW + 10}
    options.update(kwargs)
    return verify_access_token(token, JWKS, **options)


def test_valid_tokens_verify() -> None:
    for key in (EC, RSA):
        claims = _verify(_sign(_claims(), key))
        assert claims["sub"] == "client-1" and token_scopes(claims) == {"party:call", "jobs:run"}
    claims = _verify(_sign(_claims(aud=["other", AUDIENCE])))
    assert token_audiences(claims) == ["other", AUDIENCE]
    assert _verify(_sign(_claims(), typ="application/at+jwt"))
    # Clock skew within the leeway is tolerated, beyond it is not.
    assert _verify(_sign(_claims()), now=NOW + 300 + 20)
    with pytest.raises(InvalidToken, match="expired"):
        _verify(_sign(_claims()), now=NOW + 300 + 31)
    assert _verify(_sign(_claims(iat=NOW + 30)))


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    # By hand: joserfc itself refuses to use a public key as an HMAC secret.
    head = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


BAD = {
    "alg none": lambda: ".".join(
        [
            _b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": "ec-1"}).encode()),
            _b64(json.dumps(_claims()).encode()),
            "",
        ]
    ),
    "HS256 keyed with the public JWK": lambda: _hs256(
        _claims(), json.dumps(JWKS["keys"][0]).encode(), "ec-1"
    ),
    "HS256 keyed with the RSA public PEM": lambda: _hs256(_claims(), RSA.as_pem(), "rsa-1"),
    "ES256 header on the RSA key": lambda: _sign(_claims(), EC, kid="rsa-1"),
    "RS256 header on the EC key": lambda: _sign(_claims(), RSA, kid="ec-1"),
    "signed by a stranger": lambda: _sign(_claims(), ECKey.generate_key("P-256"), kid="ec-1"),
    "no kid": lambda: _sign(_claims(), kid=None),
    "typ JWT": lambda: _sign(_claims(), typ="JWT"),
    "no typ": lambda: _sign(_claims(), typ=None),
    "crit header": lambda: ".".join(
        [
            _b64(
                json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1", "crit": ["x"]}).encode()
            ),
            _sign(_claims()).split(".", 1)[1],
        ]
    ),
    "expired": lambda: _sign(_claims(exp=NOW - 60)),
    "not yet valid": lambda: _sign(_claims(nbf=NOW + 600)),
    "issued in the future": lambda: _sign(_claims(iat=NOW + 600)),
    "wrong issuer": lambda: _sign(_claims(iss="https://evil.example")),
    "wrong audience": lambda: _sign(_claims(aud="someone-else")),
    "audience list without us": lambda: _sign(_claims(aud=["a", "b"])),
    "no exp": lambda: _sign(_claims(exp=None)),
    "no jti": lambda: _sign(_claims(jti=None)),
    "no client_id": lambda: _sign(_claims(client_id=None)),
    "numeric sub": lambda: _sign(_claims(sub=7)),
    "scope list": lambda: _sign(_claims(scope=["party:call"])),
    "garbage": lambda: "not.a.jwt",
    "two parts": lambda: "abc.def",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_tokens_are_refused(name: str) -> None:
    token = BAD[name]()
    with pytest.raises(InvalidToken) as err:
        _verify(token)
    assert isinstance(err.value, Unauthenticated) and err.value.status == 401
    assert err.value.code is ErrorCode.INVALID_TOKEN
    assert err.value.reason and err.value.message == "the access token is not valid"


def test_unknown_kid_asks_for_a_refetch() -> None:
    fresh = ECKey.generate_key("P-256", private=True, parameters={"kid": "ec-2"})
    token = _sign(_claims(), fresh)
    with pytest.raises(UnknownSigningKey) as err:
        _verify(token)
    assert err.value.kid == "ec-2"
    refreshed = {"keys": [*JWKS["keys"], fresh.as_dict(private=False)]}
    assert verify_access_token(token, refreshed, issuer=ISSUER, audience=AUDIENCE, now=NOW)


def test_algorithms_can_be_narrowed_not_widened() -> None:
    with pytest.raises(InvalidToken, match="not allowed"):
        _verify(_sign(_claims(), RSA), algorithms=["ES256"])
    with pytest.raises(ValueError, match="no supported algorithm"):
        _verify(_sign(_claims()), algorithms=["HS256", "none"])


def test_audience_none_skips_only_the_audience() -> None:
    assert _verify(_sign(_claims(aud="anyone")), audience=None)
    with pytest.raises(InvalidToken):
        _verify(_sign(_claims(aud=None)), audience=None)
    with pytest.raises(InvalidToken):
        _verify(_sign(_claims(iss="https://evil.example")), audience=None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_verifier(value: str) -> None:
    with pytest.raises(InvalidToken):
        _verify(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5))
def test_arbitrary_headers_never_crash_the_verifier(header: dict[str, str]) -> None:
    head = _b64(json.dumps(header).encode())
    token = f"{head}.{_b64(json.dumps(_claims()).encode())}.{_b64(b'sig')}"
    with pytest.raises(InvalidToken):
        _verify(token)
    if "alg" in header:
        assert unverified_header(token) == header
