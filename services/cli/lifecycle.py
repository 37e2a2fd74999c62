"""The demo after deployment (issue 18): new lots arrive, predictions cover them, outcomes come
back, a process column drifts and the contract's alert goes up.

1. The paste supplier adds its new lots through its own ingestion endpoint (its operator token).
2. The OEM asks for predictions of the boards printed with them (board ids as row ids): the
   label party aligns the new lots privately at serving time; boards naming a lot the supplier
   does not hold are answered ``no_prediction`` and metered.
3. Inspection results arrive: the OEM posts each board's outcome by board id.
4. The label party answers the live metric per model version and every party's drift scores;
   the drifted column crosses the contract's PSI threshold and the status is ``alert``.

The summary's ``lifecycle`` object holds the counts, the alert and each version's live metric.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from services.cli.governed import Governance
from services.cli.retrain_act import retrain
from services.cli.serving import Serving, ServingError
from services.scenario.live import later_batch
from services.scenario.pcb_paste import ScenarioFiles

DRIFT_COLUMN = "reflow_peak_temp_c"
DRIFT_SHIFT = -2.0
"""The reflow oven's new thermocouple reads 2 standard deviations (8 degC) low while the oven
runs as before: the mapping from reading to defect changes (and readings leave the training
range), so the champion's errors are systematic and learnable from recent outcomes
(docs/adr/0013-retraining-and-alerts.md, section 4)."""
NEW_LOTS = 30
NEW_BOARDS = 1500
"""About 1,000 graded boards for the retraining to train on and 500 newer ones to judge on."""
BATCH = 200


def _ok(resp: httpx.Response, what: str) -> Any:
    if resp.status_code != 200:
        raise ServingError(f"{what}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


async def run_lifecycle(
    gov: Governance,
    who: Serving,
    files: ScenarioFiles,
    supplier: tuple[str, str],
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """The lifecycle act; ``supplier``: the paste party's organisation and URL."""
    started = time.perf_counter()
    batch = later_batch(
        out / "data" / "later",
        files,
        lots=NEW_LOTS,
        boards=NEW_BOARDS,
        drift=DRIFT_COLUMN,
        shift=DRIFT_SHIFT,
    )
    key = files.key_paste
    lots = pacsv.read_csv(batch.lots).to_pylist()
    new = {str(r[key]) for r in lots}
    org, url = supplier
    auth = gov.auth(org, url, "jobs:run")
    async with httpx.AsyncClient(base_url=url, auth=auth, timeout=60, verify=gov.verify) as paste:
        version = _ok(await paste.post("/v1/table/rows", json={"rows": lots}), "new lots")
    console.print(
        f"the paste supplier shipped {len(lots)} new lots: table version {version['version']} "
        f"({version['rows']} lots), checked against the contract schema"
    )
    boards = pacsv.read_csv(batch.boards).to_pylist()
    labels = {files.label_binary, files.label_multiclass, files.id_column}
    counts = {"new_lot_predictions": 0, "new_lot_refused": 0, "new_lot_unknown": 0}
    oem = gov.auth(who.owner_org, who.label_url, "predict:call")
    oem.contract_id = gov.contract_id
    base = f"/v1/contracts/{gov.contract_id}"
    predicted: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        base_url=who.label_url, auth=oem, timeout=120, verify=gov.verify
    ) as label:
        for start in range(0, len(boards), BATCH):
            chunk = boards[start : start + BATCH]
            body = {
                "rows": [{k: v for k, v in b.items() if k not in labels} for b in chunk],
                "row_ids": [str(b[files.id_column]) for b in chunk],
            }
            answer = _ok(await label.post(f"{base}/predict", json=body), "prediction")
            for board, p in zip(chunk, answer["predictions"], strict=True):
                held = str(board[key]) in new
                if p["status"] == "predicted":
                    counts["new_lot_predictions"] += 1
                    predicted.append(board)
                elif held:
                    counts["new_lot_refused"] += 1
                else:
                    counts["new_lot_unknown"] += 1
        console.print(
            f"{who.owner_org} asked for {len(boards)} boards printed with the new lots: "
            f"{counts['new_lot_predictions']} predicted, {counts['new_lot_unknown']} name a lot "
            f"the supplier does not hold (no_prediction, metered), "
            f"{counts['new_lot_refused']} refused"
        )
        outcomes = [
            {"row_id": str(b[files.id_column]), "outcome": int(b[files.label_binary])}
            for b in predicted
        ]
        for start in range(0, len(outcomes), 1000):
            body = {"outcomes": outcomes[start : start + 1000]}
            _ok(await label.post(f"{base}/outcomes", json=body), "outcomes")
        quality = _ok(await label.get(f"{base}/quality"), "quality")
    show_quality(console, quality)
    retraining: dict[str, Any] = {}
    raised, alerts, drift = quality["status"] == "alert", quality["alerts"], quality["drift"]
    if raised:
        retraining = await retrain(
            gov,
            who,
            predicted,
            lambda b: {k: v for k, v in b.items() if k not in labels},
            files.id_column,
            url,
            console,
        )
    if "deployed_version" in retraining:
        retraining["outcomes"] = outcomes
        quality = await _served_by(gov, who, oem, retraining)
        show_quality(console, quality)
    return {
        "lifecycle": {
            "new_lots": len(lots),
            **counts,
            "outcomes": len(outcomes),
            "seconds": round(time.perf_counter() - started, 1),
            "drift_column": DRIFT_COLUMN,
            "drift_alert": raised,
            "alerts": alerts,
            "retraining": {k: v for k, v in retraining.items() if k != "held"},
            "versions": [
                {
                    "version": v["model_version"],
                    "live_metric": v.get("value"),
                    "metric": v.get("metric"),
                    "outcomes": v["outcomes"],
                    "deployed": v["deployed"],
                }
                for v in quality["versions"]
            ],
            "drift": {
                d["party"]: {c["column"]: c["psi"] for c in d.get("columns", [])} for d in drift
            },
        }
    }


