"""CKKS vs plain on the pcb-paste scenario as distributions over training seeds: the demo's
(converged) training, real party processes, both modes, five seeds by default (issue 17: the
mean test AUCs within 0.005, the spread reported; one seed against another is no measure, split
training being chaotic).

Each seed runs ``splice demo --no-registry`` twice (ckks, then plain; default defence on) and
records both joint test AUCs, their difference, and the baselines the pilot trains beside them;
``--defence-cost`` adds a plain run without the defence (the defence's metric cost). Defaults:
the demo's configuration (services/cli/demo.py); the options override it.

    python benchmarks/ckks_agreement.py --out benchmarks/results/ckks_agreement.json
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
from pathlib import Path
from typing import Any

from rich.console import Console

from services.cli.demo import DemoTraining, run_demo
from services.protocol.messages import ProtectionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_options import add_training_options, training_from  # noqa: E402

KEEP = ("joint", "label_only", "centralized", "epochs", "best_epoch", "train_seconds")


def run(
    work: Path,
    seed: int,
    mode: ProtectionMode,
    cfg: DemoTraining,
    boards: int,
    defence: bool = True,
) -> dict[str, Any]:
    """One demo run without the registry; the summary's figures."""
    out = work / f"{mode}-{seed}-{defence}"
    started = time.perf_counter()
    summary = run_demo(
        out,
        boards=boards,
        epochs=cfg.epochs,
        console=Console(quiet=True),
        governed=False,
        mode=mode,
        defence=defence,
        serve_rows=0,
        seed=seed,
        training=cfg,
        # the same private job keys for every mode of one seed: the same initial weights
        key_masters={p: f"ckks-agreement-{seed}-{p}" for p in ("pcb", "paste")},
    )
    shutil.rmtree(out, ignore_errors=True)
    row = {k: summary[k] for k in KEEP}
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["samples_per_second"] = round(summary["samples_per_second"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 1, 2, 3, 4])
    ap.add_argument("--boards", type=int, default=20000)
    add_training_options(ap)
    ap.add_argument("--defence-cost", action="store_true", help="also plain without the defence")
    args = ap.parse_args()
    cfg = training_from(args)
    work = Path(tempfile.mkdtemp(prefix="splice-agreement-"))
    seeds = []
    for seed in args.seeds:
        ckks = run(work, seed, "ckks", cfg, args.boards)
        plain = run(work, seed, "plain", cfg, args.boards)
        row = {
            "seed": seed,
            "ckks_test_auc": round(ckks["joint"], 5),
            "plain_test_auc": round(plain["joint"], 5),
            "abs_difference": round(abs(ckks["joint"] - plain["joint"]), 5),
            "label_only": round(plain["label_only"], 5),
            "centralized": round(plain["centralized"], 5),
            "ckks": ckks,
            "plain": plain,
        }
        if args.defence_cost:
            off = run(work, seed, "plain", cfg, args.boards, defence=False)
            row["plain_no_defence_test_auc"] = round(off["joint"], 5)
            row["defence_cost"] = round(off["joint"] - plain["joint"], 5)
            row["plain_no_defence"] = off
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
        seeds.append(row)
        write(args, cfg, seeds)  # after every seed: a long run leaves usable results
    shutil.rmtree(work, ignore_errors=True)
    doc = write(args, cfg, seeds)
    print(json.dumps({k: v for k, v in doc.items() if k != "seeds"}), flush=True)


def write(
    args: argparse.Namespace, cfg: DemoTraining, seeds: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write the JSON of the seeds run so far; return it."""
    ckks = [s["ckks_test_auc"] for s in seeds]
    plain = [s["plain_test_auc"] for s in seeds]
    spread = statistics.stdev if len(seeds) > 1 else (lambda _: 0.0)
    doc = {
        "benchmark": "ckks_agreement",
        "load_average": os.getloadavg()[0],
        "ckks_mean": round(statistics.fmean(ckks), 5),
        "plain_mean": round(statistics.fmean(plain), 5),
        "ckks_std": round(spread(ckks), 5),
        "plain_std": round(spread(plain), 5),
        "mean_difference": round(statistics.fmean(ckks) - statistics.fmean(plain), 5),
        "command": "python benchmarks/ckks_agreement.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.as_dict(),
        "boards": args.boards,
        "max_abs_difference": max(s["abs_difference"] for s in seeds),
        "min_gain_over_label_only": round(
            min(min(s["ckks_test_auc"], s["plain_test_auc"]) - s["label_only"] for s in seeds), 5
        ),
        "max_gap_to_centralized": round(
            max(
                max(abs(s["centralized"] - s[f"{m}_test_auc"]) for m in ("ckks", "plain"))
                for s in seeds
            ),
            5,
        ),
        "seeds": seeds,
    }
    if args.defence_cost:
        costs = [s["defence_cost"] for s in seeds]
        doc["mean_defence_cost"] = round(sum(costs) / len(costs), 5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
