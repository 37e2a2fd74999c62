"""Prediction latency on loopback: a small governed demo per protection mode, then single rows.

Each run is ``splice demo`` in miniature (real registry and party processes): the pcb-paste
scenario with ``--boards`` boards trains for ``--epochs`` epochs, the PCB maker and the OEM
approve the model version, and the OEM asks the label party for ``--predictions`` predictions
one row per call (the first call, which fetches tokens and warms the caches, is reported
apart). Each call is metered like any other.

    python benchmarks/predict_latency.py --out benchmarks/results/predict-latency.json
    python benchmarks/predict_latency.py --new-lots --out benchmarks/results/predict-new-lots.json

``--new-lots`` measures predictions naming paste lots added after training instead
(``benchmarks/new_lots.py``: incremental alignment at serving time, issue 18).

``benchmarks/metering.py`` imports :func:`measure` for its ``predict_*`` figures.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from services.cli.demo import run_demo
from services.protocol.messages import ProtectionMode


def measure(
    mode: ProtectionMode, predictions: int, boards: int = 4000, epochs: int = 2
) -> dict[str, Any]:
    """Latency of single-row predictions in ``mode`` (ms), with the run's context."""
    quiet = Console(file=io.StringIO(), width=120)
    with tempfile.TemporaryDirectory(prefix=f"splice-bench-predict-{mode}-") as tmp:
        summary = run_demo(
            Path(tmp),
            boards=boards,
            epochs=epochs,
            console=quiet,
            governed=True,
            mode=mode,
            serve_rows=predictions + 1,
            serve_batch=1,
        )
    print(f"  {mode}: p50 {summary['prediction_p50_ms']} ms, p95 {summary['prediction_p95_ms']} ms")
    return {
        "mode": mode,
        "calls": summary["prediction_calls"] - 1,
        "predictions": summary["predictions"],
        "rows_not_predicted": summary["rows_not_predicted"],
        "first_call_ms": summary["single_prediction_ms"],
        "p50_ms": summary["prediction_p50_ms"],
        "p95_ms": summary["prediction_p95_ms"],
        "boards": boards,
        "epochs": epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--predictions", type=int, default=200)
    parser.add_argument("--new-lots", action="store_true", help="issue 18: new paste lots")
    parser.add_argument("--supplier-lots", default="0,100000", help="ckks runs (0: demo's)")
    parser.add_argument("--no-single", action="store_true", help="skip the plain single rows")
    args = parser.parse_args()
    if args.new_lots:
        lots = [int(n) for n in args.supplier_lots.split(",")]
        new_lots(args.out, lots, single=not args.no_single)
        return
    results = [measure(mode, args.predictions) for mode in ("plain", "ckks")]
    by_mode = {r["mode"]: r for r in results}
    doc = {
        "benchmark": "predict_latency",
        "predict_p50_ms": by_mode["plain"]["p50_ms"],
        "predict_p95_ms": by_mode["plain"]["p95_ms"],
        "predict_ckks_p50_ms": by_mode["ckks"]["p50_ms"],
        "predict_ckks_p95_ms": by_mode["ckks"]["p95_ms"],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}, indent=2))


def new_lots(out: Path, supplier_lots: list[int], *, single: bool = True) -> None:
    """Issue 18's figures: one new lot against a known lot in plain mode, and batches of 1,000
    boards naming 50 new lots in ckks mode, with the demo's supplier table and padded ones."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from new_lots import measure_new_lots

    one = measure_new_lots("plain", 0, calls=20) if single else None
    batches = [measure_new_lots("ckks", n, calls=3) for n in supplier_lots]
    doc = {
        "benchmark": "predict_new_lots",
        "new_lot_single_p50_ms": one and one["new_p50_ms"],
        "known_lot_single_p50_ms": one and one["known_p50_ms"],
        "new_over_known": one and one["ratio"],
        "ckks_batch_1000_with_50_new_lots_s": {
            str(r["supplier_lots"]): r["batch_s_median"] for r in batches
        },
        "results": [r for r in [one, *batches] if r is not None],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
