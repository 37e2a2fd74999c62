"""Key generation (feature party) and the public side handed to the label party."""

from __future__ import annotations

import struct
from functools import cached_property

import tenseal.sealapi as sealapi

from services.engine.he import bundle, seal
from services.engine.he.bundle import PublicBundle
from services.engine.he.contexts import SecretContext
from services.engine.he.errors import HeParamsError
from services.engine.he.layout import Plan
from services.engine.he.params import HeParams

_SECRET_MAGIC = b"SPHS"
_SECRET_HEAD = struct.Struct("<4sII")


class HeKeys:
    """A feature party's CKKS keys for one job. The secret key never leaves this object except
    through :meth:`export_secret` (for the party's own storage)."""

    def __init__(self, public: bytes, secret: SecretContext) -> None:
        self._public = public
        self._secret = secret

    @classmethod
    def generate(cls, params: HeParams) -> HeKeys:
        """Fresh keys: secret key, public key and only the Galois keys the layout needs."""
        parms = seal.encryption_parameters(params)
        ctx = seal.make_context(parms)
        keygen = sealapi.KeyGenerator(ctx)
        public_key = sealapi.PublicKey()
        keygen.create_public_key(public_key)
        elements = Plan(params).galois_elements()
        galois = seal.dump(keygen.create_galois_keys(elements)) if elements else b""
        raw = bundle.pack(params, seal.dump(parms), seal.dump(public_key), galois)
        return cls(raw, SecretContext(params, ctx, keygen.secret_key()))

    @property
    def params(self) -> HeParams:
        """The parameters the keys were made for."""
        return self._secret.params

    def public_bundle(self) -> bytes:
        """What the label party gets: parameters, public key, Galois keys; no secret key."""
        return self._public

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex of :meth:`public_bundle`."""
        return bundle.fingerprint(self._public)

    @property
    def secret(self) -> SecretContext:
        """The live secret context (encrypt/decrypt); for this party's kernel calls only."""
        return self._secret

    def export_secret(self) -> bytes:
        """Serialise public bundle + secret key, for the feature party's own storage only."""
        sk = seal.dump(self._secret.secret_key)
        return _SECRET_HEAD.pack(_SECRET_MAGIC, len(self._public), len(sk)) + self._public + sk

    @classmethod
    def import_secret(cls, data: bytes) -> HeKeys:
        """Inverse of :meth:`export_secret`."""
        if len(data) < _SECRET_HEAD.size:
            raise HeParamsError("secret key file is truncated")
        magic, n_pub, n_sk = _SECRET_HEAD.unpack_from(data, 0)
        if magic != _SECRET_MAGIC or _SECRET_HEAD.size + n_pub + n_sk != len(data):
            raise HeParamsError("not a Splice secret key file")
        public = data[_SECRET_HEAD.size : _SECRET_HEAD.size + n_pub]
        params = PublicBundle.parse(public).params
        secret = SecretContext.from_bytes(params, data[_SECRET_HEAD.size + n_pub :])
        return cls(public, secret)
