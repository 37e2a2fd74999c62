"""Label-party endpoint: metered predictions of the contract's deployed joint model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from services.party.api.deps import JSON_BODY, MonitorDep, PredictCallerDep, PredictorDep
from services.party.inference.shadow import shadow_compare
from services.protocol.errors import Forbidden
from services.protocol.messages import (
    OutcomesRequest,
    OutcomesResponse,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(prefix="/v1/contracts", tags=["inference"])

ContractIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Contract id.")]
JobIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@router.post(
    "/{contract_id}/predict",
    dependencies=[JSON_BODY],
    response_model_exclude_none=True,
)
async def predict(
    contract_id: ContractIdPath,
    body: PredictRequest,
    caller: PredictCallerDep,
    predictor: PredictorDep,
) -> PredictResponse:
    """Predictions of the contract's deployed joint model for 1 to 10,000 rows.

    Each row holds exactly the label party's feature columns and each feature party's join key
    column (e.g. ``paste_lot_id``); an unknown or missing column, or a value of the wrong type,
    is a 422 naming it. Rows are matched to the feature parties' rows through the training
    job's private alignment, without any key leaving this party: a row whose key the alignment
    did not share answers ``status: no_prediction`` and is metered like an answer. Every
    distinct join key a caller names counts, once per period, against the contract's
    ``serving.max_keys_per_caller`` (``keys_used`` / ``keys_limit`` in the answer); a request
    that would pass it is a 429 ``key_limit_reached`` before any work, with ``Retry-After``
    until the period ends. Probabilities are rounded to ``serving.round_probabilities``.

    Under a registry the caller needs a token for this party with scope ``predict:call`` and
    claim ``contract_id``, from an organisation that owns or is a party to the active contract;
    409 ``model_not_deployed`` when the contract has no deployed model version,
    ``model_not_loaded`` when this process does not hold the job that trained it.

    Every answer is one usage event (count = rows asked, ``event_id`` in the answer), written to
    the durable outbox before the answer and shipped to the registry for billing; when it cannot be
    written nothing is served (503 ``metering_unavailable``). Refused requests are not metered.
    Binary tasks answer the positive class's ``probability`` and the predicted ``label``;
    multiclass the ``label`` and ``probabilities`` by class; regression the ``value``.
    """
    return await predictor.predict(contract_id, body, caller)


@router.post("/{contract_id}/outcomes", dependencies=[JSON_BODY])
async def post_outcomes(
    contract_id: ContractIdPath,
    body: OutcomesRequest,
    caller: PredictCallerDep,
    monitor: MonitorDep,
) -> OutcomesResponse:
    """Ground-truth outcomes of served predictions, arriving later (1 to 10,000).

    Each names a prediction by ``prediction_id`` (``<event_id>:<row>`` of the answer that served
    it) or by the ``row_id`` the prediction request gave the row (its latest prediction), and
    the ``outcome``: a class of the model, or a number for regression. The batch is stored whole
    or not at all: an unknown prediction, a prediction named twice, an outcome that contradicts
    the one recorded or a value that is no class is refused (422 ``outcomes_refused`` listing
    each row and why). Sending a recorded outcome again changes nothing (``unchanged``). The
    caller is a buyer of the contract, as for predictions.
    """
    return await monitor.outcomes(contract_id, body, caller)


@router.get("/{contract_id}/quality")
async def quality(
    contract_id: ContractIdPath, caller: PredictCallerDep, monitor: MonitorDep
) -> dict[str, Any]:
    """The deployed model's live quality: per model version the metric over its latest outcomes
    (AUC, accuracy and calibration for binary tasks; accuracy for multiclass; R² for regression),
    each party's drift between the training and serving windows (PSI and KS per column; each
    party computes its own and shares only the scores), and ``status`` ``alert`` with the
    reasons when the contract's ``monitoring`` thresholds are crossed."""
    return await monitor.quality(contract_id, caller)


@router.post("/{contract_id}/challengers/{job_id}/shadow", dependencies=[JSON_BODY])
async def shadow(
    contract_id: ContractIdPath,
    job_id: JobIdPath,
    body: PredictRequest,
    caller: PredictCallerDep,
    predictor: PredictorDep,
    monitor: MonitorDep,
) -> dict[str, Any]:
    """Champion and challenger on the same recent outcome window, not a sale.

    ``job_id`` is a finished job of the contract that is not deployed (a retraining job's
    challenger). Both it and the deployed champion predict ``rows`` in shadow mode: no usage
    event, nothing metered or recorded as served at any party. The answer holds each model's
    live metric on the rows both predicted whose outcome is recorded (found by ``row_ids``,
    required) and ``challenger_better``. Only the contract's label party may ask (403 for other
    organisations); the feature parties answer shadow calls only from it, while a model version
    of the contract is deployed."""
    if caller is not None and caller.standing.caller_role != "label":
        raise Forbidden(
            "only the contract's label party scores a challenger",
            detail={"contract": contract_id},
        )
    return await shadow_compare(predictor, monitor.store, contract_id, job_id, body, caller)
