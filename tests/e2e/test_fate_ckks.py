"""CKKS against plain on FATE's public vertical datasets (issue 4), in a file of its own so that
the two longest runs of the FATE suite go to another test worker than the rest of it.

Skipped with a reason where the folder is absent, as on a user's fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.protocol.messages import ProtectionSpec, Task
from tests.e2e.test_fate_datasets import pilot, pytestmark  # noqa: F401 (the skip applies here)


@pytest.mark.parametrize(
    ("name", "epochs", "batch", "tolerance"),
    [("breast", 10, None, 0.02), ("default_credit", 3, 1024, 0.005)],
)
def test_ckks_matches_plain(
    tmp_path: Path, name: str, epochs: int, batch: int | None, tolerance: float
) -> None:
    """Issue 4: CKKS mode trains what plain mode trains with the same keys, both with the
    default label-leakage defence; issue 17 measures the agreement over 5 seeds
    (benchmarks/ckks_agreement.py: per-seed differences at most 1e-5 on the demo).

    breast (569 rows) trains the small-table default: an identity feature bottom, so its
    identity path through the shared weights is what is compared (10 epochs: 150 steps; the
    defence has no ``dL/dh`` to act on there); default_credit (30,000 rows) keeps mlp bottoms
    and the defence."""
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
    # The same computation up to CKKS noise: the first two epochs' validation losses agree (a
    # wrong cut layer would be off from the first batch). The nonlinearity and Adam amplify that
    # noise over the epochs: on breast, measured with the earlier mlp bottoms and ReLU, four ckks
    # runs against plain were 1e-5 to 1.3e-4 apart (relative) after the first epoch, up to 6e-4
    # after the second, up to 1.7e-3 after the third and 0.4-1.4% after the fourth.
    curves = {
        m: [h["validation"]["loss"] for h in r["history"][: min(2, epochs)]]
        for m, r in runs.items()
    }
    assert curves["ckks"][0] == pytest.approx(curves["plain"][0], rel=1e-3), curves
    assert curves["ckks"] == pytest.approx(curves["plain"], rel=1e-2), curves
    # The chosen epoch is the argmin of the validation loss: on breast's 83 validation rows the
    # last epochs' losses lie within a few per cent of each other and the noise can pick another
    # one (three ckks runs against plain, same keys: test AUC 0.0035, 0 and 0.002 apart; one
    # CI run 0.009).
    assert abs(runs["ckks"]["joint"] - runs["plain"]["joint"]) <= tolerance
    assert runs["ckks"]["key_bytes"] > 0
