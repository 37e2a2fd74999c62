"""Live SEAL state per key: the label party's evaluation context, the feature party's secret one.

Both derive the scales the same way: H is encoded at ``2**input_scale_bits``; the label party's
plaintexts at ``w_scale = 2**output_scale_bits * q_r / 2**input_scale_bits`` where ``q_r`` is the
prime the one rescale drops, so every result lands at ``out_scale ~= 2**output_scale_bits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from services.engine.he import seal
from services.engine.he.bundle import PublicBundle, key_size_limit
from services.engine.he.errors import HeBlobError, HeParamsError
from services.engine.he.layout import Plan
from services.engine.he.params import HeParams


class _Scales:
    """Levels and scales shared by both sides."""

    def __init__(self, params: HeParams, ctx: Any) -> None:
        self.params = params
        self.plan = Plan(params)
        self.ctx = ctx
        self.encoder = sealapi.CKKSEncoder(ctx)
        self.top = ctx.first_parms_id()
        self.last = ctx.last_parms_id()
        primes = [q.value() for q in ctx.first_context_data().parms().coeff_modulus()]
        self.in_scale = 2.0**params.input_scale_bits
        self.w_scale = 2.0**params.output_scale_bits * primes[-1] / self.in_scale
        self.out_scale = self.in_scale * self.w_scale / primes[-1]
        self.capacity = primes[0] / 2.0 / self.out_scale
        shift = 2.0**params.weights_shift_bits
        self.wt_scale = self.in_scale * shift  # Enc(W_P) of the input gradient
        self.dg_scale = self.w_scale / shift  # D of the input gradient: result at out_scale
        self.ct_limit = seal.ciphertext_limit(params)

    def load_ct(
        self, data: bytes | memoryview, *, top: bool, what: str, scale: float | None = None
    ) -> Any:
        """Load one ciphertext and check its level and scale (by default: an upload at the top
        level, a result at the last)."""
        ct = seal.load(
            sealapi.Ciphertext, lambda o, p: o.load(self.ctx, p), data, what, self.ct_limit
        )
        if scale is None:
            scale = self.in_scale if top else self.out_scale
        seal.check_ciphertext(ct, self.top if top else self.last, scale, what)
        return ct

    def encode(self, values: Any, scale: float, parms_id: Any = None) -> Any:
        """Encode a slot vector (real or complex ndarray) or a scalar."""
        pt = sealapi.Plaintext()
        data = values.tolist() if isinstance(values, np.ndarray) else float(values)
        if parms_id is None:
            self.encoder.encode(data, scale, pt)
        else:
            self.encoder.encode(data, parms_id, scale, pt)
        return pt


class PublicContext(_Scales):
    """The label party's evaluation state: public key, Galois keys, evaluator, randomisers."""

    def __init__(self, bundle: PublicBundle) -> None:
        params = bundle.params
        parms = seal.load(
            lambda: sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS),
            lambda o, p: o.load(p),
            bundle.parms,
            "encryption parameters",
            1 << 16,
            HeParamsError,
        )
        expected = [q.value() for q in seal.coeff_modulus(params)]
        if (
            parms.poly_modulus_degree() != params.poly_modulus_degree
            or [q.value() for q in parms.coeff_modulus()] != expected
        ):
            raise HeParamsError("SEAL parameters in the bundle disagree with its JSON parameters")
        super().__init__(params, seal.make_context(parms))
        self.fingerprint = bundle.fingerprint
        self.public_key = seal.load(
            sealapi.PublicKey,
            lambda o, p: o.load(self.ctx, p),
            bundle.public_key,
            "public key",
            key_size_limit(params, 1),
            HeParamsError,
        )
        steps = self.plan.steps
        self.galois: Any = None
        if steps:
            self.galois = seal.load(
                sealapi.GaloisKeys,
                lambda o, p: o.load(self.ctx, p),
                bundle.galois,
                "Galois keys",
                key_size_limit(params, len(steps)),
                HeParamsError,
            )
            missing = [
                s
                for s, e in zip(steps, self.plan.galois_elements(), strict=True)
                if not self.galois.has_key(e)
            ]
            if missing:
                raise HeParamsError(f"public key bundle lacks Galois keys for steps {missing}")
        self.evaluator = sealapi.Evaluator(self.ctx)
        self.encryptor = sealapi.Encryptor(self.ctx, self.public_key)
        self._zeros: list[Any] = []

    def fill_zeros(self, count: int) -> None:
        """Precompute fresh public-key encryptions of zero at the last level (off the hot path)."""
        while len(self._zeros) < count:
            ct = sealapi.Ciphertext()
            self.encryptor.encrypt_zero(self.last, ct)
            self._zeros.append(ct)

    def zero(self, scale: float) -> Any:
        """A fresh encryption of zero at the last level and ``scale`` (from the pool if any)."""
        if not self._zeros:
            self.fill_zeros(1)
        ct = self._zeros.pop()
        ct.scale = scale
        return ct

    def rotate(self, ct: Any, step: int) -> Any:
        """``ct`` rotated left by ``step`` slots."""
        step %= self.params.slots
        if step == 0:
            return ct
        out = sealapi.Ciphertext()
        self.evaluator.rotate_vector(ct, step, self.galois, out)
        return out

    def finish(self, acc: Any, mask: npt.NDArray[np.complex128] | None) -> Any:
        """Rescale a product sum to the last level; with ``mask``, re-randomise and mask it."""
        if acc is None:
            acc = self.zero(self.out_scale)
        else:
            self.evaluator.rescale_to_next_inplace(acc)
            if list(acc.parms_id()) != list(self.last):
                self.evaluator.mod_switch_to_inplace(acc, self.last)
        if mask is not None:
            self.evaluator.add_inplace(acc, self.zero(acc.scale))
            self.evaluator.add_plain_inplace(acc, self.encode(mask, acc.scale, self.last))
        return acc


