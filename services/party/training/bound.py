"""The label party's binding of a run to its table (see ``services/party/binding.py``).

A run uses the label, the row id, each feature party's key column and the contract's own
feature columns; their digest, the fitted encoder and (regression) the target's scale are kept
with the run, and a restarted label party finds each key's handle by key, never by position.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.engine.dataset import KeyIndex, LabelData
from services.engine.source import TableSource
from services.engine.tasks import Labels
from services.party.binding import DataBinding
from services.party.training.recovery import load_alignment
from services.protocol.errors import SpliceError
from services.protocol.messages import PreparedJob, Task, TrainingSpec


def bound_columns(spec: TrainingSpec, data: LabelData) -> list[str]:
    """Every column of the label party's table the run uses, in a fixed order."""
    own = [] if data.encoder is None else [c.name for c in data.encoder.state.columns]
    keys = [fp.key_column for fp in spec.feature_parties]
    ids = [spec.id_column] if spec.id_column else []
    return list(dict.fromkeys([spec.label_column, *ids, *keys, *own]))


def bind_label_data(
    table: pa.Table | TableSource, spec: TrainingSpec, data: LabelData
) -> DataBinding:
    """The run's binding to ``table`` as it is now. Without a row id, row positions are part of
    what the run used (the train/validation/test split follows them): the digest keeps them."""
    labels = data.labels
    scale = (labels.mean, labels.std) if labels.task is Task.REGRESSION else None
    return DataBinding.of(
        spec.party,
        table,
        bound_columns(spec, data),
        ordered=spec.id_column is None,
        encoder=data.encoder,
        label_scale=scale,
    )


def rescaled(labels: Labels, binding: DataBinding) -> Labels:
    """``labels`` with the target scale the run was trained with (regression)."""
    if labels.task is not Task.REGRESSION or binding.label_mean is None:
        return labels
    std = binding.label_std if binding.label_std is not None else 1.0
    raw = labels.values.astype(np.float64) * labels.std + labels.mean
    values = ((raw - binding.label_mean) / std).astype(np.float32)
    return dataclasses.replace(labels, values=values, mean=binding.label_mean, std=std)


def handles_by_key(
    indexes: dict[str, KeyIndex],
    saved_keys: dict[str, list[str]],
    saved_handles: dict[str, npt.NDArray[np.int64]],
) -> dict[str, npt.NDArray[np.int64]]:
    """Each current key's handle at each feature party, from the saved alignment (by key; -1:
    not shared)."""
    out: dict[str, npt.NDArray[np.int64]] = {}
    for name, index in indexes.items():
        by_key = dict(zip(saved_keys[name], saved_handles[name].tolist(), strict=True))
        out[name] = np.fromiter(
            (by_key.get(k, -1) for k in index.keys), dtype=np.int64, count=len(index.keys)
        )
    return out


def saved_alignment(
    directory: Path | None,
    table: pa.Table | TableSource,
    job_id: str,
    indexes: dict[str, KeyIndex],
) -> tuple[DataBinding, dict[str, npt.NDArray[np.int64]], dict[str, PreparedJob]]:
    """What a run saved when it aligned, for a label party that restarted: its data binding
    (verified against ``table``: 409 ``data_changed`` otherwise), each current key's handle at
    each feature party (by key), and the feature parties' ``prepare`` answers."""
    saved = None if directory is None else load_alignment(directory)
    binding = None if directory is None else DataBinding.load(directory)
    if saved is None or binding is None:
        raise SpliceError(
            "the label party restarted before the alignment ended; start the training again"
        )
    binding.verify(table, job_id)
    handles, prepared, keys = saved
    return binding, handles_by_key(indexes, keys, handles), prepared
