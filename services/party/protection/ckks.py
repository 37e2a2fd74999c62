"""CKKS mode: ``h`` travels only encrypted under the feature party's own key.

Per training step (docs/protocol.md, *CKKS mode*): the forward answers ``Enc(h)`` and
``Enc(W_P)``; the label party A computes ``Enc(h W_A + R)`` and the feature party P decrypts it
and answers ``h W_A + R + h W_P`` (the mix); the next forward brings ``Enc(h^T dz + R')`` (P's
masked share of W's gradient) and, when P's bottom trains, ``Enc(dz~ W^T)`` (the defended
gradient of P's output), which P decrypts and applies. The secret key never leaves P.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch

from services.engine import he
from services.engine.he import blob as he_blob
from services.engine.interactive import F64, OffsetShare, SgdShare, label_share_init
from services.engine.keyed import JobKey
from services.party.protection.base import FeatureProtection, KeyMismatch, LabelLink
from services.protocol import codec
from services.protocol.errors import (
    BadRequest,
    Conflict,
    ErrorCode,
    MalformedTensors,
    PeerError,
    SpliceError,
)
from services.protocol.messages import (
    CkksSpec,
    OptimizerSpec,
    PreparedJob,
    PrepareJob,
    TrainingSpec,
    nn_model,
)
from services.protocol.peers import SegmentClient

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


class CkksFeature(FeatureProtection):
    """P's keys, its share ``W_P`` and its pending embeddings for one job."""

    mode = "ckks"
    keeps_secret = True

    def __init__(
        self,
        params: he.HeParams,
        share: F64,
        optimizer: OptimizerSpec,
        pool: he.HePool,
        keys: he.HeKeys | None = None,
        *,
        trainable: bool,
    ) -> None:
        super().__init__(trainable=trainable)
        if keys is not None and keys.params != params:
            raise Conflict("the stored keys were made for other CKKS parameters")
        self.keys = keys if keys is not None else he.HeKeys.generate(params)
        self.bundle = self.keys.public_bundle()
        self.fingerprint = self.keys.fingerprint
        self.share = SgdShare(share, optimizer)
        self.pool = pool
        self.embeds: OrderedDict[str, F64] = OrderedDict()
        self._share_grad: F64 | None = None

    @classmethod
    def create(
        cls,
        spec: PrepareJob,
        share: F64,
        pool: Callable[[], he.HePool],
        stored: bytes | None,
        *,
        trainable: bool,
    ) -> Self:
        d, m = share.shape
        params = he_params(spec.protection.ckks, spec.batch_size, d, m)
        keys = None
        if stored is not None:
            try:
                keys = he.HeKeys.import_secret(stored)
            except he.HeError as exc:
                raise Conflict(
                    f"job {spec.job_id!r} ran in ckks mode and its keys are not readable after "
                    f"this party's restart: it cannot resume ({type(exc).__name__})",
                    code=ErrorCode.CONFLICT,
                ) from exc
        return cls(params, share, spec.interactive_optimizer, pool(), keys, trainable=trainable)

    def secret(self) -> bytes:
        return self.keys.export_secret()

    @property
    def params(self) -> he.HeParams:
        """The job's kernel parameters."""
        return self.keys.params

    @property
    def width(self) -> int:
        return self.params.in_features

    def public_bundle(self) -> bytes:
        return self.bundle

    @property
    def shares_weights(self) -> bool:
        return True

    @property
    def needs_ref(self) -> bool:
        return True

    def _encrypt(self, h: torch.Tensor) -> tuple[bytes, bytes]:
        """``Enc(h)`` and ``Enc(W_P)`` for the label party."""
        try:
            enc_h = he.encrypt_rows(
                self.keys, h.detach().numpy().astype(np.float64), pool=self.pool
            )
            enc_w = he.encrypt_weights(self.keys, self.share.w, pool=self.pool)
        except he.HeError as exc:  # e.g. activations beyond the headroom
            raise BadRequest(f"cannot encrypt this batch: {exc}") from exc
        return enc_h, enc_w

    def forward_answer(self, header: dict[str, Any], out: torch.Tensor) -> bytes:
        enc_h, enc_w = self._encrypt(out)
        return codec.encode(
            header, {"enc_h": codec.blob_tensor(enc_h), "enc_w": codec.blob_tensor(enc_w)}
        )

    def embed_answer(self, header: dict[str, Any], out: torch.Tensor, ref: str | None) -> bytes:
        if ref is None:
            raise BadRequest("a ckks embed needs a ref for its mix")
        enc_h, _ = self._encrypt(out)
        self.remember(ref, out.detach().numpy().astype(np.float64))
        return codec.encode(header, {"enc_h": codec.blob_tensor(enc_h)})

    def _decrypt(self, blob: bytes, shape: tuple[int, int]) -> F64:
        try:
            return he.decrypt_matrix(self.keys, blob, shape, pool=self.pool)
        except he.HeError as exc:
            raise he_failure(exc) from exc

    def receive(self, frame: codec.Frame, rows: int, width: int) -> torch.Tensor | None:
        """Decrypt P's masked share of W's gradient and, if P's bottom trains, ``dL/dh``."""
        self.refuse_grad(frame, ("grad_h",))
        d, m = self.params.in_features, self.params.out_features
        g_share = self._decrypt(codec.blob_of(frame, "grad_w"), (d, m))
        dh = None
        if self.trainable:
            dh = torch.from_numpy(
                self._decrypt(codec.blob_of(frame, "grad_h"), (rows, d)).astype(np.float32)
            )
        self._share_grad = g_share
        return dh

    def apply(self) -> None:
        if self._share_grad is not None:
            self.share.step(self._share_grad)
            self._share_grad = None

    def discard(self) -> None:
        self._share_grad = None

    def mix(self, masked: bytes, h: F64) -> F64:
        """``h W_A + R`` (decrypted) ``+ h W_P``: what the label party unmasks into ``z``."""
        part = self._decrypt(masked, (h.shape[0], self.params.out_features))
        out: F64 = part + h @ self.share.w
        return out

    def remember(self, ref: str, h: F64) -> None:
        self.embeds[ref] = h
        self.embeds.move_to_end(ref)
        while len(self.embeds) > EMBED_REFS:
            self.embeds.popitem(last=False)

    def recall(self, ref: str) -> F64:
        try:
            return self.embeds[ref]
        except KeyError:
            raise BadRequest(f"no embedding {ref!r} awaits a mix", detail={"ref": ref}) from None

    def forget(self, ref: str) -> None:
        self.embeds.pop(ref, None)

    def state(self) -> dict[str, F64]:
        return self.share.state()

    def load(self, state: dict[str, F64]) -> None:
        self.share.load(state)
        self._share_grad = None

    def prepared(self) -> dict[str, Any]:
        return {"key_fingerprint": self.fingerprint, "key_bytes": len(self.bundle)}


