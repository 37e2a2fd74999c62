"""Objectives: initial score, per-row gradients/hessians, predictions and the test metric."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import accuracy_score, roc_auc_score

from services.engine.gbdt.params import GbdtParams

F64 = npt.NDArray[np.float64]
HESS_FLOOR = 1e-16


def _sigmoid(z: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-z))
    return out


def _softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def init_score(params: GbdtParams, y: F64) -> F64:
    """Base score per output (log-odds, class log-priors or the mean)."""
    if params.objective == "binary":
        p = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return np.array([np.log(p / (1 - p))])
    if params.objective == "multiclass":
        counts = np.bincount(y.astype(np.int64), minlength=params.num_class) + 1.0
        return np.asarray(np.log(counts / counts.sum()), dtype=np.float64)
    return np.array([float(y.mean())])


def grad_hess(params: GbdtParams, y: F64, raw: F64) -> tuple[F64, F64]:
    """Gradients and hessians (rows x outputs) of the loss at the raw scores ``raw``."""
    if params.objective == "binary":
        p = _sigmoid(raw[:, 0])
        return (p - y)[:, None], np.maximum(p * (1 - p), HESS_FLOOR)[:, None]
    if params.objective == "multiclass":
        p = _softmax(raw)
        onehot = np.eye(params.num_class)[y.astype(np.int64)]
        k = params.num_class / (params.num_class - 1.0)
        return p - onehot, np.maximum(k * p * (1 - p), HESS_FLOOR)
    return (raw[:, 0] - y)[:, None], np.ones((y.shape[0], 1))


def predict(params: GbdtParams, raw: F64) -> F64:
    """Probabilities (binary: of class 1; multiclass: rows x classes) or the regression value."""
    if params.objective == "binary":
        return _sigmoid(raw[:, 0])
    if params.objective == "multiclass":
        return _softmax(raw)
    out: F64 = raw[:, 0]
    return out


def metric_name(params: GbdtParams) -> str:
    """The test metric of the objective (higher is better except ``rmse``)."""
    return {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}[params.objective]


def metric(params: GbdtParams, y: F64, raw: F64) -> float:
    """The objective's test metric on raw scores."""
    pred = predict(params, raw)
    if params.objective == "binary":
        return float(roc_auc_score(y, pred))
    if params.objective == "multiclass":
        return float(accuracy_score(y.astype(np.int64), pred.argmax(axis=1)))
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def loss(params: GbdtParams, y: F64, raw: F64) -> float:
    """Validation loss used by early stopping (lower is better)."""
    pred = predict(params, raw)
    if params.objective == "binary":
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if params.objective == "multiclass":
        p = np.clip(pred[np.arange(y.shape[0]), y.astype(np.int64)], 1e-12, 1.0)
        return float(-np.mean(np.log(p)))
    return float(np.mean((pred - y) ** 2))