class SecretContext(_Scales):
    """The feature party's state: secret key, symmetric encryptor, decryptor."""

    def __init__(self, params: HeParams, ctx: Any, secret_key: Any) -> None:
        super().__init__(params, ctx)
        self.secret_key = secret_key
        self.encryptor = sealapi.Encryptor(ctx, secret_key)
        self.decryptor = sealapi.Decryptor(ctx, secret_key)

    @classmethod
    def from_bytes(cls, params: HeParams, secret: bytes) -> SecretContext:
        """Rebuild from parameters and a serialised secret key."""
        ctx = seal.make_context(seal.encryption_parameters(params))
        sk = seal.load(
            sealapi.SecretKey,
            lambda o, p: o.load(ctx, p),
            secret,
            "secret key",
            key_size_limit(params, 1),
            HeParamsError,
        )
        return cls(params, ctx, sk)

    def encrypt(self, vector: npt.NDArray[np.float64], scale: float | None = None) -> bytes:
        """Seeded symmetric encryption of one slot vector at the top level (at ``in_scale`` by
        default)."""
        pt = self.encode(vector, self.in_scale if scale is None else scale)
        return seal.dump(self.encryptor.encrypt_symmetric(pt))

    def decrypt(self, data: bytes | memoryview, what: str, *, complex_slots: bool = False) -> Any:
        """Decrypt a last-level result to its real (or complex) slot values."""
        ct = self.load_ct(data, top=False, what=what)
        pt = sealapi.Plaintext()
        try:
            self.decryptor.decrypt(ct, pt)
            if complex_slots:
                return np.asarray(self.encoder.decode_complex(pt), dtype=np.complex128)
            return np.asarray(self.encoder.decode_double(pt), dtype=np.float64)
        except Exception as exc:
            raise HeBlobError(f"{what} does not decrypt: {exc}") from None
