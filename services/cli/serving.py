"""The demo's last act: deploy the trained model, serve metered predictions, export revenue.

Runs against the real registry and party processes of a governed demo:

1. the PCB maker and the OEM approve the model version the job produced (the contract names
   both as approvers), so it becomes the contract's deployed version;
2. the OEM asks the PCB maker's label party for predictions on boards in batches; each answer is
   one usage event in the label party's outbox, shipped to the registry in the background;
3. once every event has arrived, the OEM exports the period's revenue report as CSV and reads the
   registry's reconciliation of the label party's events with the paste supplier's own records.
"""

from __future__ import annotations

import asyncio
import csv
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from services.cli.governed import Governance
from services.engine.tabular import read_table

_RECORD = ("contract_version", "task", "columns", "spec_digest", "segment_digests", "model_digest")
"""What a model version says it is (the approval view)."""


class ServingError(RuntimeError):
    """A step of the serving demo failed (the message says which)."""


@dataclass(frozen=True, slots=True)
class Serving:
    """Who does what in the serving act."""

    label_party: str  # contract party name of the label party (an approver)
    label_org: str
    owner: str  # contract owner name (an approver)
    owner_org: str
    label_url: str


def _expect(resp: httpx.Response, what: str, *ok: int) -> Any:
    if resp.status_code not in (ok or (200,)):
        raise ServingError(f"{what}: {resp.status_code} {resp.text[:300]}")
    json_body = resp.headers.get("content-type", "").startswith("application/json")
    return resp.json() if json_body else None


async def _model_version(registry: httpx.AsyncClient, gov: Governance) -> int:
    """The model version the demo's job produced (the label party records it as it finishes)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = await registry.get(f"/v1/contracts/{gov.contract_id}/model-versions")
        for mv in _expect(r, "list model versions"):
            if mv.get("job_id") == gov.job_id:
                return int(mv["version"])
        await asyncio.sleep(0.25)
    raise ServingError("the label party did not record a model version within 60 s")


async def deploy(gov: Governance, who: Serving) -> dict[str, Any]:
    """Both approvers sign off the job's model version; answers it (deployed), with what it is:
    task, columns, spec, segment and model digests (what the approvers saw)."""
    approvals = ((who.label_party, who.label_org), (who.owner, who.owner_org))
    version = 0
    for approver, org in approvals:
        auth = gov.auth(org, gov.url, "contracts:sign")
        async with httpx.AsyncClient(
            base_url=gov.url, auth=auth, timeout=30, verify=gov.verify
        ) as registry:
            if not version:
                version = await _model_version(registry, gov)
            r = await registry.post(
                f"/v1/contracts/{gov.contract_id}/model-versions/{version}/approvals",
                json={"approver": approver},
            )
            state = _expect(r, f"approval by {approver}")
    if state.get("status") != "deployed":
        raise ServingError(f"model version {version} is {state.get('status')}, not deployed")
    record: dict[str, Any] = state
    return record


def request_rows(table_path: Path, drop: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` boards of the PCB maker's table as prediction rows (``drop`` columns removed)."""
    import numpy as np

    table = read_table(table_path)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(table.num_rows, size=min(count, table.num_rows), replace=False))
    keep = [c for c in table.column_names if c not in set(drop)]
    sample: pa.Table = table.select(keep).take(pa.array(picked))
    rows: list[dict[str, Any]] = sample.to_pylist()
    return rows


@dataclass(slots=True)
class Served:
    """What a series of prediction calls got."""

    predictions: int = 0
    skipped: int = 0  # rows naming a key the job's alignment did not share (still metered)
    latencies_ms: list[float] = field(default_factory=list)
    model_digests: set[str] = field(default_factory=set)  # what the answers said served them


async def serve(gov: Governance, who: Serving, rows: list[dict[str, Any]], batch: int) -> Served:
    """The OEM's predictions for ``rows`` in batches of ``batch``.

    A row whose feature-party key the job never aligned (a paste lot the supplier does not
    hold) comes back as ``no_prediction``; it is metered like the others.
    """
    auth = gov.auth(who.owner_org, who.label_url, "predict:call")
    auth.contract_id = gov.contract_id
    served = Served()
    path = f"/v1/contracts/{gov.contract_id}/predict"
    async with httpx.AsyncClient(
        base_url=who.label_url, auth=auth, timeout=120, verify=gov.verify
    ) as label:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            t0 = time.perf_counter()
            r = await label.post(path, json={"rows": chunk})
            served.latencies_ms.append((time.perf_counter() - t0) * 1000)
            answer = _expect(r, "prediction")
            served.predictions += int(answer["predicted"])
            served.skipped += int(answer["rows"]) - int(answer["predicted"])
            served.model_digests.add(answer["model_digest"])
    return served


