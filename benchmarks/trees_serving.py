"""Serving latency of a deployed tree model through real party processes (issue 20).

The pcb-paste scenario (``--boards`` boards) in two party processes on loopback (PCB maker =
label party, paste supplier = feature party, open mode: no registry), a ``gbdt`` job trained in
``ckks`` mode (``--trees`` trees of depth ``--depth``, PSI alignment), then predictions through
the label party's predict endpoint: the label party walks the trees, resolving its own splits,
and asks the paste supplier once per request for the left/right bits of all its splits on the
request's rows (by alignment handle). Serving needs no encryption: no threshold or value leaves
its owner, only bits. Reported: single-row latency (p50, p95 over ``--calls`` calls after one
warm-up call) and the wall time of a 1,000-row request (median of ``--batches``).

    python benchmarks/trees_serving.py --out benchmarks/results/trees_serving_parties.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from services.cli.cluster import LocalCluster, PartyLaunch
from services.engine.tabular import read_table
from services.protocol.messages import (
    FeaturePartyRef,
    GbdtModelSpec,
    JobState,
    PredictRequest,
    Task,
    TrainingSpec,
)
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import generate


async def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    files = generate(tmp / "data", boards=args.boards, lots=max(20, args.boards // 50), seed=1)
    with LocalCluster(tmp / "cluster") as cluster:
        parties = cluster.start_all(
            [
                PartyLaunch("pcb", files.pcb_maker),
                PartyLaunch("paste", files.paste_supplier, files.key_paste),
            ]
        )
        spec = TrainingSpec(
            job_id="trees-serving",
            task=Task.BINARY,
            label_column=files.label_binary,
            party="pcb",
            feature_parties=[
                FeaturePartyRef(name="paste", url=parties["paste"].url, key_column=files.key_paste)
            ],
            model=GbdtModelSpec(family="gbdt", trees=args.trees, depth=args.depth, bins=32),
            id_column=files.id_column,
            exclude_columns=[files.label_multiclass],
            protection={"mode": "ckks"},
            alignment="psi",
        )
        async with PartyClient(parties["pcb"].url, timeout=120) as client:
            t0 = time.perf_counter()
            status = await client.start_training(spec)
            while status.state not in (JobState.FINISHED, JobState.FAILED):
                await asyncio.sleep(0.2)
                status = await client.training(spec.job_id)
            train_s = time.perf_counter() - t0
            if status.state is not JobState.FINISHED:
                raise SystemExit(f"training failed: {status.error}")
            lots = set(read_table(files.paste_supplier).column(files.key_paste).to_pylist())
            drop = [files.id_column, files.label_binary, files.label_multiclass]
            boards = read_table(files.pcb_maker).drop_columns(drop).to_pylist()
            rows = [r for r in boards if r[files.key_paste] in lots]
            single: list[float] = []
            for i in range(args.calls + 1):
                t = time.perf_counter()
                answer = await client.predict(spec.job_id, PredictRequest(rows=[rows[i]]))
                single.append((time.perf_counter() - t) * 1000)
                assert answer.predictions[0].probability is not None
            batch: list[float] = []
            for b in range(args.batches):
                chunk = [rows[(b * 1000 + i) % len(rows)] for i in range(1000)]
                t = time.perf_counter()
                answer = await client.predict(spec.job_id, PredictRequest(rows=chunk))
                batch.append(time.perf_counter() - t)
                assert len(answer.predictions) == 1000
    warm = sorted(single[1:])
    return {
        "benchmark": "trees_serving",
        "mode": "ckks",
        "boards": args.boards,
        "trees": args.trees,
        "depth": args.depth,
        "train_seconds": round(train_s, 2),
        "test_auc": round(status.test.get("auc", float("nan")), 4),
        "first_call_ms": round(single[0], 2),
        "single_row_p50_ms": round(statistics.median(warm), 2),
        "single_row_p95_ms": round(warm[int(0.95 * (len(warm) - 1))], 2),
        "calls": args.calls,
        "batch_1000_seconds_median": round(statistics.median(batch), 3),
        "batch_1000_seconds_max": round(max(batch), 3),
        "batches": args.batches,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=4000)
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--batches", type=int, default=5)
    default_out = Path("benchmarks/results/trees_serving_parties.json")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="splice-bench-trees-serving-") as tmp:
        result = asyncio.run(_run(args, Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
