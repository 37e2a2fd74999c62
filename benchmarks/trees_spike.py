"""Feasibility spike: cost of the protected (CKKS) histogram step per node and per tree level.

Measures, on this machine, one feature party's encrypted histogram for a node of a given size
(label party encrypts ``g + i h``, feature party multiplies by its 0/1 diagonals, rotates and
folds, label party decrypts), in both upload forms (every row's slot / the node's rows only),
counts ciphertexts, operations and bytes, and extrapolates a tree level and a tree.

    python benchmarks/trees_spike.py --rows 24000 --widths 32,2,7,4,32,11,11,11,11,11 \
        --out benchmarks/results/trees_spike.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.engine.gbdt.ckks import FeatureEvaluator, LabelKeys
from services.engine.gbdt.ckks_plan import HistPlan


def _count_ops(plan: HistPlan, chunks: int) -> dict[str, int]:
    betas = [plan.beta(g.size, chunks) for g in plan.groups]
    return {
        "products": chunks * plan.width,
        "baby_rotations": chunks * (max(betas) - 1),
        "giant_rotations": sum(g.size // b - 1 for g, b in zip(plan.groups, betas, strict=True)),
        "fold_rotations": sum(int(np.log2(plan.slots // g.size)) for g in plan.groups),
        "result_ciphertexts": len(plan.groups),
    }


def measure(rows: int, widths: list[int], fractions: list[float], repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    codes = np.stack(
        [rng.integers(0, w, rows) + o for w, o in zip(widths, offsets, strict=True)], 1
    )
    plan = HistPlan(rows, int(sum(widths)))
    t = time.perf_counter()
    keys = LabelKeys(plan)
    keygen = time.perf_counter() - t
    t = time.perf_counter()
    ev = FeatureEvaluator(keys.bundle, plan, codes)
    ev.prepare()
    prepare = time.perf_counter() - t
    truth_all = np.zeros(plan.width, dtype=np.complex128)
    out: dict[str, Any] = {
        "rows": rows,
        "width": plan.width,
        "slots": plan.slots,
        "chunks": plan.chunks,
        "groups": [[g.offset, g.size] for g in plan.groups],
        "galois_steps": len(plan.steps),
        "bundle_bytes": len(keys.bundle),
        "keygen_seconds": keygen,
        "prepare_seconds": prepare,
        "g_bits": plan.g_bits,
        "mask_bits": plan.mask_bits,
        "nodes": [],
    }
    for frac in fractions:
        size = max(1, int(rows * frac))
        node = np.sort(rng.choice(rows, size, replace=False))
        g, h = rng.uniform(-1, 1, size), rng.uniform(0, 1, size)
        for compact in (False, True):
            if compact and size > plan.slots * plan.chunks // 2:
                continue
            vals = g + 1j * h
            if not compact:
                full = np.zeros(rows, dtype=np.complex128)
                full[node] = vals
                vals = full
            truth = truth_all.copy()
            for f in range(codes.shape[1]):
                np.add.at(truth, codes[node, f], g + 1j * h)
            times = {"encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
            for _ in range(repeat):
                t0 = time.perf_counter()
                cts = keys.encrypt(vals)
                t1 = time.perf_counter()
                res = ev.evaluate(cts, node if compact else None)
                t2 = time.perf_counter()
                y = keys.decrypt(res)
                t3 = time.perf_counter()
                times["encrypt"] += (t1 - t0) / repeat
                times["evaluate"] += (t2 - t1) / repeat
                times["decrypt"] += (t3 - t2) / repeat
            out["nodes"].append(
                {
                    "fraction": frac,
                    "node_rows": size,
                    "compact": compact,
                    **{f"{k}_seconds": v for k, v in times.items()},
                    "up_bytes": sum(map(len, cts)),
                    "down_bytes": sum(map(len, res)),
                    "up_ciphertexts": len(cts),
                    **_count_ops(plan, len(cts)),
                    "max_abs_error": float(np.abs(y - truth).max()),
                    "max_abs_value": float(np.abs(truth).max()),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24000)
    parser.add_argument("--widths", default="32,2,7,4,32,11,11,11,11,11")
    parser.add_argument("--fractions", default="1,0.5,0.25,0.125,0.0625,0.03125")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = measure(
        args.rows,
        [int(w) for w in args.widths.split(",")],
        [float(f) for f in args.fractions.split(",")],
        args.repeat,
    )
    result["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for n in result["nodes"]:
        print(
            f"{n['node_rows']:>6} rows compact={n['compact']!s:5} enc {n['encrypt_seconds']:.3f}s "
            f"eval {n['evaluate_seconds']:.3f}s dec {n['decrypt_seconds']:.4f}s "
            f"up {n['up_bytes'] / 1e3:.0f}kB down {n['down_bytes'] / 1e3:.0f}kB "
            f"products {n['products']} "
            f"rot {n['baby_rotations'] + n['giant_rotations'] + n['fold_rotations']} "
            f"err {n['max_abs_error']:.3f}/{n['max_abs_value']:.0f}"
        )
    print({k: v for k, v in result.items() if k != "nodes"})


if __name__ == "__main__":
    main()
