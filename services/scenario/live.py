"""The pcb-paste scenario after training: new paste lots and the boards printed with them.

The same data-generating process as :func:`services.scenario.pcb_paste.generate` (another seed):
the supplier ships ``lots`` new lots under new ids (``PL-N`` + 5 digits), the PCB maker prints
``boards`` boards with them, a few naming lots the supplier does not list (as in training).
With ``drift``, one process column of the PCB maker drifts: its readings shift by ``shift``
standard deviations of the column (a sensor recalibration the physics does not follow, so the
deployed model reads wrong values and its live quality drops). This is not a covariate shift a
trained model already covers: the defects follow the true values, so the mapping from reading to
outcome changes, and a model fine-tuned on recent outcomes can learn it (the demo: the reflow
peak temperature reading 2 standard deviations low, partly below the training range; a pooled
LightGBM proxy loses about 0.08 AUC to it and regains it after a fine-tune,
docs/adr/0013-retraining-and-alerts.md). Written beside the training
tables, never into them: ``later/new_lots.csv`` (supplier's schema) and ``later/new_boards.csv``
(PCB maker's schema, labels included: the outcomes that arrive hours after printing).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from services.scenario.pcb_paste import ScenarioFiles, generate

DRIFT_COLUMNS = (
    "squeegee_speed_mm_s",
    "squeegee_pressure_n_mm",
    "aperture_area_ratio",
    "reflow_peak_temp_c",
    "component_density_per_cm2",
)
"""Process columns ``drift`` may name."""


@dataclass(frozen=True, slots=True)
class LaterBatch:
    """Where :func:`later_batch` wrote the new lots and boards."""

    lots: Path
    boards: Path
    new_lots: int
    """Lots the supplier adds."""
    drift: str | None


def later_batch(
    out_dir: Path,
    files: ScenarioFiles,
    *,
    lots: int = 30,
    boards: int = 600,
    seed: int = 8,
    drift: str | None = None,
    shift: float = 2.0,
) -> LaterBatch:
    """Write new lots and boards for ``files``' scenario to ``out_dir`` (see the module)."""
    if drift is not None and drift not in DRIFT_COLUMNS:
        raise ValueError(f"drift names a process column: one of {', '.join(DRIFT_COLUMNS)}")
    work = out_dir / ".generate"
    world = generate(work, boards=boards, lots=lots, seed=seed)
    supplier = pacsv.read_csv(world.paste_supplier)
    pcb = pacsv.read_csv(world.pcb_maker)
    shutil.rmtree(work, ignore_errors=True)
    key = files.key_paste
    fresh = pc.replace_substring(pc.cast(supplier.column(key), pa.string()), "PL-", "PL-N")
    supplier = supplier.set_column(supplier.column_names.index(key), key, fresh)
    used = pc.replace_substring(pc.cast(pcb.column(key), pa.string()), "PL-", "PL-N")
    pcb = pcb.set_column(pcb.column_names.index(key), key, used)
    ids = pc.replace_substring(pc.cast(pcb.column(files.id_column), pa.string()), "B-", "B-N")
    pcb = pcb.set_column(pcb.column_names.index(files.id_column), files.id_column, ids)
    if drift is not None:
        col = pcb.column(drift).to_numpy(zero_copy_only=False).astype(np.float64)
        moved = col + shift * np.nanstd(col)
        pcb = pcb.set_column(pcb.column_names.index(drift), drift, pa.array(np.round(moved, 3)))
    out_dir.mkdir(parents=True, exist_ok=True)
    lots_path, boards_path = out_dir / "new_lots.csv", out_dir / "new_boards.csv"
    pacsv.write_csv(supplier, lots_path)
    pacsv.write_csv(pcb, boards_path)
    return LaterBatch(lots_path, boards_path, supplier.num_rows, drift)


__all__ = ["DRIFT_COLUMNS", "LaterBatch", "later_batch"]
