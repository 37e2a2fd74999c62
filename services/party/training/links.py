"""One feature party as the label party's trainer sees it, under the job's protection mode.

A link turns a batch of handles into ``z_i = h_i W_i`` (rows x m) and turns ``dL/dz_i`` into what
the feature party receives next. :class:`PlainLink` sees ``h_i`` and holds ``W_i``;
:class:`CkksLink` sees only ciphertexts under the feature party's key and holds its share
``W_A`` (docs/protocol.md). Both apply the label-leakage defence to ``dL/dz`` before anything
derived from it leaves, and both move ``W_i`` along the same SGD trajectory, so the two modes
train the same model up to CKKS rounding (tests/party/test_protection.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from services.engine import he
from services.engine.defence import defend
from services.engine.he import blob as he_blob
from services.engine.interactive import F64, OffsetShare, SgdShare, label_share_init
from services.engine.keyed import JobKey
from services.protocol.errors import ErrorCode, PeerError, SpliceError
from services.protocol.messages import PreparedJob, TrainingSpec
from services.protocol.peers import SegmentClient


class KeyMismatch(SpliceError):
    """A feature party's key bundle is not the one recorded for the job."""

    status = 409
    code = ErrorCode.CONFLICT


class CutLink(Protocol):
    """What the trainer needs from one feature party, whatever the protection."""

    name: str
    key_bytes: int
    share_bits: int | None
    warnings: list[str]

    async def forward(
        self, step: int, handles: npt.NDArray[np.int64], sent: asyncio.Event
    ) -> torch.Tensor: ...

    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None: ...

    async def flush(self) -> None: ...

    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor: ...

    def state(self) -> dict[str, F64]: ...

    def load(self, state: dict[str, F64]) -> None: ...

    def reset(self) -> None: ...


class _Base:
    def __init__(self, spec: TrainingSpec, name: str, client: SegmentClient, key: JobKey) -> None:
        self.spec, self.name, self.client = spec, name, client
        self.key = key
        """The label party's private job key: the defence noise of step t is the stream
        ``("defence", name)`` at counter t (reproducible after a restart, unknown to the party)."""
        self.defence = spec.protection.defence
        self.key_bytes = 0
        self.share_bits: int | None = None
        """ckks: the width (bits) of the offsets that re-randomise the label party's share."""
        self.warnings: list[str] = []
        """What weakens the protection the contract states (reported in the job's status)."""
        self.m = spec.model.top.interactive
        self.d = spec.model.bottom[name].out

    def _defended(self, delta: torch.Tensor, examples: int, step: int) -> F64:
        noise = self.key.stream("defence", self.name, counter=step)
        out: F64 = defend(delta.detach().double(), examples, self.defence, noise).numpy()
        return out


class PlainLink(_Base):
    """Plain mode: the feature party's ``h`` in the clear; ``W = W_A + W_P`` held whole."""

    def __init__(
        self,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
    ) -> None:
        super().__init__(spec, name, client, key)
        if prepared.share is None:
            raise PeerError(f"party {name} sent no interactive-weight share in plain mode")
        share = np.asarray(prepared.share, dtype=np.float64)
        if share.shape != (self.d, self.m) or not np.isfinite(share).all():
            raise PeerError(f"party {name} sent a share of shape {share.shape}")
        w = label_share_init(key, name, self.d, self.m) + share
        self.w = SgdShare(w, spec.model.interactive_optimizer)
        self._h: npt.NDArray[np.float64] | None = None
        self._pending: tuple[int, npt.NDArray[np.float32]] | None = None

    async def forward(
        self, step: int, handles: npt.NDArray[np.int64], sent: asyncio.Event
    ) -> torch.Tensor:
        """``h W`` for ``handles``; the request carries the previous step's gradient."""
        grad_step, grad = self._pending if self._pending is not None else (None, None)
        h = await self.client.forward(
            self.spec.job_id, step, handles, grad_step=grad_step, grad=grad, sent=sent
        )
        self._pending = None
        self._h = h.astype(np.float64)
        return torch.from_numpy(self._h @ self.w.w).float()

    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None:
        """Update ``W`` with ``h^T dz``; keep ``defend(dz) W^T`` for the party."""
        assert self._h is not None
        dz = delta.detach().double().numpy()
        dh = self._defended(delta, examples, step) @ self.w.w.T
        self.w.step(self._h.T @ dz)
        self._pending = (step, dh.astype(np.float32))

    async def flush(self) -> None:
        """Send the last gradient of an epoch on its own."""
        if self._pending is not None:
            step, grad = self._pending
            await self.client.backward(self.spec.job_id, step, grad)
            self._pending = None

    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        """``h W`` in evaluation mode."""
        h = await self.client.embed(self.spec.job_id, handles)
        return torch.from_numpy(h.astype(np.float64) @ self.w.w).float()

    def state(self) -> dict[str, F64]:
        return self.w.state()

    def load(self, state: dict[str, F64]) -> None:
        self.w.load(state)

    def reset(self) -> None:
        """Forget the step in progress (the run goes back to a consistent checkpoint)."""
        self._pending = None
        self._h = None


