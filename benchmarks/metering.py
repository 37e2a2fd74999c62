"""Metering: usage ingestion into PostgreSQL, the revenue export over 1M events, prediction latency.

A real registry process (``splice registry serve``, one uvicorn worker) runs on a fresh
PostgreSQL database on loopback. Over HTTP the example's three organisations onboard, the
pcb-paste contract becomes active, the label party opens a job, reports it finished and records
its model version. Then:

* **ingestion**: ``--clients`` concurrent label-party clients post ``--events`` usage events in
  batches of ``--batch`` to ``POST /v1/usage``; events/s over the whole run, per-batch latency,
  and a replay of every batch afterwards (all must come back as duplicates: counted once);
* **export**: 1M usage events (``--export-events``) are loaded straight into ``usage_events``
  with COPY (spread over the current month), then the OEM's ``GET /v1/reports/revenue?format=csv``
  for the month is timed end to end, and its amounts are checked to sum to the gross;
* **prediction latency** (``--predict``, default on): a small governed demo (real registry and
  party processes, SQLite) trains the pcb-paste model for two epochs in plain and in CKKS mode,
  deploys it, and times ``--predictions`` single-row predictions from the OEM.

    python benchmarks/metering.py --out benchmarks/results/metering.json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import (  # noqa: E402
    CHEAP_ARGON2,
    OWNER,
    PCB,
    Org,
    RegistryProcess,
    bearer,
    contract_and_job,
    database,
    free_port,
    ok,
    onboard,
    pct,
)

from services.protocol.oauth_client import TokenSource  # noqa: E402

SCOPES = "contracts:sign contracts:write jobs:run party:call predict:call reports:read usage:write"


async def finished_model(http: httpx.AsyncClient, issuer: str, org: Org, job: str) -> int:
    """The label party runs its job to the end and records a model version: its number."""
    source = TokenSource(org.clients["client_secret_basic"], http)
    headers = bearer(await source.token(issuer, "jobs:run"))
    for status in ("aligning", "training", "finished"):
        ok(await http.post(f"/v1/jobs/{job}/progress", json={"status": status}, headers=headers))
    # what the model is: the job's spec digest, a segment digest per party with a segment
    found = ok(await http.get(f"/v1/jobs/{job}", headers=headers))
    contract = ok(await http.get(f"/v1/contracts/{found['contract_id']}", headers=headers))
    document = contract["versions"][found["contract_version"] - 1]["document"]
    parties = {*document["model"]["bottom"], found["label_party"]}
    body = {
        "metrics": {"test.auc": 0.8},
        "artifact_digests": {"pcb/best": "0" * 64},
        "spec_digest": found["spec_digest"],
        "segment_digests": dict.fromkeys(sorted(parties), "0" * 64),
    }
    created = ok(await http.post(f"/v1/jobs/{job}/model-versions", json=body, headers=headers), 201)
    return int(created["version"])


LABEL_URL = "https://pcb.bench.example"
"""The label party's service as the buyer's tokens name it (a resource of the PCB maker's
client): every event forwards the buyer's token, which the registry verifies (issue 14)."""


async def buyer_token(http: httpx.AsyncClient, issuer: str, orgs: dict[str, Org], cid: str) -> str:
    """The PCB maker's client claims ``LABEL_URL``; the OEM's predict:call token for it."""
    pcb = orgs[PCB].clients["client_secret_basic"]
    own = await TokenSource(pcb, http).token(issuer, "party:call")
    body = {"resource": LABEL_URL}
    ok(
        await http.post(
            f"/v1/oauth/clients/{pcb.client_id}/resources", json=body, headers=bearer(own)
        )
    )
    source = TokenSource(orgs[OWNER].clients["client_secret_basic"], http)
    return await source.token(LABEL_URL, "predict:call", contract_id=cid)


def events(
    n: int, cid: str, model_version: int, caller: str, at: datetime, token: str
) -> list[dict[str, Any]]:
    stamp = at.isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "contract_id": cid,
            "contract_version": 1,
            "model_version": model_version,
            "caller_org": caller,
            "count": 1 + i % 5,
            "timestamp": stamp,
            "caller_token": token,
        }
        for i in range(n)
    ]


async def ingest(
    registry: str, org: Org, payload: list[dict[str, Any]], clients: int, batch: int
) -> dict[str, Any]:
    """Post ``payload`` in batches from ``clients`` concurrent clients, then replay it all."""
    batches = [payload[i : i + batch] for i in range(0, len(payload), batch)]
    latencies: list[float] = []
    outcome = {"accepted": 0, "duplicates": 0, "refused": 0}

    async def worker(queue: asyncio.Queue[list[dict[str, Any]]]) -> None:
        async with httpx.AsyncClient(base_url=registry, timeout=120) as http:
            source = TokenSource(org.clients["client_secret_basic"], http)
            token = await source.token(registry, "usage:write")
            while not queue.empty():
                chunk = queue.get_nowait()
                t0 = time.perf_counter()
                r = await http.post("/v1/usage", json={"events": chunk}, headers=bearer(token))
                latencies.append(time.perf_counter() - t0)
                doc = ok(r)
                for key in outcome:
                    outcome[key] += len(doc[key])

    async def run() -> float:
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(queue) for _ in range(clients)))
        return time.perf_counter() - t0

    first = await run()
    fresh = dict(outcome)
    latencies_first = list(latencies)
    outcome.update(accepted=0, duplicates=0, refused=0)
    replay = await run()
    ms = [s * 1e3 for s in latencies_first]
    return {
        "events": len(payload),
        "batch": batch,
        "clients": clients,
        "seconds": round(first, 3),
        "events_per_second": round(len(payload) / first, 1),
        "batch_p50_ms": round(pct(ms, 50), 2),
        "batch_p95_ms": round(pct(ms, 95), 2),
        "first_pass": fresh,
        "replay_seconds": round(replay, 3),
        "replay": dict(outcome),
    }


