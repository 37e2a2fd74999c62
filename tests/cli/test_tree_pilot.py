"""``splice pilot --model gbdt``: vertical trees beside pooled LightGBM, summary written; bad
tree parameters are refused with a message, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from services.cli.main import app


def _tables(tmp_path: Path, n: int = 400) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (a + 2 * b + 0.3 * rng.normal(size=n) > 0).astype(int)
    label = tmp_path / "label.csv"
    feat = tmp_path / "feat.csv"
    label.write_text(
        "id,y,a,line\n"
        + "".join(f"r{i},{y[i]},{a[i]:.5f},{'L1' if i % 3 else 'L2'}\n" for i in range(n))
    )
    feat.write_text("id,b\n" + "".join(f"r{i},{b[i]:.5f}\n" for i in range(0, n, 1) if i % 17))
    return label, feat


def test_tree_pilot_compares_with_pooled_lightgbm(tmp_path: Path) -> None:
    label, feat = _tables(tmp_path)
    args = ["pilot", "--label", f"pcb={label}:y", "--features", f"paste={feat}", "--key", "id",
            "--task", "binary", "--out", str(tmp_path / "out"), "--model", "gbdt",
            "--trees", "4", "--depth", "2", "--bins", "16"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["family"] == "gbdt" and summary["protection"] == "ckks"
    assert summary["aligned_rows"] == 400 - len(range(0, 400, 17))  # rows the supplier lacks
    # b (the feature party's) carries most of the signal: the joint trees beat the label party
    # alone and stay close to LightGBM on the pooled table
    assert summary["joint"] > summary["label_alone"] + 0.05
    assert abs(summary["joint"] - summary["lightgbm_pooled"]) < 0.05
    assert summary["bytes_on_the_wire"] > 0
    assert "LightGBM on the pooled table" in result.output


def test_tree_pilot_refuses_bad_parameters(tmp_path: Path) -> None:
    label, feat = _tables(tmp_path, 60)
    args = ["pilot", "--label", f"pcb={label}:y", "--features", f"paste={feat}", "--key", "id",
            "--task", "binary", "--out", str(tmp_path / "out"), "--model", "gbdt",
            "--learning-rate", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "learning_rate" in result.output
    assert not (tmp_path / "out" / "summary.json").exists()
