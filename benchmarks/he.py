"""CKKS-protected split training end to end (real party processes, loopback), beside plain mode
and a python-paillier implementation of the same layer.

One feature party (the paste supplier, cut width 32) and the label party (the PCB maker,
interactive width 16) train on the pcb-paste scenario in plain and in ckks mode with the same
seed and the default label-leakage defence; the figures are training-step throughput, traffic
per training sample (key bundle reported separately) and the test AUC of both runs. The same
run times python-paillier (2048-bit, gmpy2) doing the protected layer's per-sample work on a
slice of rows: encrypt h, Enc(h) W_A + mask, decrypt; Enc(h)^T dz + mask; dz Enc(W_P)^T;
decrypt both. ``paillier_slowdown`` = Paillier seconds per sample for the layer alone / CKKS
seconds per sample for the whole training step.

    python benchmarks/he.py --out benchmarks/results/he.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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
)
from services.protocol.peers import PartyClient
from services.scenario.pcb_paste import generate

D, M = 32, 16
MODEL = ModelSpec(
    bottom={"pcb": SegmentSpec(hidden=[64], out=D), "paste": SegmentSpec(hidden=[64], out=D)},
    top=TopSpec(interactive=M, hidden=[32]),
)


def spec(job_id: str, url: str, mode: str, batch_size: int, epochs: int) -> TrainingSpec:
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
        protection=ProtectionSpec.model_validate({"mode": mode}),
    )


async def run(label_url: str, s: TrainingSpec) -> dict[str, Any]:
    async with PartyClient(label_url, timeout=1200) as client:
        status = await client.train(s)
    if status.state is not JobState.FINISHED:
        raise RuntimeError(f"{s.protection.mode} run failed: {status.error}")
    return {
        "samples_per_second": round(status.samples_per_second, 1),
        "bytes_per_sample": round(status.train_bytes / max(status.train_samples, 1), 1),
        "key_bytes": status.key_bytes,
        "test_auc": round(status.test["auc"], 5),
        "train_samples": status.train_samples,
        "train_seconds": round(status.train_seconds, 2),
    }


def paillier_layer(rows: int) -> dict[str, Any]:
    """Seconds per sample of the protected layer's work in python-paillier (2048-bit)."""
    from phe import EncodedNumber  # type: ignore[import-untyped]
    from phe import paillier as phe
    from phe import util as phe_util

    pk, sk = phe.generate_paillier_keypair(n_length=2048)
    gen = np.random.default_rng(0)
    h = gen.normal(size=(rows, D))
    w_a, w_p = gen.normal(size=(D, M)), gen.normal(size=(D, M))
    dz = gen.normal(size=(rows, M)) * 1e-2
    prec, rng = 2.0**-32, random.SystemRandom()

    def enc(x: float) -> Any:
        return pk.encrypt(float(x), precision=prec)

    def code(x: float) -> Any:
        return EncodedNumber.encode(pk, float(x), precision=prec)

    def masked(acc: Any) -> Any:
        return acc + pk.encrypt(EncodedNumber(pk, rng.randrange(pk.n), acc.exponent))

    t0 = time.perf_counter()
    eh = [[enc(h[r, j]) for j in range(D)] for r in range(rows)]  # P: Enc(h)
    wa = [[code(w_a[j, k]) for k in range(M)] for j in range(D)]
    fwd = [
        [masked(sum((eh[r][j] * wa[j][k] for j in range(1, D)), eh[r][0] * wa[0][k]))
         for k in range(M)]
        for r in range(rows)
    ]  # fmt: skip
    for row in fwd:  # P decrypts h W_A + R
        for c in row:
            sk.decrypt_encoded(c)
    dzc = [[code(dz[r, k]) for k in range(M)] for r in range(rows)]
    bwd = [
        [masked(sum((eh[r][j] * dzc[r][k] for r in range(1, rows)), eh[0][j] * dzc[0][k]))
         for k in range(M)]
        for j in range(D)
    ]  # fmt: skip
    for row in bwd:  # P decrypts h^T dz + R'
        for c in row:
            sk.decrypt_encoded(c)
    t_rows = time.perf_counter() - t0
    t1 = time.perf_counter()
    ewp = [[enc(w_p[j, k]) for k in range(M)] for j in range(D)]  # once per batch
    t_batch = time.perf_counter() - t1
    t2 = time.perf_counter()
    for r in range(rows):  # dz Enc(W_P)^T, decrypted by P
        for j in range(D):
            acc = sum((ewp[j][k] * dzc[r][k] for k in range(1, M)), ewp[j][0] * dzc[r][0])
            sk.decrypt_encoded(acc)
    t_rows += time.perf_counter() - t2
    return {
        "gmpy2": bool(phe_util.HAVE_GMP),
        "rows_timed": rows,
        "key_bits": 2048,
        "seconds_per_sample": t_rows / rows,
        "weights_encryption_s_per_batch": t_batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--boards", type=int, default=40_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--paillier-rows", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="splice-he-"))
    files = generate(work / "data", boards=args.boards, lots=max(50, args.boards // 50), seed=7)
    runs: dict[str, dict[str, Any]] = {}
    with LocalCluster(work) as cluster:
        started = cluster.start_all(
            [
                PartyLaunch("paste", files.paste_supplier, files.key_paste),
                PartyLaunch("pcb", files.pcb_maker),
            ]
        )
        paste, label = started["paste"].url, started["pcb"].url
        for mode in ("plain", "ckks"):
            s = spec(f"he-{mode}", paste, mode, args.batch_size, args.epochs)
            runs[mode] = asyncio.run(run(label, s))
            print(mode, json.dumps(runs[mode]), flush=True)
    phe = paillier_layer(args.paillier_rows)
    ckks_s_per_sample = 1.0 / runs["ckks"]["samples_per_second"]
    doc = {
        "benchmark": "he",
        "command": "python benchmarks/he.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": 2},
        "layer": {"cut_width": D, "interactive_width": M, "batch_size": args.batch_size},
        "boards": args.boards,
        "epochs": args.epochs,
        "ckks_samples_per_second": runs["ckks"]["samples_per_second"],
        "plain_samples_per_second": runs["plain"]["samples_per_second"],
        "ckks_vs_plain_throughput": round(
            runs["ckks"]["samples_per_second"] / runs["plain"]["samples_per_second"], 4
        ),
        "bytes_per_sample": runs["ckks"]["bytes_per_sample"],
        "plain_bytes_per_sample": runs["plain"]["bytes_per_sample"],
        "key_bytes": runs["ckks"]["key_bytes"],
        "ckks_test_auc": runs["ckks"]["test_auc"],
        "plain_test_auc": runs["plain"]["test_auc"],
        "test_auc_difference": round(abs(runs["ckks"]["test_auc"] - runs["plain"]["test_auc"]), 5),
        "paillier": phe,
        "paillier_slowdown": round(phe["seconds_per_sample"] / ckks_s_per_sample, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("runs", "paillier")}, indent=2))


if __name__ == "__main__":
    main()