def load_events(url: str, cid: str, model_version: int, caller: str, n: int) -> int:
    """``n`` events spread over the current month, straight into the table (COPY); their count."""
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max((now - start).total_seconds() - 60, 1.0)
    total = 0
    dsn = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        copy_sql = (
            "COPY usage_events (event_id, contract_id, contract_version, model_version, "
            "caller_org_id, count, occurred_at, received_at, reported_by) FROM STDIN"
        )
        with cur.copy(copy_sql) as copy:
            for i in range(n):
                at = start + timedelta(seconds=span * i / n)
                count = 1 + i % 3
                total += count
                copy.write_row(
                    (str(uuid.uuid4()), cid, 1, model_version, caller, count, at, now, "bench")
                )
        conn.commit()
    return total


async def export(registry: str, org: Org) -> tuple[float, bytes]:
    async with httpx.AsyncClient(base_url=registry, timeout=600) as http:
        source = TokenSource(org.clients["client_secret_basic"], http)
        token = await source.token(registry, "reports:read")
        period = datetime.now(UTC).strftime("%Y-%m")
        t0 = time.perf_counter()
        r = await http.get(
            "/v1/reports/revenue",
            params={"period": period, "format": "csv"},
            headers=bearer(token),
        )
        took = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"export: {r.status_code} {r.text[:500]}")
    return took, r.content


def reconcile(report: bytes) -> dict[str, Any]:
    """Predictions and money in the report; amounts must sum exactly to each group's gross."""
    every = list(csv.DictReader(io.StringIO(report.decode())))
    rows = [r for r in every if r["row_type"] == "line"]
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in rows:
        key = (r["contract_id"], r["contract_version"], r["model_version"], r["payer_org_id"])
        groups.setdefault(key, []).append(r)
    for key, members in groups.items():
        gross = Decimal(members[0]["gross_amount"])
        if sum((Decimal(m["amount"]) for m in members), Decimal(0)) != gross:
            raise RuntimeError(f"amounts of {key} do not sum to the gross {gross}")
    first = next(iter(groups.values()))
    return {
        "rows": len(rows),
        "predictions": sum(int(g[0]["predictions"]) for g in groups.values()),
        "gross": str(sum((Decimal(g[0]["gross_amount"]) for g in groups.values()), Decimal(0))),
        "currency": first[0]["currency"],
        "amounts": {r["party_name"]: r["amount"] for r in first},
    }


async def prepare(registry: str, admin: str, work: Path) -> tuple[dict[str, Org], str, int, str]:
    async with httpx.AsyncClient(base_url=registry, timeout=60) as http:
        orgs = await onboard(http, registry, admin, work, SCOPES)
        cid, job = await contract_and_job(http, registry, orgs)
        version = await finished_model(http, registry, orgs[PCB], job)
        token = await buyer_token(http, registry, orgs, cid)
    return orgs, cid, version, token


def run_registry(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="splice-bench-metering-") as tmp:
        work = Path(tmp)
        with database("postgresql", work, args.postgres) as (url, admin):
            reg = RegistryProcess(
                url, free_port(), work / "registry.log", CHEAP_ARGON2,
                Fernet.generate_key().decode(),
            )  # fmt: skip
            try:
                reg.start()
                orgs, cid, version, token = asyncio.run(prepare(reg.url, admin, work))
                caller = orgs[OWNER].org_id
                now = datetime.now(UTC)
                payload = events(args.events, cid, version, caller, now, token)
                print(f"  ingesting {len(payload)} events ...", flush=True)
                ingested = asyncio.run(
                    ingest(reg.url, orgs[PCB], payload, args.clients, args.batch)
                )
                print(f"  {ingested['events_per_second']} events/s", flush=True)
                if ingested["first_pass"]["accepted"] != len(payload):
                    raise RuntimeError(f"not every event was accepted: {ingested['first_pass']}")
                print(f"  loading {args.export_events} events with COPY ...", flush=True)
                loaded = load_events(url, cid, version, caller, args.export_events)
                took, report = asyncio.run(export(reg.url, orgs[OWNER]))
                checked = reconcile(report)
                expected = loaded + sum(e["count"] for e in payload)
                if checked["predictions"] != expected:
                    raise RuntimeError(f"report counts {checked['predictions']}, not {expected}")
                print(f"  export of {args.export_events + len(payload)} events: {took:.2f} s")
            finally:
                reg.stop()
    return {
        "ingest": ingested,
        "export": {
            "events": args.export_events + len(payload),
            "seconds": round(took, 3),
            "bytes": len(report),
            **checked,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--export-events", type=int, default=1_000_000)
    parser.add_argument("--predict", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--predictions", type=int, default=200)
    args = parser.parse_args()
    results = run_registry(args)
    if args.predict:
        from predict_latency import measure

        results["predict"] = {mode: measure(mode, args.predictions) for mode in ("plain", "ckks")}
    ingested, exported = results["ingest"], results["export"]
    doc = {
        "benchmark": "metering",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "ingest_events_per_second": ingested["events_per_second"],
        "export_seconds_1m": exported["seconds"],
        **(
            {
                "predict_p50_ms": results["predict"]["plain"]["p50_ms"],
                "predict_p95_ms": results["predict"]["plain"]["p95_ms"],
                "predict_ckks_p50_ms": results["predict"]["ckks"]["p50_ms"],
                "predict_ckks_p95_ms": results["predict"]["ckks"]["p95_ms"],
            }
            if "predict" in results
            else {}
        ),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
