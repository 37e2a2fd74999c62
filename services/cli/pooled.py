"""Pooled references a pilot reports beside the joint model: what stock libraries reach when
every party's table is pooled in one place.

- ``pooled_gbdt``: LightGBM, a fixed grid of settings (:data:`GBDT_GRID`) each with early
  stopping on the validation rows, the best by validation loss. Nothing of the job (epochs,
  batch, learning rate, patience) reaches it, so a weak job configuration cannot weaken the
  reference.
- ``pooled_mlp``: scikit-learn's MLP with its defaults and early stopping (its own 10% of the
  training rows), an independent check on the split engine.

Both train on the job's training rows of the pooled encoded features (the same encoding the
parties use), and are measured with the engine's metrics on exactly the joint model's test rows.
They are references for the operator who holds every table (a pilot, the demo); a Splice job
never pools data.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.cli.baselines import LocalData
from services.engine import tasks
from services.engine.training import split_rows
from services.protocol.messages import Task

GBDT_GRID: tuple[dict[str, Any], ...] = (
    {"num_leaves": 15, "min_child_samples": 20, "feature_fraction": 0.9},
    {"num_leaves": 31, "min_child_samples": 20, "feature_fraction": 0.9},
    {"num_leaves": 63, "min_child_samples": 40, "feature_fraction": 0.8},
    {"num_leaves": 7, "min_child_samples": 10, "feature_fraction": 1.0},
)
"""The fixed LightGBM search grid (learning rate 0.05, up to 2,000 rounds, early stopping
after 50 rounds without a better validation loss)."""

GBDT_THREADS = 2
GBDT_SEED = 0


@dataclass(slots=True)
class Reference:
    """A pooled reference's test metrics, the setting it chose and its wall time."""

    test: dict[str, float]
    chosen: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def pooled_matrix(local: LocalData) -> npt.NDArray[np.float32]:
    """Every party's encoded features side by side (party order as held)."""
    return np.ascontiguousarray(np.hstack([local.inputs[p] for p in sorted(local.inputs)]))


def _targets(local: LocalData) -> npt.NDArray[Any]:
    return np.asarray(local.data.labels.values)


def pooled_gbdt(local: LocalData, threads: int = GBDT_THREADS) -> Reference:
    """LightGBM on the pooled tables; grid chosen on validation loss; tested on the test rows.

    ``threads``: the pilot's are fixed (:data:`GBDT_THREADS`); a test process whose OpenMP
    runtime already busy-waits passes 1."""
    # passive OpenMP waiting (services/cli/__init__.py); effective only before the runtime starts
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightgbm as lgb

    started = time.perf_counter()
    labels = local.data.labels
    x, y = pooled_matrix(local), _targets(local)
    train, val, test = split_rows(local.data.splits)
    objective, extra = {
        Task.BINARY: ("binary", {}),
        Task.MULTICLASS: ("multiclass", {"num_class": labels.out_dim}),
        Task.REGRESSION: ("regression", {}),
    }[labels.task]
    best: tuple[float, dict[str, Any], Any] | None = None
    # one binning for the whole grid (min_child_samples varies: no pre-filtering on it)
    binning = {"verbosity": -1, "feature_pre_filter": False, "num_threads": threads}
    train_set = lgb.Dataset(x[train], y[train], params=binning, free_raw_data=False)
    val_set = lgb.Dataset(x[val], y[val], reference=train_set)
    for setting in GBDT_GRID:
        params = {
            "objective": objective,
            **extra,
            **setting,
            "learning_rate": 0.05,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "num_threads": threads,
            "seed": GBDT_SEED,
            "deterministic": True,
            "verbosity": -1,
            "feature_pre_filter": False,
        }
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=2000,
            valid_sets=[val_set],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        score = float(next(iter(booster.best_score["valid_0"].values())))
        if best is None or score < best[0]:
            best = (score, {**setting, "rounds": booster.best_iteration}, booster)
    assert best is not None
    _, chosen, booster = best
    pred = np.asarray(booster.predict(x[test], num_iteration=booster.best_iteration))
    test_metrics = tasks.compute_metrics(labels, test, pred.astype(np.float64))
    return Reference(test_metrics, chosen, time.perf_counter() - started)


def pooled_mlp(local: LocalData, seed: int = 0) -> Reference:
    """scikit-learn's MLP (defaults, early stopping) on the pooled tables' training rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    started = time.perf_counter()
    labels = local.data.labels
    x, y = pooled_matrix(local), _targets(local)
    train, _, test = split_rows(local.data.splits)
    model: MLPClassifier | MLPRegressor
    if labels.task is Task.REGRESSION:
        model = MLPRegressor(early_stopping=True, max_iter=500, random_state=seed)
    else:
        model = MLPClassifier(early_stopping=True, max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[train], y[train])
    if labels.task is Task.REGRESSION:
        pred = np.asarray(model.predict(x[test]), dtype=np.float64)
    else:
        proba = np.asarray(model.predict_proba(x[test]), dtype=np.float64)
        full = np.zeros((proba.shape[0], labels.out_dim if labels.out_dim > 1 else 2))
        full[:, np.asarray(model.classes_, dtype=np.int64)] = proba
        pred = full[:, 1] if labels.task is Task.BINARY else full
    test_metrics = tasks.compute_metrics(labels, test, pred)
    return Reference(test_metrics, {"epochs": int(model.n_iter_)}, time.perf_counter() - started)
