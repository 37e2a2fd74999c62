"""The attacks of benchmarks/leakage.py on one recorded run (services/engine/attack_suite.py).

Each attack gives one row: its symmetric AUC on board labels and on lot labels (label-free
attacks), or its mean AUC beside the raw-feature baseline (completion), or an R^2 (replay,
reconstruction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from leakage_capture import F64, FEATURE, I64, LABEL, MASTERS, Run

from services.engine import attack_suite as suite
from services.engine.keyed import JobKey
from services.engine.leakage import cosine_scores, principal_scores
from services.engine.split import epoch_batches
from services.engine.training import split_rows

KNOWN = (10, 50, 200)
"""Known board labels of the completion attacks."""
KNOWN_LOTS = (5, 20, 50)
"""Lots whose supplier features the label party knows (reconstruction)."""
REPLAY_STEPS = 8
LABEL_FREE = ("per_batch", "accumulation", "spectral", "state")


def _sources(run: Run) -> dict[str, dict[int, F64]]:
    """Per-row values the feature party received, by kind, per step."""
    fv = run.feature
    out: dict[str, dict[int, F64]] = {}
    if fv.dh:
        out["grad"] = fv.dh
    if fv.mix:
        out["mix"] = fv.mix
    if fv.share_grad:  # each row's image under its masked share of W's gradient
        assert fv.x is not None and fv.h is not None
        h = fv.h if fv.h.shape[1] == fv.share_grad[min(fv.share_grad)].shape[0] else fv.x
        out["share_grad"] = {s: h[fv.handles[s]] @ g for s, g in fv.share_grad.items()}
    return out


def _batches(run: Run) -> dict[int, I64]:
    """The boards of every training step, rebuilt as the trainer drew them."""
    spec = run.spec
    train_rows = split_rows(run.splits)[0]
    out, step = {}, 0
    for epoch in range(len(run.status.history)):
        for batch in epoch_batches(train_rows, spec.batch_size, spec.seed, epoch):
            step += 1
            out[step] = batch
            lots = np.unique(run.board_lot[batch])
            if not np.array_equal(lots, np.unique(run.feature.handles[step])):
                raise RuntimeError(f"step {step}: rebuilt batch differs from the one received")
    return out


def _row(attack: str, family: str, source: str, **values: Any) -> dict[str, Any]:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
    return {"attack": attack, "family": family, "source": source, **clean}


def _per_batch(run: Run, source: str, steps: dict[int, F64], batches: dict[int, I64]) -> list:
    y, lots = run.labels, run.board_lot
    rng = np.random.default_rng(run.spec.seed)
    scores: dict[str, list[float]] = {"norm": [], "direction": [], "principal": []}
    for step, rows in steps.items():
        boards = batches[step]
        pos = np.full(lots.max() + 1, -1)
        pos[run.feature.handles[step]] = np.arange(rows.shape[0])
        r = pos[lots[boards]]
        yb = y[boards]
        for name, s in (("norm", suite.norm_of(rows)), ("principal", principal_scores(rows))):
            auc = suite.leak_auc(s[r], yb)
            scores[name].append(suite.symmetric_auc(auc))
        positives = np.flatnonzero(yb)
        if positives.size:
            ref = r[int(rng.choice(positives))]
            other = r != ref
            s = cosine_scores(rows, rows[ref])
            auc = suite.leak_auc(s[r[other]], yb[other])
            scores["direction"].append(suite.symmetric_auc(auc))
    out = []
    for name, values in scores.items():
        v = [a for a in values if not math.isnan(a)]
        out.append(
            _row(
                f"batch_{name}",
                "per_batch",
                source,
                board_auc=float(np.mean(v)) if v else math.nan,
                worst_batch=float(np.max(v)) if v else math.nan,
                batches=len(v),
            )
        )
    return out


def _scored(run: Run, attack: str, family: str, source: str, scores: F64) -> dict[str, Any]:
    return _row(
        attack,
        family,
        source,
        board_auc=suite.board_auc(scores, run.board_lot, run.labels),
        lot_auc=suite.lot_auc(scores, run.board_lot, run.labels),
    )


def label_free(run: Run) -> tuple[list[dict[str, Any]], dict[str, F64]]:
    """Per-batch, accumulation, spectral and own-state attacks; and the per-lot sums."""
    fv, lots = run.feature, run.feature.x.shape[0] if run.feature.x is not None else 0
    epochs = len(run.status.history)
    per_epoch_steps = run.status.steps_per_epoch
    batches = _batches(run)
    rows: list[dict[str, Any]] = []
    sums: dict[str, F64] = {}
    for source, steps in _sources(run).items():
        rows += _per_batch(run, source, steps, batches)
        received = [
            suite.Received((s - 1) // per_epoch_steps, fv.handles[s], v) for s, v in steps.items()
        ]
        total, per_epoch = suite.accumulate(received, lots, epochs)
        sums[source] = total
        rows.append(_scored(run, "sum_norm", "accumulation", source, suite.norm_of(total)))
        rows.append(_scored(run, "sum_principal", "accumulation", source, principal_scores(total)))
        rows.append(_scored(run, "spectral", "spectral", source, suite.spectral_scores(per_epoch)))
    assert fv.x is not None and fv.h is not None
    if not np.array_equal(fv.h, fv.x):  # a trained bottom: its output's principal direction
        rows.append(_scored(run, "bottom_principal", "state", "model", principal_scores(fv.h)))
    if fv.share is not None:
        image = (fv.h if fv.h.shape[1] == fv.share.shape[0] else fv.x) @ fv.share
        rows.append(_scored(run, "share_principal", "state", "share", principal_scores(image)))
    return rows, sums


def raw_baselines(run: Run) -> list[dict[str, Any]]:
    """What the supplier's raw features alone give (no protocol): their principal direction,
    and the true per-lot defect rate as a score (an upper bound for any per-lot attack)."""
    assert run.feature.x is not None
    rates, _ = suite.lot_rates(run.board_lot, run.labels, run.feature.x.shape[0])
    rates = np.nan_to_num(rates, nan=float(np.nanmean(rates)))
    x = run.feature.x
    rng = np.random.default_rng(run.spec.seed)
    projected = [  # the share's null: principal directions of x under random linear maps
        suite.board_auc(principal_scores(x @ rng.uniform(-1, 1, (x.shape[1], 16))), *labelled)
        for labelled in [(run.board_lot, run.labels)] * 20
    ]
    return [
        _scored(run, "raw_principal", "baseline", "raw", principal_scores(x)),
        _row(
            "raw_projection_principal",
            "baseline",
            "raw",
            board_auc=float(np.mean(projected)),
            p90=float(np.quantile(projected, 0.9)),
        ),
        _scored(run, "true_lot_rate", "baseline", "labels", rates),
    ]


def completions(run: Run, sums: dict[str, F64], draws: int) -> list[dict[str, Any]]:
    """Model completion with 10 / 50 / 200 known labels, beside the raw-feature baseline."""
    fv = run.feature
    assert fv.x is not None and fv.h is not None
    model = [fv.h]
    if fv.share is not None:
        model.append((fv.h if fv.h.shape[1] == fv.share.shape[0] else fv.x) @ fv.share)
    variants = {"completion_model": np.hstack(model)}
    if sums:
        variants["completion_gradients"] = np.hstack([fv.x, *sums.values()])
    rows = []
    for name, features in variants.items():
        for k in KNOWN:
            c = suite.completion(
                features, fv.x, run.board_lot, run.labels, k, draws, seed=run.spec.seed + k
            )
            rows.append(
                _row(
                    f"{name}_{k}",
                    "completion",
                    name.removeprefix("completion_"),
                    known=k,
                    board_auc=c.attack,
                    raw_auc=c.raw,
                    advantage=c.advantage,
                    draws=draws,
                )
            )
    return rows


def _known_keys(run: Run) -> dict[str, JobKey]:
    """Every job key the feature party can compute from what it holds."""
    spec = run.spec
    assert run.feature.own_key is not None
    seed, job = spec.seed, spec.job_id
    return {
        "own key": run.feature.own_key,
        "public(seed)": JobKey.public(seed),
        "public(seed, local, label)": JobKey.public(seed, "local", LABEL),
        "public(seed, local, feature)": JobKey.public(seed, "local", FEATURE),
        "derive(seed, job)": JobKey.derive(str(seed).encode(), job),
        "derive(job, job)": JobKey.derive(job.encode(), job),
    }


def replay(run: Run) -> list[dict[str, Any]]:
    """Regress the first steps' received values on every stream the party can regenerate;
    control: the label party's true defence noise."""
    fv, m = run.feature, run.spec.model.top.interactive
    bound = float(2.0**run.spec.protection.ckks.share_bits)
    rows = []

    def defence(key: JobKey) -> suite.Draw:
        return lambda step, shape: key.stream("defence", FEATURE, counter=step).normal(shape)

    def offsets(key: JobKey) -> suite.Draw:
        stream = key.stream("offset", FEATURE)
        return lambda _step, shape: stream.uniform(-bound, bound, shape)

    targets = {"grad": (fv.dh, m), "share_grad": (fv.share_grad, None)}
    for target, (values, width) in targets.items():
        first = dict(sorted(values.items())[:REPLAY_STEPS])
        if not first:
            continue
        best = -math.inf
        for key in _known_keys(run).values():
            for make in (defence, offsets):
                best = max(best, suite.replay_r2(first, make(key), width))
        rows.append(_row("replay", "replay", target, r2=best))
        if target == "grad":
            label_key = JobKey.derive(MASTERS[LABEL].encode(), run.spec.job_id)
            control = suite.replay_r2(first, defence(label_key), width)
            rows.append(_row("replay_control", "control", target, r2=control))
    return rows


