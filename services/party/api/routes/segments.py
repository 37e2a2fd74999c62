"""Feature-party endpoints: a job's bottom segment, stepped by the label party."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from services.party.api import segment_ops
from services.party.api.deps import (
    JSON_BODY,
    FrameDep,
    FrameEvaluationDep,
    LabelCallerDep,
    ObserverDep,
    OctetsDep,
    StateDep,
    accept_deadline,
    require_evaluation,
    require_frame_evaluation,
    require_label_caller,
)
from services.party.contract_terms import check_prepare, require_replaceable
from services.party.registry_link import RegistryLink
from services.protocol import deadline
from services.protocol.errors import Conflict
from services.protocol.messages import (
    CheckpointInfo,
    CheckpointRequest,
    PreparedJob,
    PrepareJob,
    StepAck,
)
from services.protocol.version import TENSOR_MEDIA_TYPE

router = APIRouter(
    prefix="/v1/jobs", tags=["segments"], dependencies=[accept_deadline, require_label_caller]
)

JobIdPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Job id.")
]
_TENSOR_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {TENSOR_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_TENSOR_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {TENSOR_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
}


@router.put("/{job_id}", status_code=status.HTTP_201_CREATED, dependencies=[JSON_BODY])
async def prepare(
    state: StateDep, body: PrepareJob, job_id: JobIdPath, caller: LabelCallerDep, request: Request
) -> PreparedJob:
    """Create this party's bottom segment for a job and align rows with the label party's keys.

    Answers which of the given keys this party holds; rows are named by their position in
    ``keys`` (their *handle*) from then on. Under a registry the party fetches the contract
    version in force and derives the job from it: the ``terms`` the request states and the
    segment, optimizer, protection, batch size and columns it asks for must be exactly the
    contract's (403 ``contract_mismatch`` naming each field that differs); only the contract's
    columns of this party's table are used. A job that exists, or whose model version is
    approved or deployed, is never replaced (409). In ckks mode the party generates the job's
    keys and registers their fingerprint with the job at the registry (``GET .../keys`` serves
    the public bundle).
    """
    segment_ops.same_job(job_id, body.job_id)
    link: RegistryLink | None = request.app.state.registry
    if link is not None and caller is not None:
        standing = await link.authorizer.require_standing(
            caller.contract_id, caller.org_id, job_id, role="label"
        )
        require_replaceable(standing, job_id, state.settings.name, "prepare again")
        if standing.contract_version is None:
            raise Conflict("the contract has no version in force")
        contract = await link.contract(caller.contract_id, standing.contract_version)
        check_prepare(contract, body, state.settings.name, state.settings.key_column)
        await link.check_table(
            state.table, caller.contract_id, standing.contract_version, label=False
        )
    prepared = state.prepare(body)
    if link is not None and caller is not None and standing.contract_version is not None:
        state.record_contract(job_id, caller.contract_id, standing.contract_version)
    if link is not None and prepared.key_fingerprint is not None:
        try:
            await link.register_key(job_id, body.party, prepared.key_fingerprint)
        except BaseException:
            state.delete(job_id)  # also its saved spec: a restart must not revive it
            raise
    return prepared


_INLINE_BYTES = 4096
"""Round messages up to this size (about 120 keys) are answered on the event loop."""
_OCTETS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/{job_id}/psi",
    openapi_extra=_OCTETS,
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}}},
)
async def psi_message(state: StateDep, body: OctetsDep, job_id: JobIdPath) -> Response:
    """Private alignment (ECDH PSI): step 1 (the label party's blinded keys) is answered with
    this party's reply frame; step 3 (the shared positions) with the counts as JSON."""
    job = state.job(job_id)
    async with job.lock:
        deadline.check()
        answer, last = job.align(body)
    return Response(answer, media_type="application/json" if last else "application/octet-stream")


@router.post(
    "/{job_id}/serving-psi",
    openapi_extra=_OCTETS,
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}}},
    dependencies=[require_evaluation],
)
async def serving_psi(
    state: StateDep,
    body: OctetsDep,
    job_id: JobIdPath,
    since: Annotated[int, Query(ge=0, le=2**32)] = 0,
) -> Response:
    """Incremental alignment at serving time (docs/adr/0010-incremental-alignment.md): step 1
    (the label party's freshly blinded new keys, counted against the contract's alignment limit
    of the label party; 422 ``psi_set_too_large`` beyond it) is answered with the evaluated
    points and this job's serving key book from position ``since`` on (the points the caller
    lacks: this party's keys blinded under the job's secret serving scalar, which test nothing
    without a counted round); step 3 (the matched positions of the key book) with
    ``{"handles": [...]}``, the handle of each (a row that has a handle keeps it). A retried
    message gets the same answer."""
    job = state.job(job_id)
    async with job.lock:
        deadline.check()
        book = (
            job.book if job.book is not None else await run_in_threadpool(state.serving_book, job)
        )
        if len(body) <= _INLINE_BYTES:  # a few keys: cheaper than a thread hop
            answer, last = book.receive(body, job.assign, since)
        else:
            answer, last = await run_in_threadpool(book.receive, body, job.assign, since)
    return Response(answer, media_type="application/json" if last else "application/octet-stream")


