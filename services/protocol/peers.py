"""Clients of the party service: the segment API (feature role) and the training API (label)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from services.protocol import codec, deadline, serving
from services.protocol.client import ServiceClient, error_of
from services.protocol.errors import ErrorCode, PeerError
from services.protocol.messages import (
    BackwardHeader,
    CheckpointInfo,
    CheckpointRequest,
    ContractTraining,
    EmbedHeader,
    ForwardHeader,
    JobState,
    MixHeader,
    PredictRequest,
    PredictResponse,
    PreparedJob,
    PrepareJob,
    StepAck,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.retry import RETRY_STATUS, Retryable
from services.protocol.stream import StreamOp
from services.protocol.stream_client import StepStream, StreamUnavailable, StreamUnreachable
from services.protocol.version import TENSOR_MEDIA_TYPE


def new_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


log = logging.getLogger("splice.peers")


class SegmentClient(ServiceClient):
    """The label party's view of one feature party.

    With ``stream`` a job's forward, backward, embed and mix calls travel over its step stream
    (:mod:`services.protocol.stream`), everything else over HTTP; a party that offers no stream
    is called over HTTP throughout.
    """

    wire: codec.WireFloat = "float32"

    def __init__(
        self,
        base_url: str,
        *,
        stream: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, transport=transport, verify=verify, **kwargs)
        self.stream = stream and transport is None
        self._tls = verify if isinstance(verify, ssl.SSLContext) else None
        self._streams: dict[str, StepStream] = {}

    async def aclose(self) -> None:
        """Close the step streams and the connection pool."""
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.aclose()
        await super().aclose()

    async def _exchange(
        self,
        op: StreamOp,
        job_id: str,
        header: BaseModel,
        tensors: dict[str, npt.NDArray[Any]],
        wire: codec.WireFloat = "float32",
        sent: asyncio.Event | None = None,
    ) -> bytes:
        """One segment call's answer body, over the job's stream or over HTTP."""
        body = codec.encode(header.model_dump(mode="json"), tensors, wire_dtype=wire)
        if self.stream:
            try:
                return await self._over_stream(op, job_id, body, sent)
            except StreamUnavailable as exc:
                log.info("no step stream at %s (%s); calling it over HTTP", self.base_url, exc)
                self.stream = False
        path = f"/v1/jobs/{job_id}/{op}"
        resp = await self.request(
            "POST", path, content=body, media_type=TENSOR_MEDIA_TYPE, sent=sent
        )
        return resp.content

    async def _over_stream(
        self, op: StreamOp, job_id: str, body: bytes, sent: asyncio.Event | None
    ) -> bytes:
        stream = self._streams.get(job_id)
        if stream is None:
            stream = self._streams[job_id] = StepStream(
                self.base_url,
                job_id,
                auth=self._http.auth,
                tls=self._tls,
                connect_timeout=self.timeout.connect or 10.0,
                read_timeout=self.timeout.read,
            )

        async def attempt() -> tuple[int, bytes]:
            budget = deadline.remaining_ms(self.timeout.read)
            before = (stream.sent_bytes, stream.received_bytes)
            try:
                status, out = await stream.call(op, body, deadline_ms=budget, sent=sent)
            except StreamUnreachable as exc:
                raise Retryable(str(exc)) from exc
            self.traffic.sent += stream.sent_bytes - before[0]
            self.traffic.received += stream.received_bytes - before[1]
            if status in RETRY_STATUS:  # a stream answer has a status and a body, no headers
                raise Retryable.of(httpx.Response(status, content=out))
            return status, out

        try:
            status, out = await self.policy.call(attempt)
        except Retryable as exc:
            if exc.response is None:
                unreachable = PeerError(
                    f"{self.base_url} unreachable: {exc.__cause__}",
                    detail={"url": self.base_url},
                    code=ErrorCode.PEER_UNAVAILABLE,
                )
                raise self.blame(unreachable) from exc.__cause__
            status, out = exc.response.status_code, exc.response.content
        if status >= 400:
            raise self.blame(error_of(status, out))
        return out

    async def prepare(self, spec: PrepareJob) -> PreparedJob:
        """Create the party's segment for a job and align keys."""
        self.wire = spec.wire_dtype
        return await self.call("PUT", f"/v1/jobs/{spec.job_id}", spec, PreparedJob)

    async def step(
        self,
        job_id: str,
        step: int,
        handles: npt.NDArray[np.int64],
        *,
        grad_step: int | None = None,
        grads: Mapping[str, npt.NDArray[Any]] | None = None,
        train: bool = True,
        key: str | None = None,
        sent: asyncio.Event | None = None,
    ) -> codec.Frame:
        """A training forward for ``handles`` at ``step``, piggybacking the previous step's
        gradient tensors ``grads`` (what they are is the protection mode's business: ``grad``
        in plain mode, ciphertext blobs in ckks mode); the decoded answer frame."""
        header = ForwardHeader(
            job_id=job_id,
            step=step,
            idempotency_key=key or new_key(),
            train=train,
            grad_step=grad_step,
        )
        tensors: dict[str, npt.NDArray[Any]] = {"handles": handles, **(grads or {})}
        answer = await self._exchange("forward", job_id, header, tensors, self.wire, sent)
        return codec.decode(answer)

    async def deliver(
        self,
        job_id: str,
        step: int,
        grads: Mapping[str, npt.NDArray[Any]],
        *,
        key: str | None = None,
    ) -> StepAck:
        """Deliver the gradient tensors for the forward of ``step`` on their own."""
        header = BackwardHeader(job_id=job_id, step=step, idempotency_key=key or new_key())
        answer = await self._exchange("backward", job_id, header, dict(grads), self.wire)
        return StepAck.model_validate_json(answer)

    async def evaluate(
        self, job_id: str, handles: npt.NDArray[np.int64], *, ref: str | None = None
    ) -> codec.Frame:
        """Evaluation-mode answer for ``handles`` (``ref`` names it for a following mix). A call
        made while serving a prediction names its usage event (the feature party counts it)."""
        shadow = serving.shadow()
        event = None if shadow else serving.current()
        header = EmbedHeader(job_id=job_id, ref=ref, usage_event=event, shadow=shadow)
        return codec.decode(await self._exchange("embed", job_id, header, {"handles": handles}))

    async def forward(
        self,
        job_id: str,
        step: int,
        handles: npt.NDArray[np.int64],
        *,
        grad_step: int | None = None,
        grad: npt.NDArray[np.float32] | None = None,
        train: bool = True,
        key: str | None = None,
        sent: asyncio.Event | None = None,
    ) -> npt.NDArray[np.float32]:
        """Plain mode: activations for ``handles`` at ``step``, after the previous step's
        gradient ``grad``."""
        grads = None if grad is None else {"grad": grad}
        frame = await self.step(
            job_id, step, handles, grad_step=grad_step, grads=grads, train=train, key=key, sent=sent
        )
        return frame.tensor("activations", dtype="float32", ndim=2).astype(np.float32, copy=False)

    async def backward(
        self, job_id: str, step: int, grad: npt.NDArray[np.float32], *, key: str | None = None
    ) -> StepAck:
        """Plain mode: deliver the gradient for the forward of ``step``."""
        return await self.deliver(job_id, step, {"grad": grad}, key=key)

    async def embed(self, job_id: str, handles: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Plain mode: evaluation-mode activations for ``handles``."""
        frame = await self.evaluate(job_id, handles)
        return frame.tensor("activations", dtype="float32", ndim=2).astype(np.float32, copy=False)

    # --- psi alignment --------------------------------------------------------------------------

    async def psi(self, job_id: str, message: bytes) -> bytes:
        """Send one PSI frame; the party's answer (a PSI frame, or JSON counts at the end)."""
        resp = await self.request(
            "POST", f"/v1/jobs/{job_id}/psi", content=message, media_type="application/octet-stream"
        )
        return resp.content

    async def drift(self, job_id: str) -> dict[str, Any]:
        """The party's drift scores for a job (PSI and KS per column; no values)."""
        answer: dict[str, Any] = await self.get_json(f"/v1/jobs/{job_id}/drift")
        return answer

    async def serving_psi(self, job_id: str, message: bytes, since: int = 0) -> bytes:
        """Incremental alignment: one round message (``since``: the key book points the caller
        holds); the evaluated points and the book's new points, or JSON handles."""
        resp = await self.request(
            "POST",
            f"/v1/jobs/{job_id}/serving-psi?since={since}",
            content=message,
            media_type="application/octet-stream",
        )
        return resp.content

    # --- ckks mode ------------------------------------------------------------------------------

    async def public_keys(self, job_id: str) -> bytes:
        """The job's public key bundle (ckks mode)."""
        resp = await self.request("GET", f"/v1/jobs/{job_id}/keys")
        return resp.content

    async def mix(
        self, job_id: str, masked: bytes, *, step: int | None = None, ref: str | None = None
    ) -> npt.NDArray[np.float64]:
        """ckks: the party's ``h W_A + R + h W_P`` for a forward's step or an embed's ref."""
        header = MixHeader(job_id=job_id, step=step, ref=ref, shadow=serving.shadow())
        answer = await self._exchange("mix", job_id, header, {"masked": codec.blob_tensor(masked)})
        arr: npt.NDArray[np.float64] = codec.decode(answer).tensor("mixed", dtype="float64", ndim=2)
        return arr

    async def checkpoint(self, job_id: str, tag: str) -> CheckpointInfo:
        """Save the party's segment state under ``tag``."""
        req = CheckpointRequest(tag=tag)
        return await self.call("POST", f"/v1/jobs/{job_id}/checkpoints", req, CheckpointInfo)

    async def restore(self, job_id: str, tag: str) -> CheckpointInfo:
        """Restore the party's segment state saved under ``tag``."""
        req = CheckpointRequest(tag=tag)
        return await self.call("POST", f"/v1/jobs/{job_id}/restore", req, CheckpointInfo)

    async def delete(self, job_id: str) -> None:
        """Forget the job at the party (and close its step stream)."""
        stream = self._streams.pop(job_id, None)
        if stream is not None:
            await stream.aclose()
        await self.request("DELETE", f"/v1/jobs/{job_id}")


class PartyClient(ServiceClient):
    """Operator's view of a party service (health, training runs at the label party)."""

    async def health(self) -> dict[str, Any]:
        """The party's health document."""
        doc: dict[str, Any] = await self.get_json("/v1/health")
        return doc

    async def start_training(self, spec: TrainingSpec) -> TrainingStatus:
        """Ask the label party to train a joint model."""
        resp = await self.request(
            "POST", "/v1/trainings", json=spec.model_dump(mode="json"), retry_reads=False
        )
        return TrainingStatus.model_validate_json(resp.content)

    async def start_contract_training(
        self, contract_id: str, request: ContractTraining | None = None
    ) -> TrainingStatus:
        """Ask the label party to train the job ``contract_id`` fixes (it derives the spec from
        the contract; without ``request.job_id`` it opens the registry job itself)."""
        body = (request or ContractTraining()).model_dump(mode="json")
        resp = await self.request(
            "POST", f"/v1/contracts/{contract_id}/trainings", json=body, retry_reads=False
        )
        return TrainingStatus.model_validate_json(resp.content)

    async def follow(
        self,
        status: TrainingStatus,
        *,
        poll: float = 0.25,
        on_status: Callable[[TrainingStatus], None] | None = None,
    ) -> TrainingStatus:
        """Poll a started run every ``poll`` seconds until it finished or failed; ``on_status``
        sees every status on the way. Returns the last status (failed included)."""
        while status.state not in (JobState.FINISHED, JobState.FAILED):
            await asyncio.sleep(poll)
            status = await self.training(status.job_id)
            if on_status is not None:
                on_status(status)
        return status

    async def training(self, job_id: str) -> TrainingStatus:
        """Status of a training run."""
        resp = await self.request("GET", f"/v1/trainings/{job_id}")
        return TrainingStatus.model_validate_json(resp.content)

    async def train(
        self,
        spec: TrainingSpec,
        *,
        poll: float = 0.25,
        on_status: Callable[[TrainingStatus], None] | None = None,
    ) -> TrainingStatus:
        """Start a training run and poll it every ``poll`` seconds until it finished or failed;
        ``on_status`` sees every status on the way. Returns the last status (failed included)."""
        status = await self.start_training(spec)
        return await self.follow(status, poll=poll, on_status=on_status)

    async def predict(self, contract_id: str, request: PredictRequest) -> PredictResponse:
        """Predictions of the contract's deployed model (label party). Each answer is metered,
        so the request is not repeated once it may have arrived (a 503 is: nothing was served).
        """
        resp = await self.request(
            "POST",
            f"/v1/contracts/{contract_id}/predict",
            json=request.model_dump(mode="json"),
            retry_reads=False,
        )
        return PredictResponse.model_validate_json(resp.content)