def reconstruction(run: Run, draws: int) -> list[dict[str, Any]]:
    """The label party's view: the supplier's encoded features from the cut values it saw."""
    fv, lv = run.feature, run.label
    assert fv.x is not None
    seen = np.array(sorted(lv.z), dtype=np.int64)
    rows = []
    views = {"z": lv.z, **({"h": lv.h} if lv.h else {})}
    for name, values in views.items():
        v = np.stack([values[int(i)] for i in seen])
        for k in KNOWN_LOTS:
            r2 = suite.reconstruction_r2(v, fv.x[seen], k, draws, seed=run.spec.seed)
            rows.append(
                _row(f"reconstruct_{name}_{k}", "reconstruction", name, known_lots=k, r2=r2)
            )
    return rows


def evaluate(run: Run, draws: int) -> dict[str, Any]:
    """Every attack on one run."""
    rows, sums = label_free(run)
    rows += raw_baselines(run)
    rows += completions(run, sums, draws)
    rows += replay(run)
    rows += reconstruction(run, max(draws // 2, 5))
    return {
        "seed": run.spec.seed,
        "test_auc": run.status.test["auc"],
        "best_epoch": run.status.best_epoch,
        "label_privacy": dict(run.status.label_privacy),
        "train_seconds": round(run.seconds, 1),
        "received": {k: len(v) for k, v in _sources(run).items()},
        "attacks": rows,
    }