@router.get("/{job_id}/drift", dependencies=[require_evaluation])
async def drift(state: StateDep, job_id: JobIdPath) -> dict[str, Any]:
    """Drift of this party's features between the job's training rows and the rows it embedded
    for predictions lately: PSI and KS per encoded column, scores only (no value, no key)."""
    job = state.job(job_id)
    async with job.lock:
        return await run_in_threadpool(job.drift)


@router.get(
    "/{job_id}/keys",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
async def public_keys(state: StateDep, job_id: JobIdPath) -> Response:
    """ckks mode: the job's public key bundle (public key and the Galois keys the layout needs;
    never the secret key). Its sha256 is the fingerprint registered with the job."""
    job = state.job(job_id)
    return Response(job.protection.public_bundle(), media_type="application/octet-stream")


@router.get("/{job_id}")
async def job_status(state: StateDep, job_id: JobIdPath) -> dict[str, Any]:
    """Step counters and sizes of a job at this party (no data)."""
    return state.job(job_id).status()


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(
    state: StateDep, job_id: JobIdPath, caller: LabelCallerDep, request: Request
) -> Response:
    """Forget a job; its checkpoints stay on disk. Under a registry a job whose model version
    is approved or deployed is immutable: 409 ``model_immutable``, nothing changes."""
    link: RegistryLink | None = request.app.state.registry
    if link is not None and caller is not None:
        standing = await link.authorizer.require_standing(
            caller.contract_id, caller.org_id, job_id, role="label"
        )
        require_replaceable(standing, job_id, state.settings.name, "delete")
    state.delete(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{job_id}/forward",
    openapi_extra=_TENSOR_BODY,
    responses=_TENSOR_ANSWER,
    response_class=Response,
)
async def forward(state: StateDep, frame: FrameDep, job_id: JobIdPath) -> Response:
    """Training forward for ``handles``; applies a piggybacked gradient of the previous step first.

    A retry with the same step and idempotency key returns the same activations; any other reuse
    of a step is a 409.
    """
    body = await segment_ops.forward(state, job_id, frame)
    return Response(body, media_type=TENSOR_MEDIA_TYPE)


@router.post("/{job_id}/backward", openapi_extra=_TENSOR_BODY)
async def backward(state: StateDep, frame: FrameDep, job_id: JobIdPath) -> StepAck:
    """Apply the gradient for the forward of ``step`` and take an optimizer step."""
    return await segment_ops.backward(state, job_id, frame)


@router.post(
    "/{job_id}/embed",
    openapi_extra=_TENSOR_BODY,
    responses=_TENSOR_ANSWER,
    response_class=Response,
)
async def embed(
    state: StateDep,
    frame: FrameDep,
    job_id: JobIdPath,
    evaluation: FrameEvaluationDep,
    observer: ObserverDep,
) -> Response:
    """Activations for ``handles`` in evaluation mode (validation, test, inference).

    Under a registry, a job that has finished training answers only while its model is the
    contract's deployed one (409 ``model_not_deployed`` otherwise), and each such answer serves
    a prediction: this party records it (with the frame's ``usage_event``) and reports it to
    the registry, which reconciles it with the label party's usage events."""
    body = await segment_ops.embed(state, job_id, frame)
    await observer.observe(evaluation.caller, evaluation.standing, frame)
    return Response(body, media_type=TENSOR_MEDIA_TYPE)


@router.post(
    "/{job_id}/mix",
    openapi_extra=_TENSOR_BODY,
    responses=_TENSOR_ANSWER,
    response_class=Response,
    dependencies=[require_frame_evaluation],
)
async def mix(state: StateDep, frame: FrameDep, job_id: JobIdPath) -> Response:
    """ckks mode: decrypt ``Enc(h W_A + R)`` for a forward's ``step`` or an embed's ``ref`` and
    answer ``h W_A + R + h W_P`` (float64). One mix per forward or embed; like ``embed``, a
    finished job mixes only for the contract's deployed model."""
    body = await segment_ops.mix(state, job_id, frame)
    return Response(body, media_type=TENSOR_MEDIA_TYPE)


@router.post("/{job_id}/checkpoints", dependencies=[JSON_BODY])
async def checkpoint(state: StateDep, body: CheckpointRequest, job_id: JobIdPath) -> CheckpointInfo:
    """Save this party's segment and optimizer state under a tag (atomic)."""
    job = state.job(job_id)
    async with job.lock:
        deadline.check()
        return job.checkpoint(body.tag)


@router.post("/{job_id}/restore", dependencies=[JSON_BODY])
async def restore(state: StateDep, body: CheckpointRequest, job_id: JobIdPath) -> CheckpointInfo:
    """Restore this party's segment and optimizer state saved under a tag."""
    job = state.job(job_id)
    async with job.lock:
        deadline.check()
        return job.restore(body.tag)
