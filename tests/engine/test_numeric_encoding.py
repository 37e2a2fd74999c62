"""Piecewise-linear encoding of numeric columns over quantile bins (issue 17, docs/adr/0017)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.engine import streamed
from services.engine.dataset import party_features
from services.engine.source import TableSource
from services.engine.tabular import (
    EncoderState,
    FeatureEncoder,
    piecewise_linear,
    quantile_edges,
)


def _table(n: int = 600, seed: int = 4) -> pa.Table:
    rng = np.random.default_rng(seed)
    temp = rng.normal(240.0, 5.0, n)
    temp[rng.random(n) < 0.1] = np.nan
    return pa.table(
        {
            "temp": pa.array(temp),
            "speed": pa.array(rng.lognormal(3.0, 0.5, n)),
            "coated": pa.array(rng.random(n) < 0.3),
            "constant": pa.array(np.full(n, 7.0)),
            "grade": pa.array(rng.choice(["A", "B"], n)),
        }
    )


def test_components_are_the_position_through_each_bin() -> None:
    edges = [0.0, 1.0, 3.0, 7.0]
    x = np.array([-2.0, 0.0, 0.5, 1.0, 2.0, 7.0, 9.0, np.nan])
    expected = [
        [0.0, 0.0, 0.0],  # below every bin
        [0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0],
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],  # above: clipped (the standardised value keeps the rest)
        [0.0, 0.0, 0.0],  # missing: zeros (and the missing indicator)
    ]
    np.testing.assert_allclose(piecewise_linear(x, edges), expected)


def test_edges_are_distinct_quantiles_and_skip_binary_columns() -> None:
    values = np.arange(101, dtype=np.float64)
    assert quantile_edges(values, 4) == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert quantile_edges(values, 0) == quantile_edges(values, 1) == []
    assert quantile_edges(np.array([0.0, 1.0, 1.0, 0.0]), 8) == []  # two values: no bins
    assert quantile_edges(np.full(10, 3.0), 8) == []
    assert quantile_edges(np.zeros(0), 8) == []
    few = quantile_edges(np.array([1.0, 2.0, 3.0] * 30), 8)  # ties collapse
    assert few == sorted(set(few)) and 3 <= len(few) <= 9


def test_encoder_with_bins_widens_numeric_columns_only() -> None:
    table = _table()
    plain = FeatureEncoder.fit(table, table.column_names)
    binned = FeatureEncoder.fit(table, table.column_names, bins=8)
    by_name = {c.name: c for c in binned.state.columns}
    assert len(by_name["temp"].edges) == len(by_name["speed"].edges) == 9
    assert by_name["coated"].edges == by_name["constant"].edges == []
    assert binned.width == plain.width + 2 * 8
    assert len(binned.feature_names) == binned.width
    assert "speed:bin7" in binned.feature_names and "temp:missing" in binned.feature_names
    x = binned.transform(table)
    assert x.shape == (table.num_rows, binned.width) and x.dtype == np.float32
    # the standardised value and the indicator are still there, unchanged
    keep = [i for i, n in enumerate(binned.feature_names) if ":bin" not in n]
    np.testing.assert_array_equal(x[:, keep], plain.transform(table))
    # each bin holds about an eighth of the finite values: a component is 1 for the rows past it
    speed = binned.feature_names.index("speed:bin3")
    assert 0.45 < float((x[:, speed] == 1.0).mean()) < 0.55


def test_saved_state_encodes_new_rows_alike() -> None:
    table = _table()
    encoder = FeatureEncoder.fit(table, ["temp", "speed", "grade"], bins=6)
    again = FeatureEncoder(EncoderState.model_validate_json(encoder.state.model_dump_json()))
    rows = _table(50, seed=9)  # new rows, some outside the fitted range
    np.testing.assert_array_equal(again.transform(rows), encoder.transform(rows))
    # a state saved before the encoding existed (no edges) still loads and encodes as before
    old = {"columns": [{"name": "temp", "kind": "numeric", "mean": 240.0, "std": 5.0}]}
    assert FeatureEncoder(EncoderState.model_validate(old)).width == 1


def test_streamed_bins_equal_in_memory_and_sample_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table(1000)
    path = tmp_path / "party.parquet"
    pq.write_table(table, path, row_group_size=97)
    source = TableSource.open(path, batch_rows=100)
    whole_encoder, whole, _ = party_features(table, set(), bins=8)
    enc, x, _ = party_features(source, set(), bins=8)
    assert enc is not None and whole_encoder is not None
    assert [c.edges for c in enc.state.columns] == [c.edges for c in whole_encoder.state.columns]
    np.testing.assert_allclose(x, whole, rtol=1e-6, atol=1e-6)
    # past QUANTILE_SAMPLE rows the edges are the quantiles of every k-th row
    monkeypatch.setattr(streamed, "QUANTILE_SAMPLE", 300)
    enc, _, _ = party_features(TableSource.open(path, batch_rows=100), set(), bins=8)
    assert enc is not None
    speed = table.column("speed").to_numpy()
    assert enc.state.columns[1].edges == quantile_edges(speed[::4], 8)  # stride ceil(1000/300)
