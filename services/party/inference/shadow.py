"""Champion and challenger on the same recent outcome window (issue 18), not a sale.

A retraining job finishes as a *challenger*: a model version of the contract that is not
deployed. Before anyone approves it, the label party scores it beside the deployed *champion*
on the same rows: boards whose outcomes came back (their ``row_ids``). Both models predict the
rows in shadow mode (``EmbedHeader.shadow``): the feature parties answer a finished job of the
contract only for the contract's label party and only while a version is deployed, record no
serving call and meter nothing; the label party writes no usage event and keeps no prediction.
Each model's metric is computed on the rows both predicted and whose outcome is recorded.

Shadow scoring is not a free prediction channel: only rows whose outcome is already recorded are
predicted at all (the others are not sent to any party), a request holds at most
:data:`MAX_SHADOW_ROWS` rows (413) and a challenger is scored on at most
:data:`MAX_SHADOW_PER_CHALLENGER` rows in all, counted durably with the outcomes (409
``shadow_limit_reached``; a refused request counts nothing).
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.party.inference.outcomes import OutcomeStore, metric
from services.party.inference.service import PredictCaller, Predictor
from services.protocol import serving
from services.protocol.errors import Conflict, ErrorCode, PayloadTooLarge, Unprocessable
from services.protocol.messages import JobState, Prediction, PredictRequest

MAX_SHADOW_ROWS = 2_000
"""Rows one shadow-scoring request may hold."""
MAX_SHADOW_PER_CHALLENGER = 10_000
"""Graded rows one challenger may be shadow-scored on, over all requests."""


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
    if len(request.rows) > MAX_SHADOW_ROWS:
        raise PayloadTooLarge(
            f"shadow scoring takes at most {MAX_SHADOW_ROWS} rows a request, not "
            f"{len(request.rows)}",
            detail={"rows": len(request.rows), "max": MAX_SHADOW_ROWS},
        )
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
    outcomes = await asyncio.to_thread(store.outcomes_of, contract_id, request.row_ids)
    graded = [i for i, row_id in enumerate(request.row_ids) if row_id in outcomes]
    rows = [request.rows[i] for i in graded]
    ids = [request.row_ids[i] for i in graded]
    ours = champion.model.schema.encode(rows)
    theirs = challenger.schema.encode(rows)
    if rows:
        await asyncio.to_thread(
            store.reserve_shadow, contract_id, challenger_job, len(rows), MAX_SHADOW_PER_CHALLENGER
        )
    old: list[Prediction] = []
    new: list[Prediction] = []
    with serving.shadow_scoring():  # no usage event, nothing metered at any party
        if rows and predictor.aligner is not None:  # the champion aligns new keys as it serves
            await predictor.aligner.complete(champion.model.job_id, champion.model.clients, ours)
        if rows:
            old = await champion.model.predict(ours, None)
            new = await challenger.predict(theirs, None)
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
        "graded": len(rows),
        "compared": len(both),
        "champion": {"job_id": champion.model.job_id, "model_version": champion.model_version, **a},
        "challenger": {"job_id": challenger.job_id, **b},
        "challenger_better": better,
        "metered": False,
    }


__all__ = ["shadow_compare"]
