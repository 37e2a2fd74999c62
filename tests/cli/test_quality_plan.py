"""benchmarks/quality.py: the default run covers every dataset of issue 17 (the 100k-board row
included), small tables run once per seed, the queue is longest first, rows keep their fields."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = module
    spec.loader.exec_module(module)
    return module


def _fate(tmp_path: Path, quality: ModuleType, rows: dict[str, int]) -> Path:
    for name, case in quality.FATE.items():
        for f in (case["label"], *case["features"]):
            path = tmp_path / f.split(":")[0]
            path.write_text("id,x\n" + "".join(f"{i},0\n" for i in range(rows.get(name, 100))))
    return tmp_path


def test_the_default_run_is_every_dataset_of_the_issue(quality: ModuleType) -> None:
    assert set(quality.ALL) == {
        "breast", "default_credit", "motor", "vehicle", "student",
        "pcb-paste-ckks", "pcb-paste-plain", "pcb-paste-100k-plain",
    }  # fmt: skip


def test_plan_runs_small_tables_per_seed_longest_first(quality: ModuleType, tmp_path: Path) -> None:
    data = _fate(tmp_path, quality, {"default_credit": 6000})
    args = argparse.Namespace(data=data, seeds=3, boards=20000)
    jobs = quality.plan(args, list(quality.ALL), tmp_path / "work")
    seeds = {j.label: j.seeds for j in jobs}
    assert seeds["default_credit"] == 1 and seeds["breast"] == 3 and seeds["motor"] == 3
    assert seeds["pcb-paste-ckks-scenario7"] == seeds["pcb-paste-100k-plain"] == 1
    assert len(jobs) == 5 + 2 + 2 + 1  # FATE, ckks and plain at two scenario seeds, 100k
    costs = [j.cost for j in jobs]
    assert costs == sorted(costs, reverse=True) and jobs[0].label == "default_credit"
    assert [j.label for j in jobs[1:3]] == ["pcb-paste-ckks-scenario7", "pcb-paste-ckks-scenario8"]
    small = quality.plan(argparse.Namespace(data=data, seeds=2, boards=1000), ["pcb-paste-plain"],
                         tmp_path)  # fmt: skip
    assert [j.seeds for j in small] == [2, 2]  # a scenario under 5,000 boards: several seeds


def test_a_row_keeps_the_issue_fields_and_each_run_time(quality: ModuleType) -> None:
    runs = [
        {"metric": "auc", "joint": j, "label_only": 0.7, "centralized": 0.81, "pooled_mlp": 0.8,
         "pooled_gbdt": 0.82, "rows": 569, "mode": "ckks", "epochs": 20}
        for j in (0.80, 0.82)
    ]  # fmt: skip
    row = quality.aggregate("breast", runs, [40.0, 50.5], [60.0, 70.0])
    for field in ("dataset", "metric", *quality.FIGURES):
        assert field in row
    assert row["joint"] == pytest.approx(0.81) and row["joint_std"] > 0
    assert row["seconds"] == 90.5 and row["run_seconds"] == [40.0, 50.5]
    assert row["cpu_seconds"] == 130.0
    assert row["bars"] == {"pooled_mlp": True, "pooled_gbdt": True, "label_only": True}
