"""Feature-party endpoint of the tree family: the label party's tree protocol requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from services.party.api.deps import OctetsDep, StateDep, accept_deadline, require_label_caller
from services.party.families.gbdt.feature_jobs import TreeRoles
from services.party.families.gbdt.wire import KIND_PATTERN
from services.protocol import deadline

router = APIRouter(
    prefix="/v1/jobs", tags=["trees"], dependencies=[accept_deadline, require_label_caller]
)

_OCTETS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def roles(request: Request) -> TreeRoles:
    """This process's tree roles (created with the app)."""
    found = getattr(request.app.state, "tree_roles", None)
    if found is None:
        found = request.app.state.tree_roles = TreeRoles()
    assert isinstance(found, TreeRoles)
    return found


@router.post(
    "/{job_id}/trees/{kind}",
    openapi_extra=_OCTETS,
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def tree_request(
    state: StateDep,
    body: OctetsDep,
    request: Request,
    job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")],
    kind: Annotated[str, Path(pattern=KIND_PATTERN)],
) -> Response:
    """One request of the vertical tree protocol (docs/adr/0012-vertical-gbdt.md) for a
    prepared ``gbdt`` job: ``setup`` (the job's rows and parameters, checked against the
    contract), ``layout``, ``keys``, ``allowed``, ``histograms`` (or ``submit`` then
    ``collect``: encrypted nodes answered with a ticket, their histograms later), ``split``,
    ``resolve``. Bodies
    and answers are tree messages (a JSON header and byte sections, never pickle); a malformed
    message, histogram or ciphertext is a 400 ``bad_request`` with ``detail.reason``
    ``malformed_tree_message`` (``invalid_tree_params`` for parameters) and changes nothing.
    No feature value, bin edge or threshold is ever in an answer."""
    job = state.job(job_id)
    async with job.lock:
        deadline.check()
        answer = await run_in_threadpool(roles(request).handle, job, kind, body)
    return Response(answer, media_type="application/octet-stream")