class CkksLink(LabelLink):
    """The label party's side: ``Enc(h)`` under P's key, ``W_A`` here, ``W_P`` there."""

    mode = "ckks"

    def __init__(
        self,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
        bundle: bytes,
        pool: he.HePool,
    ) -> None:
        super().__init__(spec, name, client, key, prepared)
        self.public = he.PublicBundle.parse(bundle)
        self.params = self.public.params
        if (self.params.in_features, self.params.out_features) != (self.d, self.m):
            raise PeerError(f"party {name}'s keys are for another layer shape")
        self.key_bytes = len(bundle)
        self.pool = pool
        self.w, self.share_bits = _offset_share(spec, name, self.d, self.m, self.params, key)
        wanted = spec.protection.ckks.share_bits
        if self.share_bits < wanted:
            self.warnings.append(
                f"party {name}: the label party's interactive share is re-randomised by "
                f"+-2**{self.share_bits}, not the contract's +-2**{wanted}: interactive lr "
                f"{nn_model(spec.model).interactive_optimizer.lr} is too small for "
                f"{spec.protection.ckks.mask_bits}-bit gradient masks (raise the lr or mask_bits)"
            )
        self.prepared: he.PreparedWeights | None = None
        self._upload: tuple[bytes, bytes] | None = None
        self._pending: tuple[int, dict[str, npt.NDArray[np.uint8]]] | None = None

    @classmethod
    async def open(
        cls,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
        pool: Callable[[], he.HePool],
        recorded: dict[str, str] | None,
    ) -> Self:
        """Fetch the party's public keys; the bundle must hash to what the party announced and
        to this party's entry at the registry."""
        bundle = await client.public_keys(spec.job_id)
        digest = hashlib.sha256(bundle).hexdigest()
        wanted = [("the party", prepared.key_fingerprint)]
        if recorded is not None:
            wanted.append(("the registry", recorded.get(name)))
        for source, want in wanted:
            if want != digest:
                raise KeyMismatch(
                    f"party {name}'s key bundle does not match the fingerprint {source} holds",
                    detail={"party": name, "bundle": digest, "expected": want},
                )
        try:
            return cls(spec, name, client, key, prepared, bundle, pool())
        except he.HeError as exc:
            raise PeerError(f"party {name}'s key bundle is unusable: {exc}") from exc

    async def _mixed(
        self, enc_h: bytes, step: int | None = None, ref: str | None = None
    ) -> torch.Tensor:
        rows = _rows(self.name, enc_h)
        mask = he.draw_mask(self.params, (rows, self.m))
        prepared = self._prepare()
        try:
            masked = he.forward(self.public, enc_h, prepared, mask, pool=self.pool)
        except he.HeError as exc:
            raise PeerError(f"party {self.name} sent an unusable Enc(h): {exc}") from exc
        mixed = await self.client.mix(self.spec.job_id, masked, step=step, ref=ref)
        if mixed.shape != (rows, self.m):
            raise PeerError(f"party {self.name} mixed {mixed.shape}, expected {(rows, self.m)}")
        return torch.from_numpy(mixed - mask).float()

    async def forward(
        self, step: int, handles: npt.NDArray[np.int64], sent: asyncio.Event
    ) -> torch.Tensor:
        """``z = h W`` from ``Enc(h)``: ``Enc(h W_A + R)`` out, ``h W_A + R + h W_P`` back."""
        grad_step, grads = self._pending if self._pending is not None else (None, None)
        request = asyncio.ensure_future(
            self.client.step(
                self.spec.job_id, step, handles, grad_step=grad_step, grads=grads, sent=sent
            )
        )
        # Encode W_A's new plaintexts while the party works on this request (off the critical
        # path): they changed with last step's update.
        written = asyncio.ensure_future(sent.wait())
        await asyncio.wait({written, request}, return_when=asyncio.FIRST_COMPLETED)
        written.cancel()
        if not request.done():
            self._prepare()
        frame = await request
        self._pending = None
        enc_h, enc_w = _blob(self.name, frame, "enc_h"), _blob(self.name, frame, "enc_w")
        if _rows(self.name, enc_h) != handles.shape[0]:
            raise PeerError(f"party {self.name} encrypted the wrong number of rows")
        self._upload = (enc_h, enc_w)
        return await self._mixed(enc_h, step=step)

    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None:
        """``Enc(h^T dz + R')`` for P's share of W's gradient (``W_A`` absorbs ``-R'``) and, if
        P's bottom trains, ``Enc(dz~ W_P^T) + dz~ W_A^T`` for P's output."""
        assert self._upload is not None
        enc_h, enc_w = self._upload
        dz = delta.detach().double().numpy()
        grads: dict[str, npt.NDArray[np.uint8]] = {}
        try:
            if self.sends_dh:
                defended = self._defended(delta, examples, step)
                addend = defended @ self.w.w.T
                grad_h = he.input_grad(self.public, enc_w, defended, addend, pool=self.pool)
                grads["grad_h"] = codec.blob_tensor(grad_h)
            grad_w = he.backward(self.public, enc_h, dz, self.w.next_mask(), pool=self.pool)
        except he.HeError as exc:
            raise PeerError(f"party {self.name}'s ciphertexts are unusable: {exc}") from exc
        grads["grad_w"] = codec.blob_tensor(grad_w)
        self.w.commit()
        self.prepared = None
        self._pending = (step, grads)
        self._upload = None

    async def flush(self) -> None:
        if self._pending is not None:
            step, grads = self._pending
            await self.client.deliver(self.spec.job_id, step, grads)
            self._pending = None

    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        """``z = h W`` in evaluation mode, by the same two messages."""
        ref = uuid.uuid4().hex
        frame = await self.client.evaluate(self.spec.job_id, handles, ref=ref)
        enc_h = _blob(self.name, frame, "enc_h")
        if _rows(self.name, enc_h) != handles.shape[0]:
            raise PeerError(f"party {self.name} encrypted the wrong number of rows")
        return await self._mixed(enc_h, ref=ref)

    def state(self) -> dict[str, F64]:
        return self.w.state()

    def load(self, state: dict[str, F64]) -> None:
        """Restore a checkpoint, or a champion's share (a retraining job): its initial share
        ``w0`` may differ from this job's, so the offsets narrow if its masks would not fit."""
        self.w.load(state)
        self.prepared = None
        bits = self.share_bits or 0
        while self.w.mask_bound() > self.params.grad_mask_bound and bits > 0:
            bits -= 1
            self.w.bound = float(2.0**bits)
        self.share_bits = bits

    def reset(self) -> None:
        self._pending = None
        self._upload = None

    def _prepare(self) -> he.PreparedWeights:
        """W_A's plaintext encodings (and the randomisers of one step), made once per update."""
        if self.prepared is None:
            self.prepared = he.prepare_weights(
                self.public, self.w.w, pool=self.pool, rows=self.spec.batch_size
            )
        return self.prepared


