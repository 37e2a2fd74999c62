"""The label party's view of a job's samples: labels, own features, handles into feature parties.

Pure computation, shared by the label party service and local baselines (pilot)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.engine.source import TableSource, as_source
from services.engine.split import assign_splits
from services.engine.streamed import party_features_streamed
from services.engine.tabular import (
    FeatureEncoder,
    feature_columns,
    key_strings,
    require_columns,
)
from services.engine.tasks import Labels, encode_labels
from services.protocol.messages import ModelSpec, TrainingSpec


@dataclass(slots=True)
class KeyIndex:
    """A feature party's distinct keys (in handle order) and each label row's handle."""

    keys: list[str]
    handle_of_row: npt.NDArray[np.int64]


def index_keys(table: pa.Table | TableSource, column: str) -> KeyIndex:
    """Distinct keys of ``column`` in first-seen order; each row's handle is its key's position."""
    source = as_source(table)
    source.require([column], "key")
    values = key_strings(source.read([column]), column)
    position: dict[str, int] = {}
    handles = np.fromiter(
        (position.setdefault(v, len(position)) for v in values), dtype=np.int64, count=len(values)
    )
    return KeyIndex(list(position), handles)


@dataclass(slots=True)
class LabelData:
    """Aligned samples of a job at the label party (sample i is table row ``rows[i]``)."""

    rows: npt.NDArray[np.int64]
    labels: Labels
    features: npt.NDArray[np.float32]
    encoder: FeatureEncoder | None
    handles: dict[str, npt.NDArray[np.int64]]
    splits: npt.NDArray[np.int8]
    dropped_columns: list[str]
    ids: list[str] = field(default_factory=list)
    """Each sample's stable row id (what the split hashes; label privacy keys on it)."""


def own_columns(spec: TrainingSpec) -> list[str] | None:
    """The label party's own feature columns: the spec's (a contract's job names them), or
    None (every column but :func:`own_exclusions`)."""
    return None if spec.columns is None else list(spec.columns)


def numeric_bins(spec: TrainingSpec, party: str) -> int:
    """How many quantile bins ``party``'s bottom asks for its numeric columns (0: a party
    without a bottom, or a job of another family)."""
    if not isinstance(spec.model, ModelSpec) or party not in spec.model.bottom:
        return 0
    return spec.model.bottom[party].numeric_bins


def own_exclusions(spec: TrainingSpec) -> set[str]:
    """Columns of the label party's table that are not features: label, keys, row id."""
    exclude = {spec.label_column, *(fp.key_column for fp in spec.feature_parties)}
    exclude.update(spec.exclude_columns)
    if spec.id_column:
        exclude.add(spec.id_column)
    return exclude


def row_ids(table: pa.Table, spec: TrainingSpec) -> list[str]:
    """Stable row identities used for the train/validation/test split."""
    if spec.id_column:
        return key_strings(table, spec.id_column)
    return [str(i) for i in range(table.num_rows)]


def build_label_data(
    table: pa.Table | TableSource,
    spec: TrainingSpec,
    indexes: dict[str, KeyIndex],
    found: dict[str, npt.NDArray[np.bool_]],
    encoder: FeatureEncoder | None = None,
) -> LabelData:
    """Keep rows every feature party holds; encode labels and own features (the spec's columns,
    with ``encoder`` when given, else fitted here); split.

    Of a Parquet table only the label and row-id columns are read whole; features stream."""
    source = as_source(table)
    source.require([spec.label_column], "label")
    if spec.id_column:
        source.require([spec.id_column], "key")
    valid = np.ones(source.num_rows, dtype=bool)
    for name, idx in indexes.items():
        valid &= found[name][idx.handle_of_row]
    rows = np.flatnonzero(valid).astype(np.int64)
    kept = [spec.label_column, *([spec.id_column] if spec.id_column else [])]
    aligned = source.read(kept).take(pa.array(rows))
    labels = encode_labels(aligned, spec.label_column, spec.task)
    encoder, features, dropped = party_features(
        source,
        own_exclusions(spec),
        columns=own_columns(spec),
        encoder=encoder,
        bins=numeric_bins(spec, spec.party),
    )
    features = np.ascontiguousarray(features[rows])
    ids = row_ids(aligned, spec)
    splits = assign_splits(ids, spec.seed, spec.validation_fraction, spec.test_fraction)
    handles = {name: idx.handle_of_row[rows] for name, idx in indexes.items()}
    return LabelData(rows, labels, features, encoder, handles, splits, dropped, ids)


def party_features(
    table: pa.Table | TableSource,
    exclude: set[str],
    *,
    columns: list[str] | None = None,
    encoder: FeatureEncoder | None = None,
    bins: int = 0,
) -> tuple[FeatureEncoder | None, npt.NDArray[np.float32], list[str]]:
    """Fit a party's encoder on its whole table and encode it.

    The encoder takes ``columns`` in that order (a contract's columns; text columns with too
    many values are still dropped as identifiers), or, without them, every column but
    ``exclude`` in table order. A fitted ``encoder`` (the one a job saved) is applied as it is.
    Returns the encoder (None when no column is usable), the matrix and the columns dropped as
    identifiers. Party services and local baselines both call this, so they encode alike. A
    Parquet source is encoded batch by batch (:mod:`services.engine.streamed`). ``bins``: the
    piecewise-linear encoding of numeric columns (``SegmentSpec.numeric_bins``) when fitting.
    """
    if isinstance(table, TableSource):
        if table.streamed:
            return party_features_streamed(table, exclude, columns, encoder, bins)
        table = table.read()
    if encoder is not None:
        return encoder, encoder.transform(table), []
    if columns is None:
        columns, dropped = feature_columns(table, exclude)
    else:
        require_columns(table, columns, "contract")
        kept, dropped = feature_columns(table.select(columns), set())
        columns = kept
    if not columns:
        return None, np.zeros((table.num_rows, 0), dtype=np.float32), dropped
    encoder = FeatureEncoder.fit(table, columns, bins=bins)
    return encoder, encoder.transform(table), dropped
