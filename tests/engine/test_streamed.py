"""Streaming a Parquet table by row groups encodes it exactly as reading it whole does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from services.engine.dataset import index_keys, party_features
from services.engine.source import TableSource, as_source
from services.engine.streamed import fit_streamed
from services.engine.tabular import MAX_CATEGORIES, FeatureEncoder, TableError, read_table

ROWS = 1000
ROW_GROUP = 97  # row groups of uneven size, batches that straddle them
BATCH = 100


def _table(rng: np.random.Generator) -> pa.Table:
    n = ROWS
    temp = rng.normal(240.0, 5.0, n)
    temp[rng.random(n) < 0.1] = np.nan  # NaN as well as nulls count as missing
    grade = rng.choice(["A", "B", "C"], n).astype(object)
    grade[-5:] = "Z"  # a category seen in the last batch only
    late = np.full(n, None, dtype=object)
    late[-(MAX_CATEGORIES + 1) :] = [f"v{i}" for i in range(MAX_CATEGORIES + 1)]
    return pa.table(
        {
            "lot": pa.array([f"L-{i:05d}" for i in range(n)]),  # an identifier: dropped
            "temp": pa.array(temp, mask=rng.random(n) < 0.05),
            "speed": pa.array(rng.lognormal(3.0, 0.5, n) * 1e6),  # large values, no missing
            "count": pa.array(rng.integers(0, 9, n)),
            "coated": pa.array(rng.random(n) < 0.3),
            "constant": pa.array(np.full(n, 7.0)),
            "empty": pa.array([None] * n, pa.float64()),
            "grade": pa.array(grade, mask=rng.random(n) < 0.04),
            "sparse": pa.array(late),  # > MAX_CATEGORIES values, all in the last row group
            "label": pa.array(rng.integers(0, 2, n)),
        }
    )


@pytest.fixture
def table() -> pa.Table:
    return _table(np.random.default_rng(3))


@pytest.fixture
def parquet(tmp_path: Path, table: pa.Table) -> TableSource:
    path = tmp_path / "party.parquet"
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    assert pq.ParquetFile(path).metadata.num_row_groups > 5
    return TableSource.open(path, batch_rows=BATCH)


def test_streamed_encoder_equals_in_memory(table: pa.Table, parquet: TableSource) -> None:
    assert parquet.streamed and parquet.num_rows == ROWS
    whole_encoder, whole, whole_dropped = party_features(table, {"label"})
    streamed_encoder, streamed, streamed_dropped = party_features(parquet, {"label"})
    assert whole_encoder is not None and streamed_encoder is not None
    assert streamed_dropped == whole_dropped == ["lot", "sparse"]
    assert streamed_encoder.feature_names == whole_encoder.feature_names
    for s, w in zip(streamed_encoder.state.columns, whole_encoder.state.columns, strict=True):
        assert (s.name, s.kind, s.categories, s.missing_indicator) == (
            w.name,
            w.kind,
            w.categories,
            w.missing_indicator,
        )
        assert s.mean == pytest.approx(w.mean, rel=1e-12, abs=1e-9)
        assert s.std == pytest.approx(w.std, rel=1e-12)
    assert "grade=Z" in streamed_encoder.feature_names
    assert "empty:missing" in streamed_encoder.feature_names
    assert streamed.dtype == np.float32 and streamed.flags.c_contiguous
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6)


def test_in_memory_source_batches_alike(table: pa.Table) -> None:
    source = TableSource(table=table, batch_rows=BATCH)
    encoder, dropped = fit_streamed(source, {"label"})
    assert encoder is not None and dropped == ["lot", "sparse"]
    reference = FeatureEncoder.fit(table, [c.name for c in encoder.state.columns])
    np.testing.assert_allclose(
        encoder.transform(table), reference.transform(table), rtol=1e-6, atol=1e-6
    )


def test_categories_encode_one_hot(table: pa.Table) -> None:
    encoder = FeatureEncoder.fit(table, ["grade"])
    x = encoder.transform(table)
    grades = table.column("grade").to_pylist()
    assert encoder.feature_names == ["grade=A", "grade=B", "grade=C", "grade=Z"]
    for row, g in enumerate(grades):
        expected = [float(g == c) for c in "ABCZ"] if g is not None else [0.0] * 4
        assert x[row].tolist() == expected
    unseen = encoder.transform(pa.table({"grade": ["Q", None, "B"]}))
    assert unseen.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]


def test_keys_read_alone_and_alike(table: pa.Table, parquet: TableSource) -> None:
    streamed, whole = index_keys(parquet, "lot"), index_keys(table, "lot")
    assert streamed.keys == whole.keys
    np.testing.assert_array_equal(streamed.handle_of_row, whole.handle_of_row)
    assert parquet.read(["lot", "label"]).column_names == ["lot", "label"]
    with pytest.raises(TableError, match="missing_key"):
        index_keys(parquet, "missing_key")


def test_csv_stays_in_memory(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "party.csv"
    pacsv.write_csv(table.select(["lot", "count", "label"]), path)
    source = TableSource.open(path)
    assert not source.streamed and source.num_rows == ROWS
    assert source.read().equals(read_table(path))
    assert as_source(source) is source


def test_unreadable_parquet_is_a_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="does not exist"):
        TableSource.open(tmp_path / "absent.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(TableError, match="cannot read"):
        TableSource.open(bad)


def test_a_table_without_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "keys.parquet"
    pq.write_table(pa.table({"lot": ["a", "b", "c"]}), path)
    encoder, x, dropped = party_features(TableSource.open(path), {"lot"})
    assert encoder is None and x.shape == (3, 0) and dropped == []
