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
"""The higher-is-better metric each task is judged by (early stopping, comparisons)."""


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


def loss(task: Task, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch."""
    if task is Task.BINARY:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    if task is Task.MULTICLASS:
        return F.cross_entropy(logits, target)
    return F.mse_loss(logits.squeeze(1), target.float())


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
        return {
            "auc": auc,
            "accuracy": float(skm.accuracy_score(y, p >= 0.5)),
            "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        }
    if labels.task is Task.MULTICLASS:
        hat = pred.argmax(axis=1)
        return {
            "accuracy": float(skm.accuracy_score(y, hat)),
            "macro_f1": float(
                skm.f1_score(
                    y,
                    hat,
                    average="macro",
                    labels=list(range(len(labels.classes))),
                    zero_division=0,
                )
            ),
        }
    true = y.astype(np.float64) * labels.std + labels.mean
    est = pred * labels.std + labels.mean
    return {
        "r2": float(skm.r2_score(true, est)),
        "rmse": float(math.sqrt(skm.mean_squared_error(true, est))),
    }
