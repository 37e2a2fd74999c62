"""Metered joint inference at the label party: which model serves, checked rows, one usage event.

Under a registry the contract's deployed model version serves: the registry's contract check
names it and the job that trained it, and that job's finished run must be held by this process
(409 ``model_not_deployed`` / ``model_not_loaded`` otherwise). The rows are checked against the
contract's schema for this party too. Without a registry (local pilots) the latest finished run
under the contract id (or the job id) serves, as model version 1.

Every answer is metered: one :class:`UsageEvent` (count = rows) is written to the durable
outbox after the predictions are computed and before they are answered; if it cannot be
written, nothing is served (503). A refused request writes nothing. The event carries the
caller's access token (the registry bills the organisation it names, after checking it) and its
id travels with the embed calls to the feature parties, which record them on their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.engine.harmonise import HarmonisationError, UnitsError, check_table, read_units
from services.party.auth import ContractStanding, PeerCaller
from services.party.inference.rows import RequestRows
from services.party.inference.serving import ServingModel
from services.party.metering.outbox import UsageOutbox
from services.party.registry_link import RegistryLink
from services.party.training.driver import SplitTrainer
from services.party.training.runs import TrainingRuns
from services.protocol import serving as usage_event
from services.protocol.errors import Conflict, ErrorCode, Unavailable, Unprocessable
from services.protocol.messages import PredictRequest, PredictResponse, UsageEvent

log = logging.getLogger("splice.party.inference")
LOCAL_ORG = "local"
"""The caller organisation of usage events in open mode (no registry, no tokens)."""


@dataclass(frozen=True, slots=True)
class PredictCaller:
    """A verified caller of the predict endpoint and the registry's answer about its contract;
    ``token`` is the access token the call carried (the registry bills its organisation)."""

    caller: PeerCaller
    standing: ContractStanding
    token: str | None = None


@dataclass(frozen=True, slots=True)
class _Serving:
    model: ServingModel
    model_version: int
    contract_version: int
    caller_org: str


class Predictor:
    """Serves predictions of the models this party trained, metering every answer."""

    def __init__(
        self,
        runs: TrainingRuns,
        outbox: UsageOutbox,
        link: RegistryLink | None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.runs = runs
        self.outbox = outbox
        self.link = link
        self.on_event = on_event
        self._models: dict[str, ServingModel] = {}
        self.served = 0
        """Answers served (one usage event written for each)."""
        self.rows_served = 0
        """Rows predicted in those answers."""

    async def predict(
        self, contract_id: str, request: PredictRequest, who: PredictCaller | None
    ) -> PredictResponse:
        """Predictions for ``request.rows`` under ``contract_id``, metered."""
        serving = self._serving(contract_id, who)
        rows = serving.model.schema.encode(request.rows)
        if self.link is not None:
            await self._check_contract_schema(rows, contract_id, serving.contract_version)
        event_id = str(uuid.uuid4())
        with usage_event.for_event(event_id):  # the feature parties record the call under it
            predictions = await serving.model.predict(rows)
        event = UsageEvent(
            event_id=event_id,
            contract_id=contract_id,
            contract_version=serving.contract_version,
            model_version=serving.model_version,
            caller_org=serving.caller_org,
            count=rows.count,
            timestamp=datetime.now(UTC),
            caller_token=who.token if who is not None else None,
        )
        await self._meter(event)
        return PredictResponse(
            model_version=serving.model_version,
            contract_version=serving.contract_version,
            event_id=event.event_id,
            predictions=predictions,
        )

    def _serving(self, contract_id: str, who: PredictCaller | None) -> _Serving:
        if self.link is None or who is None:
            trainer = self.runs.latest_finished(contract_id)
            if trainer is None:
                raise Conflict(
                    f"no finished training under {contract_id!r} at this party",
                    code=ErrorCode.MODEL_NOT_LOADED,
                    detail={"contract_id": contract_id},
                )
            return _Serving(self.model_for(trainer), 1, 1, LOCAL_ORG)
        standing = who.standing
        version, job_id = standing.deployed_model_version, standing.deployed_job_id
        if version is None or job_id is None:
            raise Conflict(
                f"contract {contract_id} has no deployed model version",
                code=ErrorCode.MODEL_NOT_DEPLOYED,
                detail={"contract_id": contract_id},
            )
        trainer = self.runs.serving(job_id)
        if trainer is None or trainer.spec.contract_id != contract_id:
            raise Conflict(
                f"the deployed model version {version} (job {job_id}) is not loaded at this party",
                code=ErrorCode.MODEL_NOT_LOADED,
                detail={"model_version": version, "job_id": job_id},
            )
        contract_version = standing.contract_version or 1
        return _Serving(self.model_for(trainer), version, contract_version, who.caller.org_id)

    def model_for(self, trainer: SplitTrainer) -> ServingModel:
        """The serving view of a finished run (built once per job)."""
        model = self._models.get(trainer.spec.job_id)
        if model is None:
            model = self._models[trainer.spec.job_id] = ServingModel(trainer)
        return model

    async def _check_contract_schema(
        self, rows: RequestRows, contract_id: str, version: int
    ) -> None:
        """Refuse (422 ``schema_violation``) rows that break the contract's schema of this
        party: any violating row counts (the table's tolerance does not apply to requests)."""
        assert self.link is not None
        settings = self.link.settings
        contract = await self.link.contract(contract_id, version)
        try:
            schema = contract.party(settings.name).feature_schema
            units = read_units(settings.units_file) if settings.units_file else None
        except (KeyError, UnitsError) as exc:
            raise Conflict(str(exc), code=ErrorCode.SCHEMA_VIOLATION) from exc
        present = set(rows.table.column_names)
        strict = schema.model_copy(
            update={
                "key_column": None,
                "id_column": None,
                "max_violation_rate": 0.0,
                "columns": [c for c in schema.columns if c.name in present],
            }
        )
        try:
            report = check_table(rows.table, strict, declared_units=units, party=settings.name)
        except HarmonisationError as exc:
            raise Conflict(str(exc), code=ErrorCode.SCHEMA_VIOLATION) from exc
        if not report.passed:
            raise Unprocessable(
                "the rows break the contract's schema: " + "; ".join(report.reasons[:5]),
                code=ErrorCode.SCHEMA_VIOLATION,
                detail=json.loads(report.to_json()),
            )

    async def _meter(self, event: UsageEvent) -> None:
        """Write ``event`` durably; :class:`Unavailable` (503) if it cannot be."""
        try:
            await asyncio.to_thread(self.outbox.append, [event])
        except Exception as exc:
            log.error("cannot write usage event %s: %s", event.event_id, exc)
            raise Unavailable(
                "usage metering is unavailable: no prediction is served until it is back"
            ) from exc
        self.served += 1
        self.rows_served += event.count
        if self.on_event is not None:
            self.on_event()
