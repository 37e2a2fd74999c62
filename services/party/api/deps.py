"""Dependencies of the party API, as ``Annotated`` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.datastructures import State

from services.party.auth import ContractStanding, PeerCaller, bearer_token, require_serving
from services.party.inference import PredictCaller, Predictor
from services.party.inference.monitor import Monitor
from services.party.metering import UsageOutbox
from services.party.metering.observations import ServingObserver
from services.party.metering.shipper import UsageShipper
from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.party.state import PartyState
from services.party.training.runs import TrainingRuns
from services.protocol import codec, deadline
from services.protocol.bounds import INT64_MAX, MAX_DEADLINE_MS
from services.protocol.errors import Conflict, ErrorCode, Forbidden, UnsupportedMediaType
from services.protocol.jwt_verify import token_scopes
from services.protocol.version import TENSOR_MEDIA_TYPE
from services.web.ratelimit import LocalRateLimiter


async def _state(request: Request) -> PartyState:
    state: PartyState = request.app.state.party
    return state


async def _settings(request: Request) -> PartySettings:
    settings: PartySettings = request.app.state.party.settings
    return settings


async def _runs(request: Request) -> TrainingRuns:
    runs: TrainingRuns = request.app.state.runs
    return runs


async def _monitor(request: Request) -> Monitor:
    monitor: Monitor = request.app.state.monitor
    return monitor


async def _predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


async def _outbox(request: Request) -> UsageOutbox:
    outbox: UsageOutbox = request.app.state.outbox
    return outbox


async def _shipper(request: Request) -> UsageShipper | None:
    shipper: UsageShipper | None = request.app.state.shipper
    return shipper


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_media(request: Request) -> None:
    media = _media(request)
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"this endpoint takes application/json, not {media or 'no content type'}",
            detail={"expected": "application/json"},
        )


async def _frame(request: Request) -> codec.Frame:
    media = _media(request)
    if media != TENSOR_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"this endpoint takes {TENSOR_MEDIA_TYPE}, not {media or 'no content type'}",
            detail={"expected": TENSOR_MEDIA_TYPE},
        )
    return codec.decode(await request.body())


async def _octets(request: Request) -> bytes:
    media = _media(request)
    if media != "application/octet-stream":
        raise UnsupportedMediaType(
            f"this endpoint takes application/octet-stream, not {media or 'no content type'}",
            detail={"expected": "application/octet-stream"},
        )
    return await request.body()


StateDep = Annotated[PartyState, Depends(_state)]
SettingsDep = Annotated[PartySettings, Depends(_settings)]
RunsDep = Annotated[TrainingRuns, Depends(_runs)]
PredictorDep = Annotated[Predictor, Depends(_predictor)]
MonitorDep = Annotated[Monitor, Depends(_monitor)]
OutboxDep = Annotated[UsageOutbox, Depends(_outbox)]
ShipperDep = Annotated[UsageShipper | None, Depends(_shipper)]
FrameDep = Annotated[codec.Frame, Depends(_frame)]
OctetsDep = Annotated[bytes, Depends(_octets)]
JSON_BODY = Depends(_json_media)


DeadlineHeader = Annotated[
    int | None,
    Header(
        alias=deadline.HEADER,
        ge=-INT64_MAX,
        le=MAX_DEADLINE_MS,
        description="Milliseconds the caller still waits for the answer (a call arriving with "
        "0 or less is refused 504 deadline_exceeded).",
    ),
]


async def _deadline(ms: DeadlineHeader = None) -> None:
    """Take the caller's ``X-Splice-Deadline`` (a bounded integer: 422 otherwise); refuse a call
    that arrives past it (504)."""
    deadline.bind(deadline.accept(ms))


accept_deadline = Depends(_deadline)
"""Route dependency of endpoints with a JSON body: any other content type is a 415."""


def count_caller(app_state: State, org_id: str) -> None:
    """The per-organisation rate limit (one party process: counted in memory)."""
    limiter: LocalRateLimiter | None = getattr(app_state, "caller_limiter", None)
    if limiter is not None:
        limiter.hit(org_id, f"organisation {org_id}")


def _count_caller(request: Request, org_id: str) -> None:
    count_caller(request.app.state, org_id)


async def _label_caller(request: Request) -> PeerCaller | None:
    """Job endpoints: the caller must be the contract's label party for this job."""
    link: RegistryLink | None = request.app.state.registry
    if link is None:
        return None
    job_id = request.path_params.get("job_id")
    caller = await link.authorizer.authorize(
        request.headers.get("authorization"), role="label", job_id=job_id
    )
    _count_caller(request, caller.org_id)
    return caller


