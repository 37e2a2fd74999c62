"""Joint model quality against pooling the data (issue 17): for each dataset the default joint
model (``splice pilot`` defaults, no tuning, default protection), the label party alone, the
centralized NN, an independent pooled MLP (scikit-learn, early stopping) and pooled LightGBM,
all on exactly the joint model's test rows.

Datasets: the pcb-paste scenario (the demo's size, ckks and plain, scenario seeds 7 and 8;
100,000 boards in plain mode, one seed) and FATE's breast, default_credit, motor
(two hosts), vehicle and student from ``--data`` (default ``$FATE_DATA``, else
``../shared/data/fate``). A missing dataset is an error, never a skip. Datasets under 5,000 rows
report the mean over ``--seeds`` training seeds (default 5) with the spread (``*_std``). Each
row says which of issue 17's bars it meets (``bars``); the document gives the wall time and the
CPU time (``cpu_seconds``: this process and its finished children, the party processes and
their HE workers), since the wall time depends on the machine's load. ``--jobs`` runs (default
2) go at once, longest first, each in its own process with its own party processes: one run
leaves the CPU idle during its round trips, so two fill the two cores better than one.

    python benchmarks/quality.py --out benchmarks/results/quality.json
    python benchmarks/quality.py --out F --only breast student --seeds 2 --jobs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console

from services.cli.pilot import PilotConfig, parse_party, run_pilot, table_rows
from services.protocol.messages import ProtectionSpec, Task

FIGURES = ("joint", "label_only", "centralized", "pooled_mlp", "pooled_gbdt")
SMALL = 5000
"""Datasets with fewer rows report the mean over several seeds."""

FATE: dict[str, dict[str, Any]] = {
    "breast": {"label": "breast_hetero_guest.csv:y", "features": ["breast_hetero_host.csv"],
               "key": "id", "task": Task.BINARY},
    "default_credit": {"label": "default_credit_hetero_guest.csv:y",
                       "features": ["default_credit_hetero_host.csv"], "key": "id",
                       "task": Task.BINARY},
    "motor": {"label": "motor_hetero_guest.csv:motor_speed",
              "features": ["motor_hetero_host_1.csv", "motor_hetero_host_2.csv"], "key": "idx",
              "task": Task.REGRESSION},
    "vehicle": {"label": "vehicle_scale_hetero_guest.csv:y",
                "features": ["vehicle_scale_hetero_host.csv"], "key": "id",
                "task": Task.MULTICLASS},
    "student": {"label": "student_hetero_guest.csv:y", "features": ["student_hetero_host.csv"],
                "key": "id", "task": Task.REGRESSION},
}  # fmt: skip
SCENARIO = ("pcb-paste-ckks", "pcb-paste-plain")
LARGE = "pcb-paste-100k-plain"
"""100,000 boards in plain mode, scenario seed 7, one run."""
ALL = (*FATE, *SCENARIO, LARGE)


def default_data() -> Path:
    """``$FATE_DATA``, else ``../shared/data/fate`` beside the repository."""
    env = os.environ.get("FATE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/fate"


def check_files(data: Path, names: list[str]) -> None:
    """Every file the chosen FATE datasets need exists, or exit with the missing ones."""
    missing = [
        str(data / f.split(":")[0])
        for n in names
        if n in FATE
        for f in (FATE[n]["label"], *FATE[n]["features"])
        if not (data / f.split(":")[0]).is_file()
    ]
    if missing:
        sys.exit(f"missing dataset files (set --data or FATE_DATA): {', '.join(missing)}")


def fate_run(data: Path, name: str, seed: int, *, work: Path) -> dict[str, Any]:
    """One pilot with defaults on a FATE dataset; its summary."""
    case = FATE[name]
    hosts = case["features"]
    names = [f"host{i}" if len(hosts) > 1 else "host" for i in range(len(hosts))]
    cfg = PilotConfig(
        label=parse_party(f"guest={data / case['label']}", label=True),
        features=[
            parse_party(f"{n}={data / f}", label=False) for n, f in zip(names, hosts, strict=True)
        ],
        key=case["key"],
        task=case["task"],
        out=work / f"{name}-{seed}",
        seed=seed,
    )
    return run_pilot(cfg, Console(quiet=True))


def scenario_run(
    mode: str, scenario_seed: int, seed: int, boards: int, work: Path
) -> dict[str, Any]:
    """The demo (no registry, no serving) on one scenario seed; its summary."""
    from services.cli.demo import DEMO_TRAINING, run_demo

    return run_demo(
        work / f"pcb-{mode}-{boards}-{scenario_seed}-{seed}",
        boards=boards,
        epochs=DEMO_TRAINING.epochs,
        console=Console(quiet=True),
        governed=False,
        mode="ckks" if mode == "ckks" else "plain",
        serve_rows=0,
        seed=7 + seed,
        scenario_seed=scenario_seed,
    )


MLP_BAR = {"r2": 0.02}
"""How far below the pooled MLP the joint model may be (issue 17): 0.01, 0.02 for R2."""
GBDT_BAR = 0.03
"""How far below pooled LightGBM the joint model may be."""


def bars(row: dict[str, Any]) -> dict[str, bool]:
    """Issue 17's three bars on one result row (means over the runs): within the MLP bar of the
    pooled MLP, within 0.03 of pooled LightGBM, above the label party alone."""
    joint = row["joint"]
    return {
        "pooled_mlp": joint >= row["pooled_mlp"] - MLP_BAR.get(row["metric"], 0.01),
        "pooled_gbdt": joint >= row["pooled_gbdt"] - GBDT_BAR,
        "label_only": joint > row["label_only"],
    }


def aggregate(
    dataset: str, summaries: list[dict[str, Any]], seconds: list[float], cpu: list[float]
) -> dict[str, Any]:
    """One result row: the mean of each figure (and its spread over several runs); ``seconds``
    and ``cpu`` are each run's wall and CPU time (runs of a row may overlap other rows' runs:
    their CPU time is what a quiet machine's wall time follows)."""
    row: dict[str, Any] = {"dataset": dataset, "metric": summaries[0]["metric"]}
    for f in FIGURES:
        values = [float(s[f]) for s in summaries]
        row[f] = round(statistics.fmean(values), 5)
        if len(values) > 1:
            row[f"{f}_std"] = round(statistics.stdev(values), 5)
    row |= {
        "runs": len(summaries),
        "rows": summaries[0]["rows"],
        "mode": summaries[0]["mode"],
        "epochs": [s["epochs"] for s in summaries],
        "gap_to_pooled_mlp": round(row["joint"] - row["pooled_mlp"], 5),
        "gap_to_pooled_gbdt": round(row["joint"] - row["pooled_gbdt"], 5),
        "seconds": round(sum(seconds), 1),
        "run_seconds": [round(x, 1) for x in seconds],
        "cpu_seconds": round(sum(cpu), 1),
    }
    row["bars"] = bars(row)
    return row


