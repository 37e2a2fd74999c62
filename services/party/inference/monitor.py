"""The deployed model's live quality, read at the label party (issue 18).

``POST /v1/contracts/{id}/outcomes`` stores ground truth for served predictions
(:mod:`.outcomes`); ``GET /v1/contracts/{id}/quality`` answers, per model version, the live
metric over the latest outcomes, every party's drift scores (this party's own, and each feature
party's, which computes them on its own rows and sends only the scores), and whether the
contract's monitoring thresholds raise an alert. An alert that starts or ends is logged as an
event (``quality_alert``); the status stays in the answer, and under a registry the report is
kept with the deployed model version (``PUT /v1/jobs/{job}/quality``, where a change of status is
an audit event).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from contracts.limits import MonitoringTerms
from services.party.inference.outcomes import OutcomeStore
from services.party.inference.service import PredictCaller, Predictor
from services.protocol.errors import SpliceError
from services.protocol.messages import OutcomesRequest, OutcomesResponse

log = logging.getLogger("splice.party.quality")


class Monitor:
    """Outcomes and quality of the models a label party serves."""

    def __init__(self, predictor: Predictor, store: OutcomeStore) -> None:
        self.predictor = predictor
        self.store = store
        self.alerts: dict[str, bool] = {}
        """Contract -> whether its alert is raised (as last computed)."""
        self.events: list[dict[str, Any]] = []
        """Alert changes, oldest first (the latest 100)."""

    async def outcomes(
        self, contract_id: str, body: OutcomesRequest, who: PredictCaller | None
    ) -> OutcomesResponse:
        """Store outcomes of served predictions (all or none)."""
        model = self.predictor.serving_for(contract_id, who).model
        classes = None if model.task.value == "regression" else list(model.labels.classes)
        done = await asyncio.to_thread(self.store.record, contract_id, body.outcomes, classes)
        return OutcomesResponse(recorded=done.recorded, unchanged=done.unchanged)

    async def terms(self, contract_id: str, version: int) -> MonitoringTerms:
        """The contract's monitoring terms (defaults without a registry)."""
        link = self.predictor.link
        if link is None:
            return MonitoringTerms()
        return (await link.contract(contract_id, version)).monitoring

    async def quality(self, contract_id: str, who: PredictCaller | None) -> dict[str, Any]:
        """Live metric per model version, drift per party, and the alert."""
        serving = self.predictor.serving_for(contract_id, who)
        model = serving.model
        terms = await self.terms(contract_id, serving.contract_version)
        classes = None if model.task.value == "regression" else list(model.labels.classes)
        versions = await asyncio.to_thread(
            self.store.quality, contract_id, model.task, terms.window, classes
        )
        drift = [await asyncio.to_thread(model.drift)]
        for name, client in model.clients.items():
            try:
                drift.append(await client.drift(model.job_id))
            except SpliceError as exc:
                drift.append({"party": name, "error": exc.code, "columns": []})
        reasons = []
        for v in versions:
            v["deployed"] = v["model_version"] == serving.model_version
            low = terms.min_live_metric
            if v["deployed"] and low is not None and v.get("value") is not None:
                if v["outcomes"] >= terms.min_outcomes and v["value"] < low:
                    reasons.append(f"live {v['metric']} {v['value']} is below {low}")
        for d in drift:
            worst = d.get("max_psi")
            if worst is not None and worst > terms.max_feature_psi:
                column = max(d["columns"], key=lambda c: c["psi"])["column"]
                reasons.append(
                    f"party {d['party']}: PSI {worst} of {column} is above {terms.max_feature_psi}"
                )
        alert = bool(reasons)
        if self.alerts.get(contract_id, False) != alert:
            event = {"event": "quality_alert", "contract_id": contract_id, "raised": alert}
            self.events = [*self.events[-99:], {**event, "reasons": reasons}]
            log.warning("quality alert %s for contract %s: %s", alert, contract_id, reasons)
        self.alerts[contract_id] = alert
        deployed = next((v for v in versions if v["deployed"]), {})
        await self._report(model.job_id, alert, reasons, deployed, drift)
        return {
            "contract_id": contract_id,
            "deployed_version": serving.model_version,
            "status": "alert" if alert else "ok",
            "alerts": reasons,
            "thresholds": terms.model_dump(),
            "versions": versions,
            "drift": drift,
        }

    async def _report(
        self,
        job_id: str,
        alert: bool,
        reasons: list[str],
        live: dict[str, Any],
        drift: list[dict[str, Any]],
    ) -> None:
        """Keep the registry's record of the deployed version's quality current (best effort:
        a refusal or an outage is logged, the answer stands)."""
        link = self.predictor.link
        if link is None or link.settings.issuer is None:
            return
        body = {
            "status": "alert" if alert else "ok",
            "alerts": reasons,
            "live": live,
            "drift": drift,
        }
        try:
            token = await link.tokens.token(link.settings.issuer, "jobs:run")
            resp = await link.http.put(
                f"/v1/jobs/{job_id}/quality",
                json=body,
                headers={"authorization": f"Bearer {token}"},
            )
            if resp.status_code >= 400:
                log.warning("registry refused the quality of %s: %s", job_id, resp.text[:200])
        except (httpx.HTTPError, SpliceError) as exc:
            log.warning("cannot report the quality of %s to the registry: %s", job_id, exc)


__all__ = ["Monitor"]
