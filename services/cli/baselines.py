"""Local baselines a pilot trains beside the split job: label party alone, and centralized.

Both see exactly the samples, encodings, splits and initial weights the split job uses: they go
through the same engine functions the party services call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.dataset import (
    LabelData,
    build_label_data,
    index_keys,
    numeric_bins,
    party_features,
)
from services.engine.interactive import feature_share_init, label_share_init
from services.engine.keyed import JobKey
from services.engine.segments import cut_width
from services.engine.tabular import key_strings, read_table
from services.engine.training import LocalResult, fit_local
from services.protocol.messages import ModelSpec, TrainingSpec, nn_model


@dataclass(slots=True)
class LocalData:
    """Per-party input matrices of the aligned samples, as one process would hold them joined."""

    data: LabelData
    inputs: dict[str, npt.NDArray[np.float32]]


def join_locally(
    spec: TrainingSpec,
    label_table: str,
    feature_tables: dict[str, str],
    feature_keys: dict[str, str],
) -> LocalData:
    """Join every party's table the way the split job aligns them (for baselines only)."""
    table = read_table(label_table)
    indexes = {fp.name: index_keys(table, fp.key_column) for fp in spec.feature_parties}
    found: dict[str, npt.NDArray[np.bool_]] = {}
    rows_of_handle: dict[str, npt.NDArray[np.int64]] = {}
    matrices: dict[str, npt.NDArray[np.float32]] = {}
    for fp in spec.feature_parties:
        ftable = read_table(feature_tables[fp.name])
        position = {k: i for i, k in enumerate(key_strings(ftable, feature_keys[fp.name]))}
        rows = np.array([position.get(k, -1) for k in indexes[fp.name].keys], dtype=np.int64)
        rows_of_handle[fp.name] = rows
        found[fp.name] = rows >= 0
        bins = numeric_bins(spec, fp.name)
        _, matrices[fp.name], _ = party_features(ftable, {feature_keys[fp.name]}, bins=bins)
    data = build_label_data(table, spec, indexes, found)
    inputs: dict[str, npt.NDArray[np.float32]] = {}
    if data.features.shape[1] > 0 and spec.party in nn_model(spec.model).bottom:
        inputs[spec.party] = data.features
    for name in rows_of_handle:
        inputs[name] = matrices[name][rows_of_handle[name][data.handles[name]]]
    return LocalData(data, inputs)


def train_baseline(
    local: LocalData,
    spec: TrainingSpec,
    parties: list[str],
    *,
    model: ModelSpec | None = None,
    keys: Mapping[str, JobKey] | None = None,
    ema_decay: float = 0.0,
) -> LocalResult:
    """Train the joint architecture restricted to ``parties`` in this process.

    With every party's job ``keys`` (known when one operator configured every party, as a pilot
    does), the model starts exactly where the split job started: the same bottoms and top, and
    interactive weights equal to the sum of the two shares. Without them the initial weights
    are drawn from keys derived from the job's public seed.
    """
    m = (model or nn_model(spec.model)).top.interactive
    interactive = {}
    if keys is not None:
        label_key = keys[spec.party]
        for p in parties:
            if p == spec.party:
                continue
            d = cut_width(nn_model(spec.model).bottom[p], local.inputs[p].shape[1])
            interactive[p] = label_share_init(label_key, p, d, m) + feature_share_init(
                keys[p], p, d, m
            )
    inputs = {p: local.inputs[p] for p in parties if p in local.inputs}
    if not inputs:
        raise ValueError(f"none of {parties} has features")
    return fit_local(
        inputs,
        local.data.labels,
        local.data.splits,
        model or nn_model(spec.model),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        patience=spec.patience,
        seed=spec.seed,
        label_party=spec.party,
        interactive=interactive,
        keys=keys,
        ema_decay=ema_decay,
    )