async def _operator(request: Request) -> PeerCaller | None:
    """Training endpoints: the caller must be this party's own organisation (scope jobs:run)."""
    link: RegistryLink | None = request.app.state.registry
    if link is None:
        return None
    claims = await link.authorizer.verify(request.headers.get("authorization"))
    if "jobs:run" not in token_scopes(claims):
        raise Forbidden("the token lacks scope jobs:run", detail={"scope": "jobs:run"})
    if claims.get("org_id") != link.settings.org_id:
        raise Forbidden("only this party's own organisation may run trainings here")
    _count_caller(request, str(claims["org_id"]))
    return PeerCaller(
        str(claims["org_id"]),
        str(claims["client_id"]),
        str(claims.get("contract_id") or ""),
        str(claims.get("job_id") or ""),
        token_scopes(claims),
    )


LabelCallerDep = Annotated[PeerCaller | None, Depends(_label_caller)]
OperatorDep = Annotated[PeerCaller | None, Depends(_operator)]
require_label_caller = Depends(_label_caller)


def is_shadow(frame: codec.Frame) -> bool:
    """Whether an embed or mix frame asks for shadow scoring (``EmbedHeader.shadow``)."""
    return frame.header.get("shadow") is True


async def check_evaluation(
    link: RegistryLink | None,
    caller: PeerCaller | None,
    state: PartyState,
    *,
    shadow: bool = False,
) -> ContractStanding | None:
    """Embed and mix: a job that no longer trains serves only as the contract's deployed model,
    and only while this party's segment is the one the registry recorded for that model version
    (409 ``segment_mismatch`` otherwise). The registry's standing of the call (None without a
    registry)."""
    if link is None or caller is None:
        return None
    standing = await link.authorizer.require_standing(
        caller.contract_id, caller.org_id, caller.job_id, role="label"
    )
    require_serving(standing, caller.job_id, shadow=shadow)
    recorded = (standing.deployed_segment_digests or {}).get(state.settings.name)
    if standing.deployed_job_id != caller.job_id or recorded is None:
        return standing
    held = state.job(caller.job_id).segment_digest()
    if held != recorded:
        raise Conflict(
            f"party {state.settings.name} will not serve job {caller.job_id}: its segment is not "
            f"the one model version {standing.deployed_model_version} recorded",
            code=ErrorCode.SEGMENT_MISMATCH,
            detail={"party": state.settings.name, "recorded": recorded, "held": held},
        )
    return standing


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An evaluation call's caller and the registry's standing of it (both None when open)."""

    caller: PeerCaller | None
    standing: ContractStanding | None
    shadow: bool = False
    """Shadow scoring: not a sale, nothing recorded (``EmbedHeader.shadow``)."""


async def _evaluation(request: Request, caller: LabelCallerDep) -> Evaluation:
    standing = await check_evaluation(request.app.state.registry, caller, request.app.state.party)
    return Evaluation(caller, standing)


async def _frame_evaluation(
    request: Request, caller: LabelCallerDep, frame: FrameDep
) -> Evaluation:
    """Embed and mix: their frame says whether they score in shadow mode."""
    shadow = is_shadow(frame)
    link, state = request.app.state.registry, request.app.state.party
    standing = await check_evaluation(link, caller, state, shadow=shadow)
    return Evaluation(caller, standing, shadow)


EvaluationDep = Annotated[Evaluation, Depends(_evaluation)]
FrameEvaluationDep = Annotated[Evaluation, Depends(_frame_evaluation)]
require_frame_evaluation = Depends(_frame_evaluation)


async def _observer(request: Request) -> ServingObserver:
    observer: ServingObserver = request.app.state.observer
    return observer


ObserverDep = Annotated[ServingObserver, Depends(_observer)]


async def _predict_caller(request: Request) -> PredictCaller | None:
    """Predictions: a buyer of the contract in the path (scope predict:call)."""
    link: RegistryLink | None = request.app.state.registry
    if link is None:
        return None
    authorization = request.headers.get("authorization")
    caller, standing = await link.authorizer.authorize_predict(
        authorization, request.path_params["contract_id"]
    )
    _count_caller(request, caller.org_id)
    return PredictCaller(caller, standing, bearer_token(authorization))


PredictCallerDep = Annotated[PredictCaller | None, Depends(_predict_caller)]
require_evaluation = Depends(_evaluation)
