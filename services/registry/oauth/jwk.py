"""Public JSON Web Keys (RFC 7517) a client registers for ``private_key_jwt`` (RFC 7523).

Only public signing keys are accepted: a key set carrying private members (``d``, ``p``, ...) or
a symmetric key is refused, as are RSA keys under 2048 bits.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_B64URL = r"^[A-Za-z0-9_-]+$"
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_CURVES = {"EC": ("P-256", "P-384", "P-521"), "OKP": ("Ed25519", "Ed448")}
MIN_RSA_BITS = 2048
B64Url = Annotated[str, Field(pattern=_B64URL, max_length=2048)]


def _b64url_len(value: str) -> int:
    try:
        return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        return 0


class PublicJwk(BaseModel):
    """One public signing key. Unknown members (``x5c``, ...) are kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kty: Literal["RSA", "EC", "OKP"]
    kid: Annotated[str, Field(min_length=1, max_length=128)]
    use: Literal["sig"] | None = None
    alg: (
        Literal[
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
        ]
        | None
    ) = None
    n: B64Url | None = None
    e: B64Url | None = None
    crv: str | None = None
    x: B64Url | None = None
    y: B64Url | None = None

    @model_validator(mode="after")
    def _public_and_complete(self) -> PublicJwk:
        extra = self.model_extra or {}
        private = [m for m in _PRIVATE_MEMBERS if m in extra]
        if private:
            raise ValueError(
                f"key {self.kid!r} carries private members {private}: register the public key only"
            )
        if self.kty == "RSA":
            if self.n is None or self.e is None:
                raise ValueError(f"RSA key {self.kid!r} needs 'n' and 'e'")
            if _b64url_len(self.n) * 8 < MIN_RSA_BITS:
                raise ValueError(f"RSA key {self.kid!r} is shorter than {MIN_RSA_BITS} bits")
        else:
            if self.crv not in _CURVES[self.kty]:
                raise ValueError(f"{self.kty} key {self.kid!r} needs crv in {_CURVES[self.kty]}")
            if self.x is None or (self.kty == "EC" and self.y is None):
                raise ValueError(f"{self.kty} key {self.kid!r} lacks its coordinates")
        return self


class PublicJwkSet(BaseModel):
    """A JWK Set of one to five public signing keys with distinct ``kid``s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: Annotated[list[PublicJwk], Field(min_length=1, max_length=5)]

    @model_validator(mode="after")
    def _distinct_kids(self) -> PublicJwkSet:
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("key ids ('kid') must be distinct")
        return self

    def as_json(self) -> dict[str, Any]:
        """The set as stored and published (members that were not given are left out)."""
        return self.model_dump(mode="json", exclude_none=True)
