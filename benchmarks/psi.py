"""PSI (ECDH over ristretto255): seconds and bytes for n x n ids with 50% overlap.

Runs the whole protocol in one process (label and feature party sharing one ``PsiPool``): both
sides' hashing and exponentiations, the wire encoding and decoding of the three messages, and the
matching. Network time is not included. Worker processes are started before timing (reported as
``pool_start_s``). ``ids_per_second`` is ``n / seconds`` (ids per party per second).
Every run checks that the intersection has exactly the planted size. ``cpu_seconds_this_process``
is the CPU time of the calling process (all of it with ``--workers 1``: a figure that a loaded
machine inflates far less than the wall time); ``load_average_before`` says how loaded it was.

    python benchmarks/psi.py --out benchmarks/results/psi.json
    python benchmarks/psi.py --sizes 10000,100000 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import time
from pathlib import Path
from typing import Any

from services.engine.psi import (
    BlindedKeys,
    FeatureParty,
    FeatureReply,
    Intersection,
    LabelParty,
    PsiPool,
    decode,
)

pc = time.perf_counter


def ids(n: int, overlap: float, seed: str) -> tuple[list[str], list[str]]:
    """Two lists of n ids sharing ``round(n * overlap)``; ids look like lot numbers."""
    k = round(n * overlap)
    shared = [f"LOT-{seed}-S{i:09d}" for i in range(k)]
    xs = shared + [f"LOT-{seed}-L{i:09d}" for i in range(n - k)]
    ys = shared + [f"LOT-{seed}-F{i:09d}" for i in range(n - k)]
    return xs, ys


def run(n: int, overlap: float, pool: PsiPool) -> dict[str, Any]:
    xs, ys = ids(n, overlap, secrets.token_hex(4))
    stages: dict[str, float] = {}
    cpu0 = time.process_time()
    load0 = os.getloadavg()[0]
    t0 = pc()
    label = LabelParty("bench-job", xs, pool)
    feature = FeatureParty("bench-job", ys, pool)
    m1 = label.start().encode()
    stages["label_blind_s"] = pc() - t0
    t = pc()
    d1 = decode(m1)
    assert isinstance(d1, BlindedKeys)
    m2 = feature.reply(d1).encode()
    stages["feature_reply_s"] = pc() - t
    t = pc()
    d2 = decode(m2)
    assert isinstance(d2, FeatureReply)
    notice, la = label.finish(d2)
    m3 = notice.encode()
    stages["label_match_s"] = pc() - t
    t = pc()
    d3 = decode(m3)
    assert isinstance(d3, Intersection)
    fa = feature.finish(d3)
    stages["feature_finish_s"] = pc() - t
    seconds = pc() - t0
    cpu = time.process_time() - cpu0
    assert la.size == fa.size == round(n * overlap), (la.size, fa.size)
    assert la.keys == fa.keys
    return {
        "n": n,
        "overlap": overlap,
        "intersection": la.size,
        "workers": pool.workers,
        "seconds": round(seconds, 3),
        "ids_per_second": round(n / seconds),
        "cpu_seconds_this_process": round(cpu, 3),
        "load_average_before": round(load0, 2),
        "bytes_exchanged": len(m1) + len(m2) + len(m3),
        "bytes": {"step1": len(m1), "step2": len(m2), "step3": len(m3)},
        **{k: round(v, 3) for k, v in stages.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument("--single-max", type=int, default=100_000, help="largest n run on 1 worker")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    results = []
    for w in workers:
        with PsiPool(w) as pool:
            t = pc()
            pool.start()
            start = pc() - t
            for n in sizes:
                if w == 1 and n > args.single_max and len(workers) > 1:
                    continue
                r = run(n, args.overlap, pool) | {"pool_start_s": round(start, 3)}
                print(json.dumps(r), flush=True)
                results.append(r)
    report = {
        "benchmark": "psi",
        "group": "ristretto255 (libsodium via rbcl), RFC 9380 XMD SHA-512 + RFC 9496 map",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
