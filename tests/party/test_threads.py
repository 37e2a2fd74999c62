"""A party's thread settings reach torch and numpy's BLAS (whose idle threads busy-wait)."""

from __future__ import annotations

from pathlib import Path

import torch
from threadpoolctl import threadpool_info, threadpool_limits

from services.party.app import create_app
from services.party.settings import PartySettings
from tests.synthetic import make_vertical


def test_torch_threads_caps_torch_and_numpy_blas(tmp_path: Path) -> None:
    table = make_vertical(tmp_path / "data", rows=50, lots=10).features["f0"]
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):  # restored after the test
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 2 for p in blas)
        settings = PartySettings(
            name="f0", table=table, key_column="lot", data_dir=tmp_path / "p", torch_threads=1
        )
        create_app(settings)
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert all(p["num_threads"] == 1 for p in blas)
        assert torch.get_num_threads() == 1
    torch.set_num_threads(before_torch)