class CkksLink(_Base):
    """CKKS mode: ``Enc(h)`` under the feature party's key, ``W_A`` here, ``W_P`` there."""

    def __init__(
        self,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        bundle: bytes,
        pool: he.HePool,
    ) -> None:
        super().__init__(spec, name, client, key)
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
                f"{spec.model.interactive_optimizer.lr} is too small for "
                f"{spec.protection.ckks.mask_bits}-bit gradient masks (raise the lr or mask_bits)"
            )
        self.prepared: he.PreparedWeights | None = None
        self._upload: tuple[bytes, bytes] | None = None
        self._pending: tuple[int, tuple[bytes, bytes]] | None = None

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
            self.client.forward_encrypted(
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
        enc_h, enc_w = await request
        self._pending = None
        if _rows(self.name, enc_h) != handles.shape[0]:
            raise PeerError(f"party {self.name} encrypted the wrong number of rows")
        self._upload = (enc_h, enc_w)
        return await self._mixed(enc_h, step=step)

    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None:
        """``Enc(h^T dz + R')`` for P's share of W's gradient, ``Enc(dz~ W_P^T) + dz~ W_A^T``
        for P's output; ``W_A`` absorbs ``-R'``."""
        assert self._upload is not None
        enc_h, enc_w = self._upload
        dz = delta.detach().double().numpy()
        defended = self._defended(delta, examples, step)
        addend = defended @ self.w.w.T
        try:
            grad_h = he.input_grad(self.public, enc_w, defended, addend, pool=self.pool)
            grad_w = he.backward(self.public, enc_h, dz, self.w.next_mask(), pool=self.pool)
        except he.HeError as exc:
            raise PeerError(f"party {self.name}'s ciphertexts are unusable: {exc}") from exc
        self.w.commit()
        self.prepared = None
        self._pending = (step, (grad_w, grad_h))
        self._upload = None

    async def flush(self) -> None:
        """Send the last gradients of an epoch on their own."""
        if self._pending is not None:
            step, grads = self._pending
            await self.client.backward_encrypted(self.spec.job_id, step, grads)
            self._pending = None

    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        """``z = h W`` in evaluation mode, by the same two messages."""
        ref = uuid.uuid4().hex
        enc_h = await self.client.embed_encrypted(self.spec.job_id, handles, ref)
        if _rows(self.name, enc_h) != handles.shape[0]:
            raise PeerError(f"party {self.name} encrypted the wrong number of rows")
        return await self._mixed(enc_h, ref=ref)

    def state(self) -> dict[str, F64]:
        return self.w.state()

    def load(self, state: dict[str, F64]) -> None:
        self.w.load(state)
        self.prepared = None

    def reset(self) -> None:
        """Forget the step in progress (the run goes back to a consistent checkpoint)."""
        self._pending = None
        self._upload = None

    def _prepare(self) -> he.PreparedWeights:
        """W_A's plaintext encodings (and the randomisers of one step), made once per update."""
        if self.prepared is None:
            self.prepared = he.prepare_weights(
                self.public, self.w.w, pool=self.pool, rows=self.spec.batch_size
            )
        return self.prepared


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
    opt = spec.model.interactive_optimizer
    for bits in range(spec.protection.ckks.share_bits, -1, -1):
        share = OffsetShare(w0, opt, bits, rng)
        if share.mask_bound() <= params.grad_mask_bound:
            return share, bits
    raise SpliceError(
        f"interactive lr {opt.lr} is too small for the CKKS gradient masks; raise it or mask_bits",
        code=ErrorCode.BAD_REQUEST,
    )


async def connect(
    spec: TrainingSpec,
    name: str,
    client: SegmentClient,
    key: JobKey,
    prepared: PreparedJob,
    pool: he.HePool | None,
    recorded: dict[str, str] | None,
) -> CutLink:
    """The link for a prepared feature party; in ckks mode fetch and check its public keys.

    ``recorded`` holds the fingerprints the registry keeps with the job (None without a
    registry): the bundle must hash to this party's entry and to what the party announced.
    """
    if prepared.mode != spec.protection.mode:
        raise PeerError(f"party {name} prepared the job in {prepared.mode} mode")
    if spec.protection.mode == "plain":
        return PlainLink(spec, name, client, key, prepared)
    assert pool is not None
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
        return CkksLink(spec, name, client, key, bundle, pool)
    except he.HeError as exc:
        raise PeerError(f"party {name}'s key bundle is unusable: {exc}") from exc
