"""Generating and checking secrets. Nothing here ever stores or logs a plain secret.

Two kinds of secret, two kinds of hash:

* **Bearer tokens** (admin token, invitation codes, initial access tokens) are 256-bit random
  values looked up by value, so they are stored as their SHA-256 digest: with that much entropy a
  fast hash is not brute-forceable, and a digest can be indexed.
* **Client secrets** are checked against one known client, so they get a salted, memory-hard
  argon2id hash (parameters in the settings), in case one is ever set by a human.

Every token carries a prefix (``spl_adm_``, ``spl_inv_``, ``spl_iat_``, ``spl_cs_``) so secret
scanners and people can tell what leaked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.registry.settings import RegistrySettings

ADMIN_PREFIX = "spl_adm_"
INVITATION_PREFIX = "spl_inv_"
INITIAL_ACCESS_PREFIX = "spl_iat_"
CLIENT_SECRET_PREFIX = "spl_cs_"
_TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    """A fresh random token: ``prefix`` + 256 bits, URL-safe base64."""
    return prefix + secrets.token_urlsafe(_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored and looked up as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digest_matches(stored: str, token: str) -> bool:
    """Constant-time check of a token against a stored digest."""
    return hmac.compare_digest(stored.encode("ascii"), token_digest(token).encode("ascii"))


class SecretHasher:
    """argon2id hashing of client secrets with the registry's cost parameters."""

    def __init__(self, time_cost: int = 3, memory_kib: int = 64 * 1024, parallelism: int = 2):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._dummy: str | None = None

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> SecretHasher:
        """The hasher the settings ask for."""
        return cls(
            settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
        )

    def hash(self, secret: str) -> str:
        """A salted argon2id hash in PHC string form."""
        return self._hasher.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        """Whether ``secret`` matches ``stored``; never raises on a mismatch or a bad hash."""
        try:
            return self._hasher.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            return False

    def waste_time(self, secret: str) -> None:
        """Spend one verification's time, for a client that does not exist."""
        if self._dummy is None:
            self._dummy = self.hash(secrets.token_urlsafe(_TOKEN_BYTES))
        self.verify(self._dummy, secret)
