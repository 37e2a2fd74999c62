"""The label party's reports to the registry about the jobs it drives: status, progress,
counts-only metrics, and the model version a finished job produced."""

from __future__ import annotations

import logging
import math

import httpx

from services.party.registry_link import RegistryLink
from services.protocol.errors import SpliceError
from services.protocol.messages import JobState, TrainingStatus

log = logging.getLogger("splice.registry")


async def report_progress(
    link: RegistryLink, status: TrainingStatus, artifacts: dict[str, str]
) -> str | None:
    """Tell the registry how a job this party drives is doing; never fails training. The
    reason, when the registry says the job was stopped there (cancelled): stop the run."""
    issuer = link.settings.issuer
    assert issuer is not None
    body: dict[str, object] = {"status": _JOB_STATUS[status.state]}
    if status.epochs:
        body["progress"] = min(1.0, len(status.history) / status.epochs)
    if status.history:  # the newest epoch; the registry keeps each epoch number once
        last = status.history[-1]
        body["epoch"] = {
            "epoch": last.epoch,
            "train_loss": last.train_loss if math.isfinite(last.train_loss) else 0.0,
            "validation": _finite(last.validation),
            "seconds": max(0.0, last.seconds),
        }
    if status.state is JobState.FAILED and status.cancelled is None:
        body["error"] = (status.error or "failed")[:2000]
        if status.failed_party is not None:
            body["failed_party"] = status.failed_party
    # counts only: rows per split and, per feature party, the PSI sizes both sides learn
    metrics = {f"rows.{k}": float(v) for k, v in status.rows.items()}
    # the protection actually in force, where it is weaker than asked (a recorded figure)
    metrics |= {f"protection.share_bits.{p}": float(b) for p, b in status.share_bits.items()}
    privacy = status.label_privacy
    for field in ("epsilon", "delta", "row_epsilon"):
        value = privacy.get(field)
        if isinstance(value, float | int):
            metrics[f"privacy.{field}"] = float(value)
    if status.history:
        metrics |= {f"validation.{k}": v for k, v in status.history[-1].validation.items()}
    if metrics:
        body["metrics"] = _finite(metrics)
    try:
        token = await link.tokens.token(issuer, "jobs:run")
        headers = {"authorization": f"Bearer {token}"}
        resp = await link.http.post(
            f"/v1/jobs/{status.job_id}/progress", json=body, headers=headers
        )
        if resp.status_code == 422 and "failed_party" in body:  # not a party of the contract
            log.warning(
                "registry refused the party at fault of %s: reported without", status.job_id
            )
            body.pop("failed_party")
            resp = await link.http.post(
                f"/v1/jobs/{status.job_id}/progress", json=body, headers=headers
            )
        if resp.status_code == 409 and _cancelled(resp):
            job = await link.job(status.job_id)
            return job.error or "cancelled at the registry"
        if resp.status_code >= 400:
            log.warning("registry refused progress of %s: %s", status.job_id, resp.text[:200])
        if status.state is JobState.FINISHED and artifacts:
            scores = {
                f"{kind}.{party}": v
                for kind, by_party in status.contributions.items()
                for party, v in by_party.items()
            }
            version = {
                "metrics": _finite({**status.test, **scores}),
                "artifact_digests": artifacts,
                "spec_digest": status.spec_digest,
                "segment_digests": status.segment_digests,
            }
            resp = await link.http.post(
                f"/v1/jobs/{status.job_id}/model-versions", json=version, headers=headers
            )
            if resp.status_code >= 400:
                log.warning("registry refused the model version: %s", resp.text[:200])
    except (httpx.HTTPError, SpliceError) as exc:
        log.warning("cannot report job %s to the registry: %s", status.job_id, exc)
    return None


def _cancelled(resp: httpx.Response) -> bool:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, dict) and detail.get("status") == "cancelled"


_JOB_STATUS = {
    JobState.PENDING: "created",
    JobState.ALIGNING: "aligning",
    JobState.TRAINING: "training",
    JobState.FINISHED: "finished",
    JobState.FAILED: "failed",
}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
