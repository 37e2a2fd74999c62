"""``splice pilot --model gbdt``: vertical gradient-boosted trees beside pooled LightGBM.

The parties run in this process and exchange only the tree protocol's message bytes
(:mod:`services.engine.gbdt`); party services do not run the tree family yet
(docs/adr/0012-vertical-gbdt.md). Rows are the label table's rows whose key every feature party
holds (what the private alignment would find). The table compares the joint trees, the label
party's trees alone and LightGBM on the pooled table with the same trees, depth, bins, learning
rate, L2 and minimum child weight.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from services.cli.pilot import PilotConfig, PilotError
from services.engine.gbdt import objectives
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.vertical import train_vertical
from services.engine.tabular import is_text, key_strings, read_table
from services.protocol.messages import GbdtModelSpec, Task

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def numeric(table: pa.Table, skip: set[str]) -> tuple[list[str], F64]:
    """A party's feature columns as floats (categories as their sorted codes; missing: NaN)."""
    names, cols = [], []
    for name in table.column_names:
        if name in skip:
            continue
        col = table.column(name)
        if is_text(col.type):
            vals = col.to_pylist()
            cats = {c: float(i) for i, c in enumerate(sorted({v for v in vals if v is not None}))}
            cols.append(np.array([np.nan if v is None else cats[v] for v in vals]))
        else:
            cols.append(np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64))
        names.append(name)
    matrix = np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))
    return names, matrix


def tree_params(cfg: PilotConfig, spec: GbdtModelSpec, num_class: int) -> GbdtParams:
    """The engine's parameters from the pilot's task and protection and the model section."""
    objective = {Task.BINARY: "binary", Task.MULTICLASS: "multiclass"}.get(cfg.task, "regression")
    return GbdtParams.parse(
        {
            **spec.model_dump(exclude={"family"}),
            "objective": objective,
            "num_class": num_class if objective == "multiclass" else 1,
            "protection": cfg.protection.mode,
        }
    )


def _lgb(params: GbdtParams, x: F64, y: F64, tr: I64, te: I64) -> tuple[float, float]:
    import lightgbm as lgb

    obj = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
    args: dict[str, Any] = {
        "objective": obj[params.objective], "num_threads": 2, "max_depth": params.depth,
        "num_leaves": 2**params.depth, "learning_rate": params.learning_rate,
        "max_bin": params.bins, "lambda_l2": params.l2,
        "min_sum_hessian_in_leaf": params.min_child_weight, "min_data_in_leaf": 1,
        "verbose": -1, "seed": 0,
    }  # fmt: skip
    if params.objective == "multiclass":
        args["num_class"] = params.num_class
    t = time.perf_counter()
    model = lgb.train(args, lgb.Dataset(x[tr], y[tr]), params.trees)
    seconds = time.perf_counter() - t
    raw = np.asarray(model.predict(x[te], raw_score=True), dtype=np.float64)
    return objectives.metric(params, y[te], raw.reshape(te.size, -1)), seconds


def run_tree_pilot(
    cfg: PilotConfig, spec: GbdtModelSpec, console: Console | None = None
) -> dict[str, Any]:
    """Train and compare; writes ``summary.json`` to ``cfg.out`` and returns it."""
    console = console or Console()
    label_table = read_table(cfg.label.path)
    label_col = cfg.label.column
    assert label_col is not None
    skip = {label_col, cfg.key, *cfg.drop, *([cfg.id_column] if cfg.id_column else [])}
    if label_col not in label_table.column_names or cfg.key not in label_table.column_names:
        raise PilotError(f"the label table needs columns {label_col!r} and {cfg.key!r}")
    keys = key_strings(label_table, cfg.key)
    keep = np.ones(len(keys), dtype=bool)
    feature_mats = []
    for party in cfg.features:
        table = read_table(party.path)
        kcol = party.column or cfg.key
        if kcol not in table.column_names:
            raise PilotError(f"table of {party.name!r} has no key column {kcol!r}")
        pos = {k: i for i, k in enumerate(key_strings(table, kcol))}
        rows = np.array([pos.get(k, -1) for k in keys], dtype=np.int64)
        keep &= rows >= 0
        _, mat = numeric(table, {kcol})
        feature_mats.append((rows, mat))
    _, x_label = numeric(label_table, skip)
    y_raw = label_table.column(label_col).to_pylist()
    if cfg.task in (Task.BINARY, Task.MULTICLASS):
        classes = {c: float(i) for i, c in enumerate(sorted({v for v in y_raw if v is not None}))}
        y = np.array([classes.get(v, np.nan) for v in y_raw])
    else:
        y = np.array([np.nan if v is None else float(v) for v in y_raw])
    keep &= ~np.isnan(y)
    idx = np.flatnonzero(keep)
    if idx.size < 20:
        raise PilotError(f"only {idx.size} aligned rows with a label")
    x_label, y = x_label[idx], y[idx]
    x_parties = [mat[rows[idx]] for rows, mat in feature_mats]
    num_class = int(y.max()) + 1 if cfg.task is Task.MULTICLASS else 1
    params = tree_params(cfg, spec, num_class)
    perm = np.random.default_rng(cfg.seed).permutation(idx.size)
    cut_te, cut_va = idx.size * 8 // 10, idx.size * 7 // 10
    te = np.sort(perm[cut_te:])
    va = np.sort(perm[cut_va:cut_te]) if params.early_stopping_rounds else np.zeros(0, np.int64)
    tr = np.sort(perm[: cut_va if params.early_stopping_rounds else cut_te])
    t = time.perf_counter()
    run = train_vertical(params, x_label, y, x_parties, tr, va, cfg.seed)
    joint_seconds = time.perf_counter() - t
    joint = objectives.metric(params, y[te], run.predict_raw(x_label[te], te))
    alone_run = train_vertical(params, x_label, y, [], tr, va, cfg.seed)
    alone = objectives.metric(params, y[te], alone_run.predict_raw(x_label[te], te))
    pooled = np.hstack([x_label, *x_parties])
    lgb_metric, lgb_seconds = _lgb(params, pooled, y, tr, te)
    wire = run.source.wire
    summary = {
        "family": "gbdt", "task": cfg.task.value, "metric": objectives.metric_name(params),
        "protection": params.protection, "aligned_rows": int(idx.size),
        "train_rows": int(tr.size), "test_rows": int(te.size),
        "trees": len(run.model.rounds), "depth": params.depth, "bins": params.bins,
        "learning_rate": params.learning_rate,
        "joint": joint, "label_alone": alone, "lightgbm_pooled": lgb_metric,
        "joint_seconds": joint_seconds, "lightgbm_seconds": lgb_seconds,
        "bytes_on_the_wire": wire.up + wire.down,
    }  # fmt: skip
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    name = objectives.metric_name(params)
    table = Table(title=f"test {name} ({cfg.task.value}, {params.protection} trees)")
    table.add_column("model")
    table.add_column(objectives.metric_name(params), justify="right")
    table.add_column("seconds", justify="right")
    table.add_row("joint trees (vertical)", f"{joint:.4f}", f"{joint_seconds:.2f}")
    table.add_row(f"{cfg.label.name} alone (trees)", f"{alone:.4f}", "")
    table.add_row("LightGBM on the pooled table", f"{lgb_metric:.4f}", f"{lgb_seconds:.2f}")
    console.print(table)
    return summary
