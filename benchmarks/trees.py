"""Vertical gradient-boosted trees against LightGBM on the pooled tables: speed and quality.

Speed: default_credit (10 trees depth 3, 50 trees depth 5; 32 bins; learning rate 0.3) and a
300k-board pcb-paste scenario, the vertical model in ``ckks`` and ``plain`` mode (wall time from
job start to model, key generation and the feature party's preparation included; alignment/PSI
excluded: rows are joined beforehand) against ``lightgbm.train`` with ``num_threads=2`` and the same
trees, depth, bins, learning rate, L2 and minimum child weight on the pooled training rows.
Quality: test metric (80/20 split per seed) of the ckks vertical model and of LightGBM, mean over
seeds; ``spread`` is max - min of the vertical metric over the seeds.

    python benchmarks/trees.py --out benchmarks/results/trees.json [--data DIR] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from services.engine.gbdt import objectives
from services.engine.gbdt.leakage import partition_leakage, table_entropy
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.vertical import train_vertical
from services.scenario.pcb_paste import generate

F64 = npt.NDArray[np.float64]


@dataclass
class Split:
    """A vertical dataset: label party's features and label, feature parties' features."""

    name: str
    x_label: F64
    y: F64
    x_parties: list[F64]
    objective: str
    num_class: int = 1


def _numeric(table: pa.Table, skip: set[str]) -> F64:
    cols = []
    for name in table.column_names:
        if name in skip:
            continue
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            vals = np.asarray(col.to_pylist(), dtype=object)
            cats = sorted({v for v in vals if v is not None})
            index = {c: float(i) for i, c in enumerate(cats)}
            cols.append(np.array([np.nan if v is None else index[v] for v in vals]))
        else:
            cols.append(np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64))
    return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))


def fate(data: Path, name: str, label: str, hosts: list[str], key: str, objective: str) -> Split:
    guest = pacsv.read_csv(data / f"{name}_hetero_guest.csv")
    ids = guest.column(key).to_pylist()
    parties = []
    for host in hosts:
        t = pacsv.read_csv(data / host)
        pos = {v: i for i, v in enumerate(t.column(key).to_pylist())}
        parties.append(_numeric(t, {key})[[pos[i] for i in ids]])
    y = np.asarray(guest.column(label).to_numpy(), dtype=np.float64)
    num_class = 1
    if objective == "multiclass":
        _, y_codes = np.unique(y, return_inverse=True)
        y, num_class = y_codes.astype(np.float64), int(y_codes.max() + 1)
    return Split(name, _numeric(guest, {key, label}), y, parties, objective, num_class)


def pcb(boards: int) -> Split:
    out = Path(tempfile.mkdtemp(prefix="splice-trees-"))
    files = generate(out, boards=boards)
    maker = pacsv.read_csv(files.pcb_maker)
    paste = pacsv.read_csv(files.paste_supplier)
    pos = {v: i for i, v in enumerate(paste.column(files.key_paste).to_pylist())}
    lots = maker.column(files.key_paste).to_pylist()
    keep = np.array([lot in pos for lot in lots])
    x_paste = _numeric(paste, {files.key_paste})[[pos[lot] for lot in np.asarray(lots)[keep]]]
    skip = {files.id_column, files.key_paste, files.label_binary, files.label_multiclass}
    x_maker = _numeric(maker, skip)[keep]
    y = np.asarray(maker.column(files.label_binary).to_numpy(), dtype=np.float64)[keep]
    return Split(f"pcb-paste-{boards // 1000}k", x_maker, y, [x_paste], "binary")


def lgb_params(p: GbdtParams) -> dict[str, Any]:
    obj = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
    out: dict[str, Any] = {
        "objective": obj[p.objective],
        "num_threads": 2,
        "max_depth": p.depth,
        "num_leaves": 2**p.depth,
        "learning_rate": p.learning_rate,
        "max_bin": p.bins,
        "lambda_l2": p.l2,
        "min_sum_hessian_in_leaf": p.min_child_weight,
        "min_data_in_leaf": 1,
        "verbose": -1,
        "seed": 0,
    }
    if p.objective == "multiclass":
        out["num_class"] = p.num_class
    return out


def run_lgb(p: GbdtParams, x: F64, y: F64, tr: npt.NDArray[np.int64]) -> tuple[Any, float]:
    t = time.perf_counter()
    model = lgb.train(lgb_params(p), lgb.Dataset(x[tr], y[tr]), p.trees)
    return model, time.perf_counter() - t


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the feature party's workers)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def lgb_raw(p: GbdtParams, model: Any, x: F64) -> F64:
    raw = np.asarray(model.predict(x, raw_score=True), dtype=np.float64)
    return raw.reshape(x.shape[0], -1)


def split_rows(n: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    idx = np.random.default_rng(seed).permutation(n)
    cut = n * 8 // 10
    return np.sort(idx[:cut]), np.sort(idx[cut:])


def speed(ds: Split, trees: int, depth: int, mode: str) -> dict[str, Any]:
    p = GbdtParams.parse(
        {"trees": trees, "depth": depth, "learning_rate": 0.3, "bins": 32, "protection": mode}
    )
    tr, te = split_rows(ds.y.shape[0], 0)
    pooled = np.hstack([ds.x_label, *ds.x_parties])
    cpu = cpu_seconds()
    lgb_times = [run_lgb(p, pooled, ds.y, tr)[1] for _ in range(3)]
    lgb_cpu = (cpu_seconds() - cpu) / 3
    t, cpu = time.perf_counter(), cpu_seconds()
    run = train_vertical(p, ds.x_label, ds.y, ds.x_parties, tr, np.zeros(0, dtype=np.int64))
    seconds = time.perf_counter() - t
    for party in run.parties:
        party.close()  # reaps its workers: their CPU time counts below
    vertical_cpu = cpu_seconds() - cpu
    wire = run.source.wire
    lgb_s = statistics.median(lgb_times)
    metric = objectives.metric(p, ds.y[te], run.predict_raw(ds.x_label[te], te))
    return {
        "dataset": ds.name,
        "mode": mode,
        "trees": trees,
        "depth": depth,
        "bins": 32,
        "train_rows": int(tr.size),
        "vertical_seconds": seconds,
        "lightgbm_seconds": lgb_s,
        "ratio": seconds / lgb_s,
        "vertical_cpu_seconds": vertical_cpu,
        "lightgbm_cpu_seconds": lgb_cpu,
        "workers": run.parties[0].workers,
        "keygen_seconds": wire.keygen_seconds,
        "bytes_per_tree": (wire.up + wire.down) / trees,
        "bytes_total": wire.up + wire.down,
        "test_auc": metric,
        "load_average": os.getloadavg()[0],
        "leakage": {
            str(party): partition_leakage(bits, int(tr.size))
            for party, bits in run.source.seen.items()
        },
        "feature_party_table_bits": table_entropy(run.parties[0].train_bins),
    }


def serving(ds: Split, repeats: int = 50) -> dict[str, Any]:
    """Prediction through the parties (each resolves its own splits for the request's rows) of a
    ckks-trained model: p50 of single rows, one batch of 1,000 rows."""
    p = GbdtParams.parse({"trees": 10, "depth": 3, "protection": "ckks"})
    tr, te = split_rows(ds.y.shape[0], 0)
    run = train_vertical(p, ds.x_label, ds.y, ds.x_parties, tr, np.zeros(0, dtype=np.int64))
    single = []
    for i in range(repeats):
        row = te[i : i + 1]
        t = time.perf_counter()
        run.predict_raw(ds.x_label[row], row)
        single.append(time.perf_counter() - t)
    batch = te[:1000]
    t = time.perf_counter()
    run.predict_raw(ds.x_label[batch], batch)
    return {
        "dataset": ds.name, "mode": "ckks", "trees": 10, "depth": 3,
        "single_row_p50_seconds": statistics.median(single),
        "batch_rows": int(batch.size), "batch_seconds": time.perf_counter() - t,
        "load_average": os.getloadavg()[0],
    }  # fmt: skip


def quality(ds: Split, seeds: int, trees: int, depth: int) -> dict[str, Any]:
    p = GbdtParams.parse(
        {
            "objective": ds.objective,
            "num_class": ds.num_class,
            "trees": trees,
            "depth": depth,
            "learning_rate": 0.3,
            "bins": 32,
            "protection": "ckks",
        }
    )
    pooled = np.hstack([ds.x_label, *ds.x_parties])
    ours, theirs = [], []
    for seed in range(seeds):
        tr, te = split_rows(ds.y.shape[0], seed)
        run = train_vertical(p, ds.x_label, ds.y, ds.x_parties, tr, np.zeros(0, np.int64), seed)
        ours.append(objectives.metric(p, ds.y[te], run.predict_raw(ds.x_label[te], te)))
        model, _ = run_lgb(p, pooled, ds.y, tr)
        theirs.append(objectives.metric(p, ds.y[te], lgb_raw(p, model, pooled[te])))
    return {
        "dataset": ds.name,
        "metric": objectives.metric_name(p),
        "seeds": seeds,
        "vertical_metric": statistics.mean(ours),
        "lightgbm_metric": statistics.mean(theirs),
        "difference": statistics.mean(ours) - statistics.mean(theirs),
        "spread": max(ours) - min(ours),
        "lightgbm_spread": max(theirs) - min(theirs),
        "vertical_per_seed": ours,
        "lightgbm_per_seed": theirs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("FATE_DATA", Path(__file__).parents[2] / "shared/data/fate"))
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pcb-boards", type=int, default=300_000)
    parser.add_argument("--skip", default="", help="comma list of: speed,serving,quality,pcb-speed")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) - {""}
    credit = fate(
        args.data, "default_credit", "y", ["default_credit_hetero_host.csv"], "id", "binary"
    )
    result: dict[str, Any] = {"speed": [], "quality": [], "serving": []}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    if "speed" not in skip:
        for trees, depth in ((10, 3), (50, 5)):
            for mode in ("ckks", "plain"):
                result["speed"].append(speed(credit, trees, depth, mode))
                print(result["speed"][-1], flush=True)
                save()
    if "serving" not in skip:
        result["serving"].append(serving(credit))
        print(result["serving"][-1], flush=True)
        save()
    if "quality" not in skip:
        sets = [
            pcb(20_000),
            credit,
            fate(args.data, "breast", "y", ["breast_hetero_host.csv"], "id", "binary"),
            fate(
                args.data,
                "vehicle_scale",
                "y",
                ["vehicle_scale_hetero_host.csv"],
                "id",
                "multiclass",
            ),
            fate(
                args.data,
                "motor",
                "motor_speed",
                ["motor_hetero_host_1.csv", "motor_hetero_host_2.csv"],
                "idx",
                "regression",
            ),
        ]
        for ds in sets:
            result["quality"].append(quality(ds, args.seeds, 10, 3))
            print(
                {k: v for k, v in result["quality"][-1].items() if "per_seed" not in k}, flush=True
            )
            save()
    if "pcb-speed" not in skip:
        big = pcb(args.pcb_boards)
        for mode in ("ckks", "plain"):
            result["speed"].append(speed(big, 10, 3, mode))
            print(result["speed"][-1], flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
