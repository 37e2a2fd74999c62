"""``splice pilot`` on FATE's public vertical datasets: joint vs label-only vs centralized.

Reads the CSVs from ``../shared/data/fate`` (or ``--data``); never copies them into the repo.

    python benchmarks/fate_pilots.py --out benchmarks/results/fate_pilots.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from services.cli.pilot import PilotConfig, parse_party, run_pilot
from services.protocol.messages import Task

CASES: list[dict[str, Any]] = [
    {"name": "breast", "label": "breast_hetero_guest.csv:y",
     "features": ["breast_hetero_host.csv"], "key": "id", "task": Task.BINARY, "epochs": 20},
    {"name": "default_credit", "label": "default_credit_hetero_guest.csv:y",
     "features": ["default_credit_hetero_host.csv"], "key": "id", "task": Task.BINARY,
     "epochs": 10},
    {"name": "motor (two hosts)", "label": "motor_hetero_guest.csv:motor_speed",
     "features": ["motor_hetero_host_1.csv", "motor_hetero_host_2.csv"], "key": "idx",
     "task": Task.REGRESSION, "epochs": 40, "patience": 8},
    {"name": "vehicle", "label": "vehicle_scale_hetero_guest.csv:y",
     "features": ["vehicle_scale_hetero_host.csv"], "key": "id", "task": Task.MULTICLASS,
     "epochs": 60, "patience": 10},
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data/fate")
    args = parser.parse_args()
    results = []
    for case in CASES:
        names = [
            f"host{i}" if len(case["features"]) > 1 else "host"
            for i in range(len(case["features"]))
        ]
        out = Path(tempfile.mkdtemp(prefix="splice-fate-"))
        cfg = PilotConfig(
            label=parse_party(f"guest={args.data / case['label']}", label=True),
            features=[
                parse_party(f"{n}={args.data / f}", label=False)
                for n, f in zip(names, case["features"], strict=True)
            ],
            key=case["key"],
            task=case["task"],
            out=out,
            epochs=case["epochs"],
            patience=case.get("patience", 5),
        )
        s = run_pilot(cfg, Console(quiet=True))
        row = {k: s[k] for k in ("metric", "joint", "label_only", "centralized", "rows", "epochs")}
        row |= {"dataset": case["name"], "batch_size": s["batch_size"],
                "samples_per_second": round(s["samples_per_second"], 1)}  # fmt: skip
        results.append(row)
        print(json.dumps(row))
    doc = {
        "benchmark": "fate_pilots",
        "command": "python benchmarks/fate_pilots.py --out " + str(args.out),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
