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


@pytest.mark.parametrize(
    ("name", "epochs", "batch", "tolerance"),
    [("breast", 20, None, 0.02), ("default_credit", 3, 1024, 0.005)],
)
def test_ckks_matches_plain(
    tmp_path: Path, name: str, epochs: int, batch: int | None, tolerance: float
) -> None:
    """Issue 4: CKKS mode trains what plain mode trains with the same keys, both with the
    default label-leakage defence; issue 17 measures the agreement over 5 seeds
    (benchmarks/ckks_agreement.py: per-seed differences at most 1e-5 on the demo)."""
    runs = {
        mode: pilot(
            tmp_path / mode,
            f"{name}_hetero_guest.csv:y",
            [f"{name}_hetero_host.csv"],
            "id",
            Task.BINARY,
            epochs=epochs,
            batch_size=batch,
            protection=ProtectionSpec.model_validate({"mode": mode}),
            # the same private job keys in both modes: the same initial weights
            key_masters={"guest": "ckks-vs-plain-guest", "host": "ckks-vs-plain-host"},
        )
        for mode in ("plain", "ckks")
    }
    assert runs["ckks"]["mode"] == "ckks" and runs["plain"]["mode"] == "plain"
    # The same computation up to CKKS noise: the first epochs' validation losses agree (1e-5
    # relative after the first epoch on breast, 0.4% after the fourth; a wrong cut layer would
    # be off from the first batch). ReLU and Adam amplify that noise over the epochs.
    curves = {
        m: [h["validation"]["loss"] for h in r["history"][: min(4, epochs)]]
        for m, r in runs.items()
    }
    assert curves["ckks"] == pytest.approx(curves["plain"], rel=0.01), curves
    assert curves["ckks"][0] == pytest.approx(curves["plain"][0], rel=1e-3), curves
    # The chosen epoch is the argmin of the validation loss: on breast's 83 validation rows the
    # last epochs' losses lie within a few per cent of each other and the noise can pick another
    # one (three ckks runs against plain, same keys: test AUC 0.0035, 0 and 0.002 apart; one
    # CI run 0.009).
    assert abs(runs["ckks"]["joint"] - runs["plain"]["joint"]) <= tolerance
    assert runs["ckks"]["key_bytes"] > 0
