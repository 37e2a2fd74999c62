"""Metered joint inference at the label party: which model serves, checked rows, one usage event.

Under a registry the contract's deployed model version serves: the registry's contract check
names it and the job that trained it, and that job's finished run must be held by this process
(409 ``model_not_deployed`` / ``model_not_loaded`` otherwise), with the model digest the registry
recorded for that version (409 ``segment_mismatch`` otherwise; each answer carries the digest).
A run reloaded after a restart on a changed table answers 409 ``data_changed``. The rows are
checked against the contract's schema for this party too. Without a registry (local pilots) the
latest finished run under the contract id (or the job id) serves, as model version 1.

Every answer is metered: one :class:`UsageEvent` (count = rows, predicted or not) is written
to the durable outbox after the predictions are computed and before they are answered; if it
cannot be written, nothing is served (503). A refused request writes nothing. The event carries
the caller's access token (the registry bills the organisation it names, after checking it) and
its id travels with the embed calls to the feature parties, which record them on their own.
Before any work, the join keys the request names count against the caller's allowance for the
period (the contract's ``serving.max_keys_per_caller``; :mod:`.quota`): a row whose key the
alignment did not share costs what an answer costs, so the intersection has no free membership
test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.limits import ServingTerms
from services.engine.harmonise import HarmonisationError, UnitsError, check_table, read_units
from services.party.auth import ContractStanding, PeerCaller
from services.party.families import family_of
from services.party.inference.incremental import IncrementalAligner
from services.party.inference.outcomes import OutcomeStore
from services.party.inference.quota import KeyAllowance, KeyQuota, key_digests
from services.party.inference.rows import RequestRows
from services.party.inference.serving import ServingModel
from services.party.metering.outbox import UsageOutbox
from services.party.registry_link import RegistryLink
from services.party.training.driver import SplitTrainer
from services.party.training.runs import TrainingRuns
from services.protocol import serving as usage_event
from services.protocol.errors import Conflict, ErrorCode, Unavailable, Unprocessable
from services.protocol.messages import Prediction, PredictRequest, PredictResponse, UsageEvent

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


def _require_recorded(model: ServingModel, standing: ContractStanding) -> None:
    """Refuse (409 ``segment_mismatch``) to serve a model whose digest (this party's segment as
    it holds it, and the others' as they reported them) is not the registry's record of the
    deployed model version."""
    recorded = standing.deployed_model_digest
    if recorded is None or recorded == model.digest:
        return
    mine = (standing.deployed_segment_digests or {}).get(model.party)
    held = model.segment_digests.get(model.party)
    which = model.party if mine != held else "a feature party"
    raise Conflict(
        f"party {model.party} will not serve model version {standing.deployed_model_version}: "
        f"the segment of {which} differs from the registry's record",
        code=ErrorCode.SEGMENT_MISMATCH,
        detail={"party": model.party, "recorded": recorded, "held": model.digest},
    )


class Predictor:
    """Serves predictions of the models this party trained, metering every answer."""

    def __init__(
        self,
        runs: TrainingRuns,
        outbox: UsageOutbox,
        link: RegistryLink | None,
        on_event: Callable[[], None] | None = None,
        *,
        quota: KeyQuota | None = None,
        open_terms: ServingTerms | None = None,
        aligner: IncrementalAligner | None = None,
        outcomes: OutcomeStore | None = None,
    ) -> None:
        self.runs = runs
        self.outbox = outbox
        self.link = link
        self.quota = quota
        self.open_terms = open_terms
        """Serving terms without a registry (None: no key allowance, no rounding)."""
        self.on_event = on_event
        self.aligner = aligner
        self.outcomes = outcomes
        """Where predicted rows are kept for their outcomes (None: not kept)."""
        """Aligns keys the job's alignment did not share at serving time (None: they stay
        unpredicted)."""
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
        terms = self.open_terms
        if self.link is not None:
            terms = await self._check_contract_schema(rows, contract_id, serving.contract_version)
        allowance = await self._admit(contract_id, serving.caller_org, rows, terms)
        decimals = terms.round_probabilities if terms is not None else None
        event_id = str(uuid.uuid4())
        with usage_event.for_event(event_id):  # the feature parties record the call under it
            if self.aligner is not None:
                model = serving.model
                await self.aligner.complete(model.job_id, model.clients, rows)
            predictions = await serving.model.predict(rows, decimals)
        if self.outcomes is not None:
            await self._keep(contract_id, serving.model_version, event_id, predictions, request)
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
            model_digest=serving.model.digest,
            event_id=event.event_id,
            predictions=predictions,
            rows=rows.count,
            predicted=sum(p.status == "predicted" for p in predictions),
            keys_used=None if allowance is None else allowance.used,
            keys_limit=None if allowance is None else allowance.limit,
        )

    async def _admit(
        self, contract_id: str, caller_org: str, rows: RequestRows, terms: ServingTerms | None
    ) -> KeyAllowance | None:
        """Count the request's distinct keys against the caller's allowance (429 beyond it)."""
        if terms is None or self.quota is None:
            return None
        named = ((party, key) for party, keys in rows.keys.items() for key in keys)
        digests = key_digests(contract_id, named)
        return await asyncio.to_thread(
            self.quota.admit,
            contract_id,
            caller_org,
            digests,
            limit=terms.max_keys_per_caller,
            period=terms.period,
        )

    async def _keep(
        self,
        contract_id: str,
        version: int,
        event_id: str,
        predictions: list[Prediction],
        request: PredictRequest,
    ) -> None:
        """Keep the predicted rows for their outcomes; 503 (nothing served) if they cannot be."""
        assert self.outcomes is not None
        try:
            await asyncio.to_thread(
                self.outcomes.served, contract_id, version, event_id, predictions, request.row_ids
            )
        except Exception as exc:
            log.error("cannot keep the predictions of %s: %s", event_id, exc)
            raise Unavailable("the prediction log is unavailable: retry later") from exc

    def serving_for(self, contract_id: str, who: PredictCaller | None) -> _Serving:
        """The model serving ``contract_id`` for ``who`` (409 when none)."""
        return self._serving(contract_id, who)

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
        model = self.model_for(trainer)
        _require_recorded(model, standing)
        return _Serving(model, version, contract_version, who.caller.org_id)

    def model_for(self, trainer: SplitTrainer) -> ServingModel:
        """The serving view of a finished run (built once per job)."""
        model = self._models.get(trainer.spec.job_id)
        if model is None:
            family = family_of(trainer.spec.model.family)
            model = self._models[trainer.spec.job_id] = family.serving_model(trainer)
        return model

    async def _check_contract_schema(
        self, rows: RequestRows, contract_id: str, version: int
    ) -> ServingTerms:
        """Refuse (422 ``schema_violation``) rows that break the contract's schema of this
        party: any violating row counts (the table's tolerance does not apply to requests).
        Answers the contract's serving terms."""
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
        return contract.serving

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
