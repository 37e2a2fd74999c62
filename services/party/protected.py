"""A feature party's CKKS side of one job: its keys, its share ``W_P``, its pending ``h``.

Per training step (docs/protocol.md, *CKKS mode*): the forward answers ``Enc(h)`` and
``Enc(W_P)``; the mix decrypts ``Enc(h W_A + R)`` and answers ``h W_A + R + h W_P``; the next
forward brings ``Enc(h^T dz + R')`` (P's masked share of W's gradient) and
``Enc(dz~ W^T)`` (the defended gradient of P's output), which P decrypts and applies. The secret
key never leaves this object; only :meth:`public_bundle` and the blobs do.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from services.engine import he
from services.engine.interactive import F64, SgdShare
from services.protocol.errors import BadRequest, Conflict, ErrorCode, MalformedTensors
from services.protocol.messages import CkksSpec, OptimizerSpec

EMBED_REFS = 8
"""Embeddings kept for their mix (evaluation in flight at once)."""


def he_params(spec: CkksSpec, batch_size: int, d: int, m: int) -> he.HeParams:
    """Kernel parameters of a job's layer ``d -> m`` (BadRequest if they do not hold)."""
    try:
        return he.HeParams.for_layer(
            batch_size,
            d,
            m,
            poly_modulus_degree=spec.poly_modulus_degree,
            coeff_mod_bit_sizes=tuple(spec.coeff_mod_bit_sizes),
            input_scale_bits=spec.input_scale_bits,
            output_scale_bits=spec.output_scale_bits,
            mask_bits=spec.mask_bits,
        )
    except he.HeParamsError as exc:
        raise BadRequest(f"CKKS parameters refused: {exc}", code=ErrorCode.BAD_REQUEST) from exc


def he_failure(exc: he.HeError) -> MalformedTensors:
    """A kernel refusal as a 4xx the caller can read."""
    return MalformedTensors(f"ciphertext refused: {exc}", detail={"kind": type(exc).__name__})


class CkksFeature:
    """P's keys and share for one job."""

    def __init__(
        self,
        params: he.HeParams,
        share: F64,
        optimizer: OptimizerSpec,
        pool: he.HePool,
        keys: he.HeKeys | None = None,
    ) -> None:
        if keys is not None and keys.params != params:
            raise Conflict("the stored keys were made for other CKKS parameters")
        self.keys = keys if keys is not None else he.HeKeys.generate(params)
        self.bundle = self.keys.public_bundle()
        self.fingerprint = self.keys.fingerprint
        self.share = SgdShare(share, optimizer)
        self.pool = pool
        self.embeds: OrderedDict[str, npt.NDArray[np.float64]] = OrderedDict()

    @property
    def params(self) -> he.HeParams:
        """The job's kernel parameters."""
        return self.keys.params

    def encrypt(self, h: npt.NDArray[np.float32]) -> tuple[bytes, bytes]:
        """``Enc(h)`` and ``Enc(W_P)`` for the label party."""
        try:
            enc_h = he.encrypt_rows(self.keys, h.astype(np.float64), pool=self.pool)
            enc_w = he.encrypt_weights(self.keys, self.share.w, pool=self.pool)
        except he.HeError as exc:  # e.g. activations beyond the headroom
            raise BadRequest(f"cannot encrypt this batch: {exc}") from exc
        return enc_h, enc_w

    def _decrypt(self, blob: bytes, shape: tuple[int, int]) -> F64:
        try:
            return he.decrypt_matrix(self.keys, blob, shape, pool=self.pool)
        except he.HeError as exc:
            raise he_failure(exc) from exc

    def mix(self, masked: bytes, h: npt.NDArray[np.float64]) -> F64:
        """``h W_A + R`` (decrypted) ``+ h W_P``: what the label party unmasks into ``z``."""
        part = self._decrypt(masked, (h.shape[0], self.params.out_features))
        out: F64 = part + h @ self.share.w
        return out

    def gradients(self, grad_w: bytes, grad_h: bytes, rows: int) -> tuple[F64, F64]:
        """Decrypt P's masked share of W's gradient and the gradient of P's output (no change)."""
        g_share = self._decrypt(grad_w, (self.params.in_features, self.params.out_features))
        dh = self._decrypt(grad_h, (rows, self.params.in_features))
        return g_share, dh

    def remember(self, ref: str, h: npt.NDArray[np.float64]) -> None:
        """Keep an embedding for the mix that follows it."""
        self.embeds[ref] = h
        self.embeds.move_to_end(ref)
        while len(self.embeds) > EMBED_REFS:
            self.embeds.popitem(last=False)

    def recall(self, ref: str) -> npt.NDArray[np.float64]:
        """The embedding ``ref`` names."""
        try:
            return self.embeds[ref]
        except KeyError:
            raise BadRequest(f"no embedding {ref!r} awaits a mix", detail={"ref": ref}) from None
