"""Scale (issue 7): a 1M-board epoch with real party processes, and the registry on 1 vs 4 workers.

1. **epoch**: the pcb-paste scenario with ``--boards`` boards written as Parquet (64k-row
   groups), one feature party (paste), plain cut layer, PSI alignment, one epoch of
   ``--batch-size`` batches, each party its own ``splice party serve`` process on loopback. Wall
   time from the start request to the finished status (alignment, the epoch, validation and test
   included), the epoch's training samples/s as the label party reports it, and per party the
   peak resident memory: ``VmHWM`` of the party process (read from ``/proc`` just before it
   stops), the largest RSS of its process tree (with its PSI workers) sampled every 0.5 s, and
   its RSS before the job (imports, torch: what any party holds idle).
2. **registry**: ``benchmarks/load.py``'s registry target (token and contract-check paths on a
   fresh PostgreSQL database) with 1 and with 4 uvicorn workers, ``--seconds`` per target.

    python benchmarks/scale.py --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from services.cli.cluster import LocalCluster, PartyLaunch
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import PARQUET_ROW_GROUP, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import OUT_OF_REACH, MemorySampler, run_registry  # noqa: E402  (benchmarks/load.py)

MODEL = ModelSpec(
    bottom={"pcb": SegmentSpec(hidden=[64], out=32), "paste": SegmentSpec(hidden=[64], out=32)},
    top=TopSpec(interactive=16, hidden=[32]),
)
PEER_TIMEOUT = {"SPLICE_PARTY_PEER_TIMEOUT_SECONDS": "900"}
"""The PSI reply for 1M keys takes the feature party longer than the default 60 s."""


def training_spec(paste_url: str, batch_size: int) -> TrainingSpec:
    return TrainingSpec(
        job_id="scale",
        task=Task.BINARY,
        label_column="defect",
        party="pcb",
        id_column="board_id",
        exclude_columns=["defect_type"],
        feature_parties=[FeaturePartyRef(name="paste", url=paste_url, key_column="paste_lot_id")],
        model=MODEL,
        epochs=1,
        batch_size=batch_size,
        patience=2,
        seed=1,
        protection=ProtectionSpec.model_validate({"mode": "plain"}),
    )


def peak_kib(pid: int) -> int:
    """``VmHWM`` (peak resident set) of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


async def train(label_url: str, spec: TrainingSpec) -> tuple[TrainingStatus, float]:
    """Run the job to its end; also the seconds until alignment was over (0.5 s polls)."""
    t0, aligned = time.perf_counter(), 0.0

    def seen(status: TrainingStatus) -> None:
        nonlocal aligned
        if not aligned and status.state not in (JobState.PENDING, JobState.ALIGNING):
            aligned = time.perf_counter() - t0

    async with PartyClient(label_url, timeout=600) as client:
        status = await client.train(spec, poll=0.5, on_status=seen)
    if status.state is not JobState.FINISHED:
        raise RuntimeError(f"training failed: {status.error}")
    return status, aligned


def run_epoch(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="splice-bench-scale-"))
    t0 = time.perf_counter()
    files = generate(work / "data", boards=args.boards, lots=args.lots, seed=7, fmt="parquet")
    generated = time.perf_counter() - t0
    print(f"generated {args.boards} boards, {args.lots} lots in {generated:.1f} s", flush=True)
    with LocalCluster(work, torch_threads=args.party_threads) as cluster:
        started = cluster.start_all(
            [
                PartyLaunch("paste", files.paste_supplier, files.key_paste),
                PartyLaunch("pcb", files.pcb_maker, env=PEER_TIMEOUT),
            ]
        )
        pids = {name: p.process.pid for name, p in started.items()}
        spec = training_spec(started["paste"].url, args.batch_size)
        with MemorySampler(pids, interval=0.5) as memory:
            t0 = time.perf_counter()
            status, aligned = asyncio.run(train(started["pcb"].url, spec))
            wall = time.perf_counter() - t0
        peaks = {name: round(peak_kib(pid) / 1024, 1) for name, pid in pids.items()}
    summary = memory.summary()
    trees = {name: m["max_mb"] for name, m in summary.items()}
    idle = {name: m["start_mb"] for name, m in summary.items()}
    assert status.rows is not None
    return {
        "rows": args.boards,
        "paste_lots": args.lots,
        "aligned_rows": status.rows["aligned"],
        "train_rows": status.rows["train"],
        "generate_seconds": round(generated, 1),
        "epoch_seconds": round(wall, 1),
        "align_seconds": round(aligned, 1),
        "train_seconds": round(status.train_seconds, 1),
        "samples_per_second": round(status.samples_per_second, 1),
        "peak_rss_mb": peaks,
        "peak_tree_rss_mb": trees,
        "rss_before_job_mb": idle,
        "test_auc": round(status.test["auc"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--boards", type=int, default=1_000_000)
    parser.add_argument(
        "--lots", type=int, default=None, help="paste lots (default: = boards, 1:1 keys)"
    )
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--party-threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0, help="registry: s per target")
    parser.add_argument("--warmup", type=float, default=5.0, help="registry: unrecorded s")
    parser.add_argument("--clients", type=int, default=8, help="registry: concurrent clients")
    parser.add_argument("--skip-registry", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get(
        "SPLICE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="maintenance database URL (splice_bench_<hex> is created, then dropped)")  # fmt: skip
    args = parser.parse_args()
    args.lots = args.lots or args.boards
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    epoch = run_epoch(args)
    print(json.dumps(epoch), flush=True)
    registry: dict[str, Any] = {}
    if not args.skip_registry:
        os.environ.update(OUT_OF_REACH)
        for workers, suffix in ((1, "1_worker"), (4, "4_workers")):
            registry[suffix] = run_registry(workers, args)
    doc: dict[str, Any] = {
        "benchmark": "scale",
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": round(load_before, 2),
            "load_average_at_end": round(os.getloadavg()[0], 2),
        },
        "parquet_row_group": PARQUET_ROW_GROUP,
        "batch_size": args.batch_size,
        "feature_parties": 1,
        "protection": "plain",
        "alignment": "psi",
        **epoch,
    }
    for suffix, res in registry.items():
        doc[f"registry_rps_{suffix}"] = res["token_private_key_jwt"]["rps"]
        doc[f"registry_p95_ms_{suffix}"] = res["token_private_key_jwt"]["p95_ms"]
        doc[f"registry_check_rps_{suffix}"] = res["check"]["rps"]
        doc[f"registry_check_p95_ms_{suffix}"] = res["check"]["p95_ms"]
    if registry:
        doc["registry_headline"] = "POST /oauth/token with private_key_jwt (fresh assertion each)"
        doc["registry"] = registry
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: v for k, v in doc.items() if k != "registry"}, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
