"""The pooled references (services/cli/pooled.py) on a small generated vertical dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from services.cli.baselines import LocalData, join_locally
from services.cli.pilot import PartyTable, PilotConfig
from services.cli.pooled import GBDT_GRID, pooled_gbdt, pooled_matrix, pooled_mlp
from services.engine.split import TEST
from services.engine.tasks import Labels
from services.protocol.messages import Task
from tests.synthetic import make_vertical


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalData:
    v = make_vertical(tmp_path_factory.mktemp("pooled"), rows=2000, lots=120, seed=5)
    cfg = PilotConfig(
        label=PartyTable("maker", v.label, "y"),
        features=[PartyTable("f0", v.features["f0"], "lot")],
        key="lot",
        task=Task.BINARY,
        out=Path("unused"),
        id_column="row_id",
    )
    spec = cfg.spec({})
    return join_locally(spec, str(v.label), {"f0": str(v.features["f0"])}, {"f0": "lot"})


def test_pooled_matrix_holds_every_party(local: LocalData) -> None:
    x = pooled_matrix(local)
    widths = sum(m.shape[1] for m in local.inputs.values())
    assert x.shape == (local.data.labels.values.shape[0], widths)


def test_references_learn_the_cross_party_signal_on_the_test_rows(local: LocalData) -> None:
    # one thread: this process's OpenMP runtime (started by torch) busy-waits
    gbdt, mlp = pooled_gbdt(local, threads=1), pooled_mlp(local)
    assert gbdt.test["auc"] > 0.75 and mlp.test["auc"] > 0.75
    assert {k: v for k, v in gbdt.chosen.items() if k != "rounds"} in list(GBDT_GRID)
    # measured on the test rows: flipping only their labels turns the AUC around
    flipped = local.data.labels.values.copy()
    test = np.flatnonzero(local.data.splits == TEST)
    flipped[test] = 1 - flipped[test]
    labels = Labels(Task.BINARY, flipped, local.data.labels.classes)
    other = LocalData(dataclasses.replace(local.data, labels=labels), local.inputs)
    assert pooled_mlp(other).test["auc"] == pytest.approx(1 - mlp.test["auc"], abs=1e-9)