@dataclass(frozen=True, slots=True)
class Job:
    """One result row: a label, the runs it averages (callables of a training seed) and the
    estimated seconds of one run (the queue takes the longest runs first, so that the last
    minutes are not one long run beside an idle worker)."""

    label: str
    run: Callable[[int], dict[str, Any]]
    seeds: int
    cost: float


COST = {
    "default_credit": 300.0, "pcb-paste-ckks": 200.0, "motor": 90.0, LARGE: 50.0,
    "pcb-paste-plain": 25.0,
}  # fmt: skip
"""Rough seconds of one run on a quiet machine (the queue's order, nothing else); 60 if unlisted."""


def plan(args: argparse.Namespace, names: list[str], work: Path) -> list[Job]:
    """Every row of the run, longest run first. Under 5,000 rows a dataset runs ``--seeds`` times;
    the FATE tables' sizes are known before anything starts (their label table's rows)."""
    jobs: list[Job] = []
    for name in names:
        if name in FATE:
            rows = table_rows(args.data / FATE[name]["label"].split(":")[0])
            seeds = args.seeds if rows < SMALL else 1
            run = partial(fate_run, args.data, name, work=work)
            jobs.append(Job(name, run, seeds, COST.get(name, 60.0)))
        elif name == LARGE:
            run = partial(scenario_run, "plain", 7, boards=100_000, work=work)
            jobs.append(Job(name, run, 1, COST[name]))
        else:
            mode = name.rsplit("-", 1)[1]
            seeds = args.seeds if args.boards < SMALL else 1
            for sc in (7, 8):
                run = partial(scenario_run, mode, sc, boards=args.boards, work=work)
                jobs.append(Job(f"{name}-scenario{sc}", run, seeds, COST[name]))
    return sorted(jobs, key=lambda j: -j.cost)


def timed(run: Callable[[int], dict[str, Any]], seed: int) -> tuple[dict[str, Any], float, float]:
    """One run, its wall seconds and its CPU seconds (in a worker process: the worker's own and
    its finished children's, the run's party processes and their HE workers)."""
    t0, cpu0 = time.perf_counter(), sum(os.times()[:4])
    summary = run(seed)
    return summary, time.perf_counter() - t0, sum(os.times()[:4]) - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--only", nargs="+", choices=ALL, help="these datasets only")
    ap.add_argument("--seeds", type=int, default=5, help="runs of datasets under 5,000 rows")
    ap.add_argument("--boards", type=int, default=20000, help="the scenario's size (the demo's)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each its own parties)")
    args = ap.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        sys.exit("--seeds and --jobs must be at least 1")
    names = args.only or list(ALL)
    check_files(args.data, names)
    work = Path(tempfile.mkdtemp(prefix="splice-quality-"))
    jobs = plan(args, names, work)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    # A run's CPU is idle while it waits for a round trip or a peer's CKKS work: two runs at
    # once keep both cores busy (docs/benchmarks.md, the measurement). Each run starts its own
    # party processes on free ports, in its own folder.
    done: dict[str, list[tuple[int, dict[str, Any], float, float]]] = {j.label: [] for j in jobs}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        runs = [(job, seed) for job in jobs for seed in range(job.seeds)]
        futures = {pool.submit(timed, job.run, seed): (job, seed) for job, seed in runs}
        for future in as_completed(futures):
            job, seed = futures[future]
            done[job.label].append((seed, *future.result()))
            if len(done[job.label]) == job.seeds:
                row = sorted(done[job.label], key=lambda r: r[0])
                summaries, walls = [r[1] for r in row], [r[2] for r in row]
                results.append(aggregate(job.label, summaries, walls, [r[3] for r in row]))
                print(json.dumps(results[-1]), flush=True)
                write(args, results, time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)
    write(args, results, time.perf_counter() - started)


def write(args: argparse.Namespace, results: list[dict[str, Any]], seconds: float) -> None:
    """The JSON document of the rows so far."""
    doc = {
        "benchmark": "quality",
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": os.getloadavg()[0],
        "protection": ProtectionSpec().mode,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(sum(os.times()[:4]), 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
