"""Task semantics: label encoding, output width, loss, predictions and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sklearn import metrics as skm
from torch.nn import functional as F

from services.engine.tabular import TableError
from services.protocol.messages import Task

PRIMARY_METRIC: dict[Task, str] = {
    Task.BINARY: "auc",
    Task.MULTICLASS: "accuracy",
    Task.REGRESSION: "r2",
}
"""The higher-is-better metric each task is reported and compared by (model selection is on
the validation loss, services/engine/training.py)."""

CONTRIBUTION_METRIC: dict[Task, str] = {
    Task.BINARY: "auc",
    Task.MULTICLASS: "macro_f1",
    Task.REGRESSION: "r2",
}
"""The metric parties' contributions (Shapley, leave-one-out) are measured in: for multiclass
one that sees the minority classes (a model near the majority class has accuracy-Shapley 0 for
every party, which would zero a contribution-based revenue split)."""


@dataclass(frozen=True, slots=True)
class Labels:
    """Encoded labels: class indices (classification) or standardised targets (regression)."""

    task: Task
    values: npt.NDArray[np.float32] | npt.NDArray[np.int64]
    classes: list[str]
    mean: float = 0.0
    std: float = 1.0

    @property
    def out_dim(self) -> int:
        """Width of the model output."""
        return len(self.classes) if self.task is Task.MULTICLASS else 1


def encode_labels(table: pa.Table, column: str, task: Task) -> Labels:
    """Read and encode the label column for ``task``."""
    if column not in table.column_names:
        raise TableError(f"label column {column!r} not in table")
    col = table.column(column)
    if col.null_count:
        raise TableError(f"label column {column!r} has {col.null_count} empty value(s)")
    if task is Task.REGRESSION:
        y = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        mean, std = float(y.mean()), float(y.std()) or 1.0
        return Labels(task, ((y - mean) / std).astype(np.float32), [], mean, std)
    raw = [str(v) for v in pc.cast(col, pa.string()).to_pylist()]
    classes = sorted(set(raw), key=lambda s: (len(s), s) if s.lstrip("-").isdigit() else (0, s))
    if task is Task.BINARY and len(classes) != 2:
        raise TableError(f"binary label {column!r} has {len(classes)} classes: {classes[:5]}")
    if task is Task.MULTICLASS and len(classes) < 2:
        raise TableError(f"multiclass label {column!r} has fewer than 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    return Labels(task, np.array([index[v] for v in raw], dtype=np.int64), classes)


def loss(
    task: Task, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean loss of a batch (multiclass: each example weighted by its class's ``weights``)."""
    if task is Task.BINARY:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    if task is Task.MULTICLASS:
        if weights is None:
            return F.cross_entropy(logits, target)
        per_example = F.cross_entropy(logits, target, reduction="none")
        return (per_example * weights.index_select(0, target)).mean()
    return F.mse_loss(logits.squeeze(1), target.float())


MAX_CLASS_WEIGHT = 10.0


def class_weights(labels: Labels, rows: npt.NDArray[np.int64]) -> torch.Tensor | None:
    """A multiclass job's class weights, from the training rows' labels: ``sqrt(n / (k * n_c))``
    (the square root of "balanced", where every class carries the same total weight: on the
    pcb-paste scenario's ``defect_type``, 78% ``none``, full balancing took accuracy from 0.78 to
    0.53 for macro-F1 0.42; the square root gives 0.75 and 0.50), at most
    :data:`MAX_CLASS_WEIGHT`, normalised to a mean of 1 over the examples (the loss keeps its
    scale, so the learning rate means the same). A class absent from ``rows`` gets weight 1.
    None for other tasks. Only the label party computes it: it holds the labels."""
    if labels.task is not Task.MULTICLASS or rows.shape[0] == 0:
        return None
    k = len(labels.classes)
    counts = np.bincount(np.asarray(labels.values)[rows].astype(np.int64), minlength=k)
    raw = np.where(counts > 0, rows.shape[0] / (k * np.maximum(counts, 1)), 1.0) ** 0.5
    w = np.minimum(raw, MAX_CLASS_WEIGHT)
    w = w / (float(np.dot(w, counts)) / rows.shape[0])
    return torch.from_numpy(w.astype(np.float32))


def target_tensor(labels: Labels, rows: npt.NDArray[np.int64]) -> torch.Tensor:
    """Targets of ``rows`` as a tensor of the dtype the loss expects."""
    return torch.from_numpy(labels.values[rows])


def predictions(task: Task, logits: torch.Tensor) -> npt.NDArray[np.float64]:
    """Probabilities (binary: of class 1; multiclass: per class) or regression outputs."""
    with torch.no_grad():
        if task is Task.BINARY:
            return torch.sigmoid(logits.squeeze(1)).double().numpy()
        if task is Task.MULTICLASS:
            return torch.softmax(logits, dim=1).double().numpy()
        return logits.squeeze(1).double().numpy()


def compute_metrics(
    labels: Labels, rows: npt.NDArray[np.int64], pred: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Task metrics of predictions for ``rows``; the primary metric is always present."""
    y = labels.values[rows]
    if labels.task is Task.BINARY:
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        auc = float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan
        log_loss = float(skm.log_loss(y, p, labels=[0, 1])) if len(y) else math.nan
        return {
            "auc": auc,
            "accuracy": float(skm.accuracy_score(y, p >= 0.5)),
            "log_loss": log_loss,
            "loss": log_loss,
        }
    if labels.task is Task.MULTICLASS:
        return _multiclass_metrics(y.astype(np.int64), pred, len(labels.classes))
    true = y.astype(np.float64) * labels.std + labels.mean
    est = pred * labels.std + labels.mean
    return {
        "loss": float(np.mean((pred - y.astype(np.float64)) ** 2)) if len(y) else math.nan,
        "r2": float(skm.r2_score(true, est)),
        "rmse": float(math.sqrt(skm.mean_squared_error(true, est))),
    }


def _multiclass_metrics(
    y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], classes: int
) -> dict[str, float]:
    """Accuracy, the metrics that see minority classes (macro-F1, balanced accuracy, one-vs-rest
    AUC per class) and how the majority class alone would score (``majority_*``)."""
    hat = proba.argmax(axis=1)
    every = list(range(classes))
    out = {
        "accuracy": float(skm.accuracy_score(y, hat)),
        "macro_f1": float(skm.f1_score(y, hat, average="macro", labels=every, zero_division=0)),
        "balanced_accuracy": _balanced_accuracy(y, hat, classes),
        "loss": float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))
        if len(y)
        else math.nan,
    }
    counts = np.bincount(y, minlength=classes)
    if len(y):
        majority = np.full_like(y, int(counts.argmax()))
        out["majority_accuracy"] = float(counts.max() / len(y))
        out["majority_macro_f1"] = float(
            skm.f1_score(y, majority, average="macro", labels=every, zero_division=0)
        )
    for c in every:
        if 0 < counts[c] < len(y):
            out[f"auc_class_{c}"] = float(skm.roc_auc_score(y == c, proba[:, c]))
    return out


def _balanced_accuracy(y: npt.NDArray[np.int64], hat: npt.NDArray[np.int64], classes: int) -> float:
    """Mean recall over the classes present in ``y``."""
    recalls = [float(np.mean(hat[y == c] == c)) for c in range(classes) if np.any(y == c)]
    return float(np.mean(recalls)) if recalls else math.nan