def _blob(name: str, frame: codec.Frame, tensor: str) -> bytes:
    try:
        return codec.blob_of(frame, tensor)
    except SpliceError as exc:
        raise PeerError(f"party {name} sent no usable {tensor}: {exc}") from exc


def _rows(name: str, blob: bytes) -> int:
    try:
        return he_blob.peek(blob)[2]
    except he.HeError as exc:
        raise PeerError(f"party {name} sent an unusable ciphertext blob: {exc}") from exc


def _offset_share(
    spec: TrainingSpec, name: str, d: int, m: int, params: he.HeParams, key: JobKey
) -> tuple[OffsetShare, int]:
    """A's share, with the widest offsets (at most ``2**share_bits``) whose masks ``R'`` fit
    the kernel's backward mask bound, and that width in bits.

    The offsets need no reproducibility, only secrecy: they come from a stream under a fresh
    key from the OS CSPRNG (a resumed run draws new ones)."""
    w0 = label_share_init(key, name, d, m)
    rng = JobKey.generate().stream("offset", name)
    opt = nn_model(spec.model).interactive_optimizer
    for bits in range(spec.protection.ckks.share_bits, -1, -1):
        share = OffsetShare(w0, opt, bits, rng)
        if share.mask_bound() <= params.grad_mask_bound:
            return share, bits
    raise SpliceError(
        f"interactive lr {opt.lr} is too small for the CKKS gradient masks; raise it or mask_bits",
        code=ErrorCode.BAD_REQUEST,
    )
