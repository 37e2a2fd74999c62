"""End to end: ``splice pilot`` starts real party processes and trains over loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic import make_vertical

pytestmark = pytest.mark.e2e

SUMMARY_KEYS = {
    "task",
    "parties",
    "rows",
    "metric",
    "joint",
    "label_only",
    "centralized",
    "train_seconds",
    "history",
    "samples_per_second",
    "bytes_sent",
    "epochs",
    "mode",
    "pooled_gbdt",
    "pooled_mlp",
}


def splice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_pilot_two_feature_parties_over_http(tmp_path: Path) -> None:
    v = make_vertical(tmp_path / "data", rows=3000, lots=120, seed=21, parties=2)
    out = tmp_path / "out"
    result = splice(
        "pilot",
        "--label", f"maker={v.label}:y",
        "--features", f"f0={v.features['f0']}:lot",
        "--features", f"f1={v.features['f1']}:part1",
        "--key", "lot",
        "--task", "binary",
        "--epochs", "10",
        "--protection", "plain", "--no-defence",
        "--id-column", "row_id",
        "--out", str(out),
        cwd=Path.cwd(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["metric"] == "auc" and summary["task"] == "binary"
    assert [p["name"] for p in summary["parties"]] == ["maker", "f0", "f1"]
    assert summary["joint"] == pytest.approx(summary["centralized"], abs=0.01)
    assert summary["joint"] > summary["label_only"] + 0.05
    assert summary["bytes_sent"] > 0 and summary["samples_per_second"] > 0
    # the pooled references see every party's columns: they beat the label party alone too
    for ref in ("pooled_gbdt", "pooled_mlp"):
        assert summary[ref] > summary["label_only"] + 0.05, ref
        assert summary["test_metrics"][ref]["auc"] == summary[ref]
    assert summary["references"]["pooled_gbdt"]["chosen"]["rounds"] >= 1
    assert "pooled LightGBM" in result.stdout
    assert (out / "curves.png").stat().st_size > 10_000
    assert "joint (split, over HTTP)" in result.stdout
    # every party process was stopped: their logs exist and nobody is left listening
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs == ["f0.log", "f1.log", "maker.log"]
    assert "Traceback" not in "".join(p.read_text() for p in (out / "logs").iterdir())


def test_pilot_rejects_bad_arguments_clearly(tmp_path: Path) -> None:
    v = make_vertical(tmp_path / "data", rows=300, lots=20)
    result = splice(
        "pilot",
        "--label", f"maker={v.label}",
        "--features", f"f0={v.features['f0']}",
        "--key", "lot", "--task", "binary", "--out", str(tmp_path / "o"),
        cwd=Path.cwd(),
    )  # fmt: skip
    assert result.returncode == 2
    assert "label column" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    result = splice(
        "pilot",
        "--label", f"maker={v.label}:y",
        "--features", f"f0={tmp_path / 'missing.csv'}",
        "--key", "lot", "--task", "binary", "--out", str(tmp_path / "o"),
        cwd=Path.cwd(),
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not exist" in result.stdout
