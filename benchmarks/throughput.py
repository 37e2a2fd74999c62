"""Split training (real party processes, loopback HTTP) vs centralized torch, in one run.

For each batch size the same model trains on the same pcb-paste data both ways: split over HTTP
with one feature party, and centralized in this process (the best of 1 and 2 torch threads).
Only time spent in training steps counts (evaluation excluded) on both sides. ``--transport
http`` sends each step as HTTP requests instead of over the job's step stream.

    python benchmarks/throughput.py --out benchmarks/results/throughput.json --epochs 10 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from services.cli.baselines import LocalData, join_locally
from services.cli.cluster import LocalCluster, PartyLaunch
from services.engine.training import fit_local
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
    WireDtype,
)
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import generate

MODEL = ModelSpec(
    bottom={"pcb": SegmentSpec(hidden=[64], out=32), "paste": SegmentSpec(hidden=[64], out=32)},
    top=TopSpec(interactive=16, hidden=[32]),
)


def spec(
    job_id: str, url: str, batch_size: int, epochs: int, wire: WireDtype, defence: bool = True
) -> TrainingSpec:
    return TrainingSpec(
        job_id=job_id,
        task=Task.BINARY,
        label_column="defect",
        party="pcb",
        id_column="board_id",
        exclude_columns=["defect_type"],
        feature_parties=[FeaturePartyRef(name="paste", url=url, key_column="paste_lot_id")],
        model=MODEL,
        epochs=epochs,
        batch_size=batch_size,
        patience=epochs + 1,
        seed=1,
        wire_dtype=wire,
        protection=ProtectionSpec.model_validate(
            {"mode": "plain", "defence": {"enabled": defence}}
        ),
    )


async def split_run(label_url: str, s: TrainingSpec) -> dict[str, float]:
    async with PartyClient(label_url, timeout=600) as client:
        status = await client.train(s, poll=0.2)
    if status.state is not JobState.FINISHED:
        raise RuntimeError(status.error)
    return {
        "samples_per_second": status.samples_per_second,
        "bytes_per_sample": status.train_bytes / max(status.train_samples, 1),
        "auc": status.test["auc"],
    }


def centralized_run(local: LocalData, s: TrainingSpec, threads: int) -> float:
    torch.set_num_threads(threads)
    result = fit_local(
        local.inputs,
        local.data.labels,
        local.data.splits,
        s.model,
        epochs=s.epochs,
        batch_size=s.batch_size,
        patience=s.patience,
        seed=s.seed,
        label_party=s.party,
    )
    return result.samples_per_second


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ratio (the lower middle one for an even count), with every
    repeat's ratio beside it."""
    ordered = sorted(runs, key=lambda r: r["ratio"])
    return {**ordered[(len(ordered) - 1) // 2], "ratios": [r["ratio"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--boards", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--lots",
        type=int,
        default=None,
        help="paste lots (default boards/50; = boards for 1:1 keys)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--party-threads", type=int, default=1)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="split and centralized runs per batch size; the run with the median ratio is kept",
    )
    parser.add_argument(
        "--label-threads",
        type=int,
        default=None,
        help="intra-op torch threads of the label party (default: --party-threads)",
    )
    parser.add_argument(
        "--no-defence", action="store_true", help="plain mode without the label-leakage defence"
    )
    parser.add_argument(
        "--wire-dtype", default="float32", choices=["float32", "float16", "bfloat16"]
    )
    parser.add_argument(
        "--transport",
        default="stream",
        choices=["stream", "http"],
        help="label party to feature party: the step stream (default) or one HTTP call each",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="splice-bench-"))
    lots = args.lots or max(50, args.boards // 50)
    files = generate(work / "data", boards=args.boards, lots=lots, seed=7)
    results: list[dict[str, Any]] = []
    with LocalCluster(work, torch_threads=args.party_threads) as cluster:
        started = cluster.start_all(
            [
                PartyLaunch("paste", files.paste_supplier, files.key_paste),
                PartyLaunch(
                    "pcb",
                    files.pcb_maker,
                    torch_threads=args.label_threads,
                    env={"SPLICE_PARTY_PEER_STREAM": str(args.transport == "stream").lower()},
                ),
            ]
        )
        paste_url, label_url = started["paste"].url, started["pcb"].url
        base = spec("probe", paste_url, 256, 1, args.wire_dtype)
        local = join_locally(
            base, str(files.pcb_maker), {"paste": str(files.paste_supplier)},
            {"paste": files.key_paste},
        )  # fmt: skip
        for bs in args.batch_sizes:
            runs = []
            for repeat in range(args.repeats):  # split and centralized interleaved per repeat
                s = spec(
                    f"bench-{bs}-{repeat}",
                    paste_url,
                    bs,
                    args.epochs,
                    args.wire_dtype,
                    not args.no_defence,
                )
                split = asyncio.run(split_run(label_url, s))
                central = {t: centralized_run(local, s, t) for t in (1, 2)}
                best = max(central.values())
                runs.append(
                    {
                        "batch_size": bs,
                        "split_samples_per_second": round(split["samples_per_second"], 1),
                        "centralized_samples_per_second": round(best, 1),
                        "centralized_by_threads": {str(k): round(v, 1) for k, v in central.items()},
                        "ratio": round(split["samples_per_second"] / best, 4),
                        "bytes_per_sample": round(split["bytes_per_sample"], 1),
                        "split_test_auc": round(split["auc"], 4),
                    }
                )
                print(json.dumps(runs[-1]))
            row = median_run(runs)
            results.append(row)
            if args.repeats > 1:
                print(json.dumps({"batch_size": bs, "median_ratio": row["ratio"],
                                  "ratios": row["ratios"]}))  # fmt: skip
    doc = {
        "benchmark": "throughput",
        "command": "python benchmarks/throughput.py " + " ".join(
            f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(map(str, v))}"
            for k, v in vars(args).items()
        ),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "rows": int(local.data.rows.shape[0]),
        "paste_lots": lots,
        "feature_parties": 1,
        "model": MODEL.model_dump(),
        "wire_dtype": args.wire_dtype,
        "transport": args.transport,
        "results": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
