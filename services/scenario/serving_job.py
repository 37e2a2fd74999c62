"""A small open-mode job of the pcb-paste scenario, for serving checks (tests and benchmarks).

The PCB maker (label party ``pcb``) and the paste supplier (``paste``, joined on the paste lot
by PSI) train one epoch of a small model; :func:`board_rows` gives the PCB maker's boards as
prediction rows. ``tests/e2e/test_live_serving.py`` and ``benchmarks/new_lots.py`` both use it.
"""

from __future__ import annotations

from typing import Any, Literal

import pyarrow.csv as pacsv

from services.protocol.messages import (
    FeaturePartyRef,
    ModelSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
)
from services.scenario.pcb_paste import ScenarioFiles


def serving_job(
    files: ScenarioFiles,
    job_id: str,
    paste_url: str,
    *,
    seed: int,
    width: int = 8,
    batch_size: int = 64,
    mode: Literal["plain", "ckks"] = "plain",
) -> TrainingSpec:
    """One epoch of a small model (the PCB maker's bottom ``2 * width`` wide, then ``width``)."""
    return TrainingSpec(
        job_id=job_id,
        task=Task.BINARY,
        label_column=files.label_binary,
        party="pcb",
        feature_parties=[FeaturePartyRef(name="paste", url=paste_url, key_column=files.key_paste)],
        model=ModelSpec(
            bottom={
                "pcb": SegmentSpec(hidden=[2 * width], out=width),
                "paste": SegmentSpec(out=8),
            },
            top=TopSpec(interactive=8, hidden=[width]),
        ),
        epochs=1,
        batch_size=batch_size,
        seed=seed,
        id_column=files.id_column,
        exclude_columns=[files.label_multiclass],
        alignment="psi",
        protection={"mode": mode},
    )


def board_rows(files: ScenarioFiles) -> list[dict[str, Any]]:
    """Every board of the PCB maker's table as a prediction row (no label, no board id)."""
    table = pacsv.read_csv(files.pcb_maker)
    drop = {files.label_binary, files.label_multiclass, files.id_column}
    rows: list[dict[str, Any]] = table.select(
        [c for c in table.column_names if c not in drop]
    ).to_pylist()
    return rows


__all__ = ["board_rows", "serving_job"]
