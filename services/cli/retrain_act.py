"""The demo's retraining under the contract (issue 18), after the drift alert.

1. The PCB maker's inspected boards join its table: the older two thirds (the recent window
   the retraining trains on); the newest third stays out, to judge the models on.
2. The PCB maker asks for a retraining under the contract's policy (``training.retraining``):
   the job warm-starts from the deployed model (the champion) on every party and trains the
   policy's few epochs on the recent window, with the same protection.
3. The PCB maker scores the finished job (the challenger) beside the champion on the newest
   boards' outcomes, in shadow mode: nothing is metered or billed.
4. If the challenger is better, the contract's approvers (the PCB maker and the OEM) approve it
   and it is deployed; the OEM's next boards are predicted by it and graded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import httpx
from rich.console import Console

from services.cli.governed import Governance
from services.cli.serving import Serving, ServingError, deploy

WAIT_SECONDS = 300


def _ok(resp: httpx.Response, what: str, *codes: int) -> Any:
    if resp.status_code not in (codes or (200,)):
        raise ServingError(f"{what}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


async def _finished(pcb: httpx.AsyncClient, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        status: dict[str, Any] = _ok(await pcb.get(f"/v1/trainings/{job}"), "retraining status")
        if status["state"] in ("finished", "failed"):
            if status["state"] == "failed":
                raise ServingError(f"the retraining job failed: {status.get('error')}")
            return status
        await asyncio.sleep(0.5)
    raise ServingError(f"the retraining job did not finish in {WAIT_SECONDS} s")


async def retrain(
    gov: Governance,
    who: Serving,
    boards: list[dict[str, Any]],
    request_row: Any,
    id_column: str,
    paste_url: str,
    console: Console,
) -> dict[str, Any]:
    """Retrain, compare, deploy if better; ``boards``: the inspected boards (label columns
    included), oldest first; ``request_row``: a board as a prediction row."""
    cut = (2 * len(boards)) // 3
    window, held = boards[:cut], boards[cut:]
    operator = gov.auth(who.label_org, who.label_url, "jobs:run")
    base = f"/v1/contracts/{gov.contract_id}"
    async with httpx.AsyncClient(
        base_url=who.label_url, auth=operator, timeout=120, verify=gov.verify
    ) as pcb:
        added = _ok(await pcb.post("/v1/table/rows", json={"rows": window}), "inspected boards")
        console.print(
            f"{who.label_party} adds {len(window)} inspected boards to its table "
            f"(version {added['version']}); {len(held)} newer ones stay out to judge the models"
        )
        started = _ok(
            await pcb.post(f"{base}/retrainings", json={"feature_urls": {"paste": paste_url}}),
            "retraining",
            202,
        )
        job = started["job_id"]
        status = await _finished(pcb, job)
    console.print(
        f"retraining job {job} under the contract's policy: warm-started from the deployed "
        f"model, {len(status['history'])} epochs on {status['rows'].get('aligned', 0)} recent "
        f"boards in {status.get('train_seconds', 0):.1f} s"
    )
    label = gov.auth(who.label_org, who.label_url, "predict:call")
    label.contract_id = gov.contract_id
    body = {
        "rows": [request_row(b) for b in held],
        "row_ids": [str(b[id_column]) for b in held],
    }
    async with httpx.AsyncClient(
        base_url=who.label_url, auth=label, timeout=120, verify=gov.verify
    ) as pcb:
        # the registry records the challenger's model version as the job finishes
        deadline = time.monotonic() + 60
        while True:
            r = await pcb.post(f"{base}/challengers/{job}/shadow", json=body)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        shadow = _ok(r, "shadow scoring")
    champion, challenger = shadow["champion"], shadow["challenger"]
    console.print(
        f"champion (version {champion['model_version']}) vs challenger on the {shadow['compared']}"
        f" newest graded boards, shadow-scored (not metered): {champion.get('metric')} "
        f"{champion.get('value')} vs {challenger.get('value')}"
    )
    result: dict[str, Any] = {
        "retraining_job": job,
        "retraining_epochs": len(status["history"]),
        "shadow": {
            "compared": shadow["compared"],
            "champion": champion.get("value"),
            "challenger": challenger.get("value"),
            "challenger_better": shadow["challenger_better"],
        },
    }
    if not shadow["challenger_better"]:
        console.print("the challenger is not better: it is not deployed")
        return result
    record = await deploy(dataclasses.replace(gov, process=None, job_id=job), who)
    version = int(record["version"])
    console.print(
        f"model version {version} deployed: approved by {who.label_party} and {who.owner}"
    )
    result["deployed_version"] = version
    result["held"] = body
    return result


__all__ = ["retrain"]
