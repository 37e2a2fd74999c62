"""Parties whose tables are Parquet files (streamed by row groups) train as with CSV tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.engine.tabular import read_table
from services.protocol.messages import JobState
from tests.conftest import InProcess
from tests.party.test_training import spec_for, train
from tests.synthetic import Vertical


def as_parquet(v: Vertical, folder: Path) -> Vertical:
    """The same tables as Parquet files of many small row groups."""
    folder.mkdir()

    def convert(path: Path) -> Path:
        out = folder / f"{path.stem}.parquet"
        pq.write_table(read_table(path), out, row_group_size=100)
        return out

    return Vertical(convert(v.label), {n: convert(p) for n, p in v.features.items()}, dict(v.keys))


async def test_parquet_parties_train_like_csv_parties(
    vertical: Vertical, in_process: InProcess, tmp_path: Path
) -> None:
    spec = spec_for(vertical, epochs=2)
    csv = await train(in_process(vertical), spec)
    # the same job id in new parties: the same job keys, so the same initial weights
    parquet = await train(in_process(as_parquet(vertical, tmp_path / "pq")), spec)
    assert csv.state is parquet.state is JobState.FINISHED, (csv.error, parquet.error)
    assert parquet.rows == csv.rows
    for a, b in zip(parquet.history, csv.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.validation == pytest.approx(b.validation, rel=1e-4, abs=1e-6)
    assert parquet.test == pytest.approx(csv.test, rel=1e-4, abs=1e-6)