async def shipped(gov: Governance, who: Serving, timeout: float = 60) -> None:
    """Wait until the label party's outbox is empty (every usage event reached the registry)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=who.label_url, timeout=10, verify=gov.verify) as label:
        while time.monotonic() < deadline:
            health = _expect(await label.get("/v1/health"), "label party health")
            if int(health.get("outbox", {}).get("pending", 1)) == 0:
                return
            await asyncio.sleep(0.25)
    raise ServingError(f"usage events still in the label party's outbox after {timeout:.0f} s")


async def export_revenue(gov: Governance, who: Serving, out: Path) -> Path:
    """The OEM's revenue report for the current month (UTC) as CSV at ``out``."""
    period = datetime.now(UTC).strftime("%Y-%m")
    auth = gov.auth(who.owner_org, gov.url, "reports:read")
    async with httpx.AsyncClient(
        base_url=gov.url, auth=auth, timeout=60, verify=gov.verify
    ) as registry:
        r = await registry.get("/v1/reports/revenue", params={"period": period, "format": "csv"})
    if r.status_code != 200:
        raise ServingError(f"revenue report: {r.status_code} {r.text[:300]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(r.content)
    return out


async def reconciled(gov: Governance, who: Serving, timeout: float = 30) -> dict[str, Any]:
    """The registry's reconciliation of this month's usage events with the feature parties'
    own records, once it is consistent (each side ships on its own), or as it stands after
    ``timeout`` seconds."""
    period = datetime.now(UTC).strftime("%Y-%m")
    auth = gov.auth(who.owner_org, gov.url, "reports:read")
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(
        base_url=gov.url, auth=auth, timeout=30, verify=gov.verify
    ) as registry:
        while True:
            r = await registry.get(
                "/v1/usage/reconciliation",
                params={"period": period, "contract_id": gov.contract_id},
            )
            answer = _expect(r, "reconciliation")
            found = answer[0] if answer else {}
            if found.get("consistent") or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.25)


def _percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile by the nearest-rank method (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def revenue_summary(report: Path) -> dict[str, Any]:
    """Currency, gross and each payee's amount, read back from the CSV (exact decimals)."""
    with report.open(newline="") as fh:
        every = list(csv.DictReader(fh))
    rows = [r for r in every if r.get("row_type", "line") == "line"]
    totals = [r for r in every if r.get("row_type") == "total"]
    if not rows:
        raise ServingError(f"the revenue report {report} has no rows")
    currencies = {r["currency"] for r in rows}
    if len(currencies) != 1:
        raise ServingError(f"one currency expected in the demo's report, got {currencies}")
    amounts: dict[str, Decimal] = {}
    gross: dict[tuple[str, str, str, str], Decimal] = {}
    for r in rows:
        amounts[r["party_name"]] = amounts.get(r["party_name"], Decimal(0)) + Decimal(r["amount"])
        group = (r["contract_id"], r["contract_version"], r["model_version"], r["payer_org_id"])
        gross[group] = Decimal(r["gross_amount"])
    total = sum(gross.values(), Decimal(0))
    if sum(amounts.values(), Decimal(0)) != total:
        raise ServingError("the payees' amounts do not sum to the gross")
    if [Decimal(t["amount"]) for t in totals] != [total]:
        raise ServingError("the report's totals row does not equal the sum of its lines")
    return {
        "currency": currencies.pop(),
        "gross": str(total),
        "parties": {name: {"amount": str(v)} for name, v in sorted(amounts.items())},
    }


def show_revenue(console: Console, revenue: dict[str, Any], rows: int) -> None:
    """A small table of who earns what."""
    table = Table(title=f"revenue for {rows} metered rows ({revenue['currency']})")
    table.add_column("party")
    table.add_column("amount", justify="right")
    for name, entry in revenue["parties"].items():
        table.add_row(name, entry["amount"])
    table.add_row("[bold]gross[/]", f"[bold]{revenue['gross']}[/]")
    console.print(table)


async def act(
    gov: Governance,
    who: Serving,
    rows: list[dict[str, Any]],
    out: Path,
    console: Console,
    batch: int = 50,
) -> dict[str, Any]:
    """Deploy, serve ``rows`` (one single prediction, then batches), wait for the usage events
    to reach the registry, export the month's revenue report; the summary's serving fields."""
    from services.cli.model_cmd import approval_view
    from services.protocol.registry_contracts import ModelVersionOut

    record = ModelVersionOut.model_validate(await deploy(gov, who))
    version = record.version
    console.print(approval_view(record))
    console.print(
        f"model version {version} deployed: approved by {who.label_party} and {who.owner}"
    )
    single = await serve(gov, who, rows[:1], 1)
    batches = await serve(gov, who, rows[1:], batch)
    predictions = single.predictions + batches.predictions
    calls = len(single.latencies_ms) + len(batches.latencies_ms)
    skipped = single.skipped + batches.skipped
    first = single.latencies_ms[0] if single.latencies_ms else float("nan")
    console.print(
        f"{who.owner_org} asked for {predictions} predictions in {calls} metered calls "
        f"(a single prediction took {first:.0f} ms); {skipped} boards got no prediction (their "
        "paste lot was not in the job's private alignment), metered like the others"
    )
    await shipped(gov, who)
    report = await export_revenue(gov, who, out / "revenue.csv")
    revenue = revenue_summary(report)
    console.print(f"every usage event reached the registry; revenue report: {report}")
    check = await reconciled(gov, who)
    confirmed = ", ".join(f"{p['party']} {p['matched']}" for p in check.get("parties", []))
    console.print(
        f"reconciliation: {check.get('events', 0)} usage events, confirmed by the feature "
        f"parties' own records ({confirmed}): "
        + ("consistent" if check.get("consistent") else "; ".join(check.get("differences", [])))
    )
    return {
        "deployed_model_version": version,
        "model_version_record": record.model_dump(mode="json", include=set(_RECORD)),
        "prediction_model_digests": sorted(single.model_digests | batches.model_digests),
        "predictions": predictions,
        "prediction_calls": calls,
        "rows_not_predicted": skipped,
        "single_prediction_ms": round(first, 1),
        "prediction_batch": batch,
        "prediction_p50_ms": round(_percentile(batches.latencies_ms, 0.50), 2),
        "prediction_p95_ms": round(_percentile(batches.latencies_ms, 0.95), 2),
        "revenue_report": str(report),
        "revenue": revenue,
        "reconciliation": {
            "consistent": bool(check.get("consistent")),
            "events": check.get("events", 0),
            "parties": {p["party"]: p["matched"] for p in check.get("parties", [])},
        },
    }
