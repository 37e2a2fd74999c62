"""Acceptance on FATE's public vertical datasets (read from ../shared/data/fate, never committed).

Skipped with a reason where the folder is absent, as on a user's fresh clone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from services.cli.pilot import PilotConfig, parse_party, run_pilot
from services.protocol.messages import ProtectionSpec, Task

FATE = Path(os.environ.get("SPLICE_FATE_DATA", Path(__file__).parents[3] / "shared/data/fate"))
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.fate,
    pytest.mark.skipif(
        not (FATE / "breast_hetero_guest.csv").is_file(),
        reason=f"FATE datasets not found at {FATE} (set SPLICE_FATE_DATA)",
    ),
]


EXACT = ProtectionSpec.model_validate({"mode": "plain", "defence": {"enabled": False}})
"""Issue 2's acceptance compares the split computation with centralized training: no defence."""


def pilot(tmp_path: Path, label: str, features: list[str], key: str, task: Task, **kw: Any) -> Any:
    kw.setdefault("protection", EXACT)
    cfg = PilotConfig(
        label=parse_party(f"guest={FATE / label}", label=True),
        features=[parse_party(f"{n}={FATE / f}", label=False) for n, f in features_of(features)],
        key=key,
        task=task,
        out=tmp_path,
        **kw,
    )
    return run_pilot(cfg, Console(quiet=True))


def features_of(features: list[str]) -> list[tuple[str, str]]:
    return [(f"host{i}" if len(features) > 1 else "host", f) for i, f in enumerate(features)]


def test_breast_reaches_centralized(tmp_path: Path) -> None:
    s = pilot(tmp_path, "breast_hetero_guest.csv:y", ["breast_hetero_host.csv"], "id", Task.BINARY)
    assert abs(s["joint"] - s["centralized"]) <= 0.01


def test_default_credit_reaches_centralized_and_beats_guest(tmp_path: Path) -> None:
    s = pilot(
        tmp_path,
        "default_credit_hetero_guest.csv:y",
        ["default_credit_hetero_host.csv"],
        "id",
        Task.BINARY,
        epochs=10,
    )
    assert abs(s["joint"] - s["centralized"]) <= 0.01
    assert s["joint"] > s["label_only"]


def test_motor_two_hosts_reaches_centralized_r2(tmp_path: Path) -> None:
    s = pilot(
        tmp_path,
        "motor_hetero_guest.csv:motor_speed",
        ["motor_hetero_host_1.csv", "motor_hetero_host_2.csv"],
        "idx",
        Task.REGRESSION,
        epochs=40,
        patience=8,
    )
    assert s["metric"] == "r2"
    assert [p["name"] for p in s["parties"]] == ["guest", "host0", "host1"]
    assert abs(s["joint"] - s["centralized"]) <= 0.02
    assert s["joint"] > s["label_only"]


def test_vehicle_multiclass_reaches_centralized(tmp_path: Path) -> None:
    s = pilot(
        tmp_path,
        "vehicle_scale_hetero_guest.csv:y",
        ["vehicle_scale_hetero_host.csv"],
        "id",
        Task.MULTICLASS,
        epochs=60,
        patience=10,
    )
    assert s["metric"] == "accuracy"
    assert abs(s["joint"] - s["centralized"]) <= 0.01
    # Every party draws its initial weights from its private job key (issue 13), so the joint
    # model and the guest-alone model are independent draws, and on vehicle's 123 test rows one
    # draw against another is no measure: four draws on a quiet machine gave joint 0.748-0.805
    # and guest alone 0.675-0.813; one CI run at load 8 saw 0.691 against 0.748. The guest
    # comparison is a mean over seeds in benchmarks/quality.py; here the split model must equal
    # the centralized one (above) and be far above chance (4 classes, about 0.26).
    assert s["joint"] >= 0.6
