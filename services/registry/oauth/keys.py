"""Token signing keys as key material: generation, encryption at rest, loading.

The registry signs access tokens with ES256 (ECDSA on P-256): small keys, small signatures, fast
to generate at rotation. Private keys are stored as PKCS#8 PEM sealed with Fernet
(AES-128-CBC + HMAC-SHA256) under the key encryption key from the settings; several
comma-separated keys may be configured, the first one seals and all of them open, so the key
encryption key itself can be rotated. Without one, keys are stored as plain PEM and the app logs
a warning: acceptable for a development SQLite file, not for production.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from joserfc.jwk import ECKey
from pydantic import SecretStr

SIGNING_ALG = "ES256"
_CURVE = "P-256"
_FERNET = "fernet:"
_PLAIN = "pem:"

log = logging.getLogger("splice.registry.keys")


class SigningKeyError(RuntimeError):
    """A stored signing key cannot be opened (missing or wrong key encryption key)."""


@dataclass(frozen=True)
class NewKeyPair:
    """A freshly generated signing key: its id, public JWK and private key (PEM)."""

    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_pem: bytes


def generate_key_pair() -> NewKeyPair:
    """A new ES256 key pair; ``kid`` is its RFC 7638 thumbprint."""
    key = ECKey.generate_key(_CURVE, private=True)
    kid = key.thumbprint()
    public = key.as_dict(private=False)
    public.update({"kid": kid, "use": "sig", "alg": SIGNING_ALG})
    pem = key.as_pem(private=True)
    return NewKeyPair(kid=kid, alg=SIGNING_ALG, public_jwk=dict(public), private_pem=pem)


class KeyVault:
    """Seals private keys for storage and opens them again, caching opened keys by ``kid``.

    A ``kid`` names one key pair for good, so the cache never goes stale; it only saves the
    decryption and PEM parsing on every token.
    """

    def __init__(self, key_encryption_key: SecretStr | None) -> None:
        self._fernet: MultiFernet | None = None
        if key_encryption_key is not None:
            parts = [p.strip() for p in key_encryption_key.get_secret_value().split(",")]
            self._fernet = MultiFernet([Fernet(p) for p in parts if p])
        self._opened: dict[str, ECKey] = {}
        self._lock = threading.Lock()

    @property
    def encrypts(self) -> bool:
        """Whether private keys are sealed (a key encryption key is configured)."""
        return self._fernet is not None

    def seal(self, private_pem: bytes) -> str:
        """The stored form of a private key."""
        if self._fernet is None:
            return _PLAIN + private_pem.decode("ascii")
        return _FERNET + self._fernet.encrypt(private_pem).decode("ascii")

    def unseal(self, stored: str) -> bytes:
        """The PEM of a stored private key; :class:`SigningKeyError` if it cannot be opened."""
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :].encode("ascii")
        if not stored.startswith(_FERNET):
            raise SigningKeyError("a stored signing key has an unknown format")
        if self._fernet is None:
            raise SigningKeyError(
                "the signing keys are encrypted but no key encryption key is configured: set "
                "SPLICE_REGISTRY_KEY_ENCRYPTION_KEY"
            )
        try:
            return self._fernet.decrypt(stored[len(_FERNET) :].encode("ascii"))
        except InvalidToken:
            raise SigningKeyError(
                "no configured key encryption key opens the stored signing key: check "
                "SPLICE_REGISTRY_KEY_ENCRYPTION_KEY (keep retired encryption keys listed)"
            ) from None

    def reseal(self, stored: str) -> str:
        """``stored`` sealed under the current (first) key encryption key."""
        return self.seal(self.unseal(stored))

    def private_key(self, kid: str, alg: str, stored: str) -> ECKey:
        """The opened private key with its ``kid``, ``alg`` and ``use`` set, for signing."""
        with self._lock:
            cached = self._opened.get(kid)
        if cached is not None:
            return cached
        if alg != SIGNING_ALG:
            raise SigningKeyError(f"signing key {kid} uses {alg}; this build signs {SIGNING_ALG}")
        key = ECKey.import_key(
            self.unseal(stored), parameters={"kid": kid, "alg": alg, "use": "sig"}
        )
        if not key.is_private or key.get("crv") != _CURVE:
            raise SigningKeyError(f"signing key {kid} is not a private {_CURVE} key")
        with self._lock:
            self._opened[kid] = key
        return key