async def _served_by(
    gov: Governance, who: Serving, oem: Any, retraining: dict[str, Any]
) -> dict[str, Any]:
    """Once the label party serves the new version, the OEM's next boards (the held-out ones)
    are predicted by it (a sale, metered) and graded; the quality report after."""
    base = f"/v1/contracts/{gov.contract_id}"
    held = retraining["held"]
    async with httpx.AsyncClient(
        base_url=who.label_url, auth=oem, timeout=120, verify=gov.verify
    ) as label:
        before = _ok(await label.get(f"{base}/quality"), "quality")
        deadline = time.monotonic() + 60
        while before["deployed_version"] != retraining["deployed_version"]:
            if time.monotonic() > deadline:
                raise ServingError("the label party does not serve the new version")
            await asyncio.sleep(0.5)
            before = _ok(await label.get(f"{base}/quality"), "quality")
        _ok(await label.post(f"{base}/predict", json=held), "prediction")
        truth = {str(o["row_id"]): o["outcome"] for o in retraining.pop("outcomes", [])}
        outcomes = [{"row_id": i, "outcome": truth[i]} for i in held["row_ids"] if i in truth]
        if outcomes:
            _ok(await label.post(f"{base}/outcomes", json={"outcomes": outcomes}), "outcomes")
        quality: dict[str, Any] = _ok(await label.get(f"{base}/quality"), "quality")
    return quality


def show_quality(console: Console, quality: dict[str, Any]) -> None:
    """Live metric per version and the drift table (the three largest PSI per party)."""
    for v in quality["versions"]:
        deployed = " (deployed)" if v["deployed"] else ""
        console.print(
            f"model version {v['model_version']}{deployed}: live {v.get('metric')} "
            f"{v.get('value')} on {v['outcomes']} outcomes"
        )
    table = Table(title="drift, training window vs serving window (scores only)")
    for name in ("party", "column", "PSI", "KS"):
        table.add_column(name)
    for d in quality["drift"]:
        for c in sorted(d.get("columns", []), key=lambda c: -c["psi"])[:3]:
            table.add_row(d["party"], c["column"], f"{c['psi']:.3f}", f"{c['ks']:.3f}")
    console.print(table)
    status = quality["status"]
    console.print(
        f"[bold]quality status: {status}[/]"
        + (": " + "; ".join(quality["alerts"]) if status == "alert" else "")
    )


def lifecycle_act(
    gov: Governance,
    who: Serving,
    files: ScenarioFiles,
    supplier: tuple[str, str],
    out: Path,
    console: Console,
) -> dict[str, Any]:
    """:func:`run_lifecycle` from synchronous code."""
    return asyncio.run(run_lifecycle(gov, who, files, supplier, out, console))


__all__ = ["lifecycle_act", "run_lifecycle", "show_quality"]
