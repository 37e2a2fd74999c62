"""Champion and challenger on the same recent outcome window (issue 18), not a sale.

A retraining job finishes as a *challenger*: a model version of the contract that is not
deployed. Before anyone approves it, the label party scores it beside the deployed *champion*
on the same rows: boards whose outcomes came back (their ``row_ids``). Both models predict the
rows in shadow mode (``EmbedHeader.shadow``): the feature parties answer a finished job of the
contract only for the contract's label party and only while a version is deployed, record no
serving call and meter nothing; the label party writes no usage event and keeps no prediction.
Each model's metric is computed on the rows both predicted and whose outcome is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.party.inference.outcomes import OutcomeStore, metric
from services.party.inference.service import PredictCaller, Predictor
from services.protocol import serving
from services.protocol.errors import Conflict, ErrorCode, Unprocessable
from services.protocol.messages import JobState, Prediction, PredictRequest


def _score(p: Prediction) -> float | None:
    return p.probability if p.probability is not None else p.value


async def shadow_compare(
    predictor: Predictor,
    store: OutcomeStore,
    contract_id: str,
    challenger_job: str,
    request: PredictRequest,
    who: PredictCaller | None,
) -> dict[str, Any]:
    """The champion's and the challenger's metric on ``request``'s rows with outcomes."""
    if request.row_ids is None:
        raise Unprocessable(
            "shadow scoring needs row_ids: the rows' recorded outcomes are found by them",
            code=ErrorCode.BAD_REQUEST,
        )
    ids = request.row_ids
    champion = predictor.serving_for(contract_id, who)
    trainer = predictor.runs.serving(challenger_job)
    if (
        trainer is None
        or trainer.spec.contract_id != contract_id
        or trainer.status.state is not JobState.FINISHED
    ):
        raise Conflict(
            f"job {challenger_job} is not a finished job of contract {contract_id} here",
            code=ErrorCode.MODEL_NOT_LOADED,
            detail={"job_id": challenger_job},
        )
    challenger = predictor.model_for(trainer)
    if challenger.job_id == champion.model.job_id:
        raise Conflict(
            f"job {challenger_job} is the deployed model: nothing to compare",
            code=ErrorCode.CONFLICT,
            detail={"job_id": challenger_job},
        )
    ours = champion.model.schema.encode(request.rows)
    theirs = challenger.schema.encode(request.rows)
    with serving.shadow_scoring():  # no usage event, nothing metered at any party
        if predictor.aligner is not None:  # the champion aligns new keys as it serves
            await predictor.aligner.complete(champion.model.job_id, champion.model.clients, ours)
        old = await champion.model.predict(ours, None)
        new = await challenger.predict(theirs, None)
    outcomes = await asyncio.to_thread(store.outcomes_of, contract_id, ids)
    both = [
        i
        for i, (a, b) in enumerate(zip(old, new, strict=True))
        if a.status == b.status == "predicted" and ids[i] in outcomes
    ]
    task = champion.model.task
    classes = None if task.value == "regression" else list(champion.model.labels.classes)

    def scored(preds: list[Prediction]) -> dict[str, Any]:
        rows = [(_score(preds[i]), preds[i].label, outcomes[ids[i]]) for i in both]
        return metric(task, rows, classes)

    a, b = scored(old), scored(new)
    better = a.get("value") is not None and b.get("value") is not None and b["value"] > a["value"]
    return {
        "contract_id": contract_id,
        "rows": len(request.rows),
        "compared": len(both),
        "champion": {"job_id": champion.model.job_id, "model_version": champion.model_version, **a},
        "challenger": {"job_id": challenger.job_id, **b},
        "challenger_better": better,
        "metered": False,
    }


__all__ = ["shadow_compare"]
