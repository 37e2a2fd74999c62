"""The "pcb-paste" scenario: a PCB maker, its solder-paste supplier and (optionally) its stencil
supplier, each with its own table, and print defects that need all of them to be explained.

The PCB maker holds one row per board (process settings and the defect labels), the paste
supplier one row per paste lot (lot analysis certificate), the stencil supplier one row per
stencil. Tables overlap only partly on their join keys, as real ones do. Generation is vectorised
numpy and deterministic for the same arguments; see ``docs/scenario.md`` for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.scenario._mechanisms import DEFECT_TYPES, Conditions, FloatArray, draw_defects

IntArray = npt.NDArray[np.int64]
Columns = dict[str, pa.Array]
Truth = dict[str, FloatArray]

EXTRA_FRACTION = 0.15
"""Supplier rows (lots, stencils) the PCB maker never used, as a fraction of those it used."""
ORPHAN_FRACTION = 0.03
"""Fraction of boards whose lot (stencil) the supplier no longer has in its table."""
MISSING_FRACTION = 0.02
"""Fraction of values missing in each column that has missing values."""

POWDER_TYPES = ("T3", "T4", "T5")
POWDER_RANGE_UM = ((25.0, 45.0), (20.0, 38.0), (15.0, 25.0))  # IPC J-STD-005 type limits
FLUX_CLASSES = ("ROL0", "ROL1", "REL0")
FLUX_BASE_ACTIVITY = (0.0, 1.0, 0.4)
LINES = ("L1", "L2", "L3", "L4")
PRINTER_WEAR = (1.0, 1.0, 1.0, 1.4)  # L4 has the oldest printer
PLACEMENT_OFFSET = (1.0, 1.0, 2.2, 1.0)  # L3 has a worn placement head
THICKNESSES_UM = (100.0, 120.0, 127.0, 150.0)


@dataclass(frozen=True)
class ScenarioFiles:
    """Where :func:`generate` wrote the tables, and the names of their special columns."""

    pcb_maker: Path
    paste_supplier: Path
    stencil_supplier: Path | None
    key_paste: str
    key_stencil: str | None
    label_binary: str
    label_multiclass: str
    id_column: str


def _ids(prefix: str, count: int, min_width: int) -> pa.Array:
    """Identifiers ``prefix`` + zero-padded 1..count, like ``PL-000123``."""
    width = max(min_width, len(str(count)))
    digits = pc.cast(pa.array(np.arange(1, count + 1)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(digits, width=width, padding="0"), "")


def _col(
    values: FloatArray, decimals: int, missing: npt.NDArray[np.bool_] | None = None
) -> pa.Array:
    """A float column rounded to ``decimals``, with ``missing`` rows as nulls."""
    return pa.array(np.round(values, decimals), mask=missing)


def _mask(rng: np.random.Generator, n: int) -> npt.NDArray[np.bool_]:
    return rng.random(n) < MISSING_FRACTION


def _normal(
    rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float, n: int
) -> FloatArray:
    return np.clip(rng.normal(mean, sd, n), lo, hi)


@dataclass(frozen=True, slots=True)
class _Population:
    """Entities (lots or stencils) and which of them the boards use and the supplier lists."""

    count: int  # all entities, numbered 0..count-1
    listed: npt.NDArray[np.bool_]  # in the supplier's table
    usage: IntArray  # entity of each board


def _population(rng: np.random.Generator, used: int, boards: int, skew: float) -> _Population:
    """``used`` entities boards draw from with log-normal popularity, plus unused extras.

    A few used entities are unlisted (retired by the supplier); ORPHAN_FRACTION of boards use them.
    """
    extra = round(EXTRA_FRACTION * used)
    count = used + extra
    role = rng.permutation(count)  # role[i] < used: used by boards; the rest are extras
    retired = max(1, round(0.05 * used))
    listed = role >= retired  # the first `retired` used entities are unlisted
    active = np.flatnonzero((role < used) & listed)
    gone = np.flatnonzero(role < retired)
    weight = rng.lognormal(0.0, skew, active.size)
    usage = rng.choice(active, size=boards, p=weight / weight.sum())
    orphan = rng.random(boards) < ORPHAN_FRACTION
    usage[orphan] = rng.choice(gone, size=int(orphan.sum()))
    return _Population(count, listed, usage.astype(np.int64))


def _lots(rng: np.random.Generator, n: int) -> tuple[Columns, Truth]:
    """Paste lot certificate columns (as measured) and the true lot properties behind them."""
    powder = rng.choice(3, size=n, p=[0.3, 0.5, 0.2])
    lo, hi = (np.array(v)[powder] for v in zip(*POWDER_RANGE_UM, strict=True))
    span = hi - lo
    d50 = lo + span * (0.5 + 0.06 * rng.standard_normal(n))
    d10 = d50 - span * np.clip(0.36 + 0.05 * rng.standard_normal(n), 0.2, 0.5)
    d90 = d50 + span * np.clip(0.42 + 0.07 * rng.standard_normal(n), 0.25, 0.6)
    metal = np.clip(np.array([89.4, 89.1, 88.7])[powder] + rng.normal(0, 0.45, n), 88.0, 90.5)
    visc = np.clip(np.array([185.0, 195.0, 210.0])[powder] + rng.normal(0, 22, n), 150, 250)
    thixo = _normal(rng, 0.55, 0.045, 0.45, 0.65, n)
    flux = rng.choice(3, size=n, p=[0.45, 0.2, 0.35])
    acid = np.clip(np.array([135.0, 160.0, 150.0])[flux] + rng.normal(0, 14, n), 90, 200)
    halide = np.where(flux == 1, rng.uniform(0.05, 0.5, n), rng.uniform(0.0, 0.05, n))
    age = np.clip(np.floor(rng.gamma(2.0, 15.0, n)), 0, 180)
    excursions = rng.poisson(0.25 + age / 100.0).astype(np.float64)
    tack = _normal(rng, 110.0, 15.0, 60.0, 160.0, n)  # no effect on defects
    measured = {  # certificate values: true value plus measurement error
        "metal": np.clip(metal + rng.normal(0, 0.05, n), 88.0, 90.5),
        "visc": np.clip(visc + rng.normal(0, 4.0, n), 150, 250),
        "thixo": np.clip(thixo + rng.normal(0, 0.01, n), 0.45, 0.65),
        "d90": np.maximum(d90 + rng.normal(0, 0.4, n), d50 + 0.5),
    }
    columns = {
        "powder_type": pa.array(POWDER_TYPES).take(pa.array(powder)),
        "metal_content_pct": _col(measured["metal"], 2),
        "viscosity_pa_s": _col(measured["visc"], 1, _mask(rng, n)),
        "thixotropic_index": _col(measured["thixo"], 3, _mask(rng, n)),
        "particle_d10_um": _col(d10, 1),
        "particle_d50_um": _col(d50, 1),
        "particle_d90_um": _col(measured["d90"], 1),
        "flux_activity_class": pa.array(FLUX_CLASSES).take(pa.array(flux)),
        "flux_acid_value_mg_koh_g": _col(acid, 1, _mask(rng, n)),
        "halide_content_pct": _col(halide, 3),
        "tack_force_gf": _col(tack, 1, _mask(rng, n)),
        "storage_age_days": pa.array(age.astype(np.int64)),
        "cold_chain_excursions": pa.array(excursions.astype(np.int64)),
    }
    activity = np.array(FLUX_BASE_ACTIVITY)[flux] + 0.4 * (acid - 150.0) / 15.0 + halide
    truth = {
        "metal": metal,
        "visc": visc,
        "thixo": thixo,
        "d90": d90,
        "activity": activity,
        "age": age,
        "excursions": excursions,
    }
    return columns, truth


def _stencils(rng: np.random.Generator, n: int) -> tuple[Columns, Truth]:
    """Stencil supplier columns and true stencil properties (thickness is the PCB maker's)."""
    thickness = np.array(THICKNESSES_UM)[rng.choice(4, size=n, p=[0.2, 0.35, 0.3, 0.15])]
    rough = np.clip(rng.lognormal(np.log(0.6), 0.35, n), 0.15, 1.6)
    coated = rng.random(n) < 0.35
    prints_k = np.round(rng.uniform(0.0, 120.0, n), 1)
    tension = _normal(rng, 42.0, 4.0, 30.0, 55.0, n)
    columns = {
        "aperture_wall_roughness_um": _col(rough, 2, _mask(rng, n)),
        "nano_coating": pa.array(coated),
        "stencil_age_kprints": _col(prints_k, 1),
        "tension_n_cm": _col(tension, 1),
    }
    truth = {
        "thickness": thickness,
        "rough": rough,
        "coated": coated.astype(np.float64),
        "prints_k": prints_k,
        "tension": tension,
    }
    return columns, truth


def _process(rng: np.random.Generator, n: int) -> Truth:
    """True print and reflow settings of each board (line as an index)."""
    line = rng.choice(4, size=n, p=[0.3, 0.3, 0.25, 0.15]).astype(np.float64)
    peak = _normal(rng, 245.0, 4.0, 235.0, 255.0, n)
    return {
        "line": line,
        "aperture_area_ratio": 0.5 + 0.4 * rng.beta(2.2, 2.2, n),
        "squeegee_speed_mm_s": np.clip(rng.lognormal(np.log(55.0), 0.45, n), 20, 150),
        "squeegee_pressure_n_mm": _normal(rng, 0.25, 0.035, 0.15, 0.35, n),
        "separation_speed_mm_s": np.exp(rng.uniform(np.log(0.1), np.log(3.0), n)),
        "ambient_temp_c": _normal(rng, 24.0, 1.5, 20.0, 28.0, n),
        "relative_humidity_pct": np.clip(rng.normal(48.0, 8.0, n) + 5.0 * (line == 3), 30, 70),
        "reflow_peak_temp_c": peak,
        "time_above_liquidus_s": np.clip(65 + 1.2 * (peak - 245) + rng.normal(0, 8, n), 45, 90),
        "component_density_per_cm2": np.clip(rng.lognormal(np.log(8.0), 0.45, n), 2, 30),
    }


_DECIMALS = {"squeegee_pressure_n_mm": 3, "separation_speed_mm_s": 2, "aperture_area_ratio": 3}
_MISSING = (
    "separation_speed_mm_s",
    "ambient_temp_c",
    "relative_humidity_pct",
    "time_above_liquidus_s",
)


PARQUET_ROW_GROUP = 65536
"""Rows per Parquet row group (what a party streams at a time)."""


def _write(table: Columns, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.table(table), path, row_group_size=PARQUET_ROW_GROUP)
    else:
        pacsv.write_csv(pa.table(table), path)
    return path


def _supplier(key: str, ids: pa.Array, pop: _Population, cols: Columns) -> Columns:
    """The supplier's table: its listed entities only."""
    keep = pa.array(np.flatnonzero(pop.listed))
    return {key: ids.take(keep)} | {k: v.take(keep) for k, v in cols.items()}


def generate(
    out_dir: Path,
    *,
    boards: int = 20000,
    lots: int = 400,
    seed: int = 7,
    third_party: bool = False,
    fmt: Literal["csv", "parquet"] = "csv",
) -> ScenarioFiles:
    """Write the scenario's tables to ``out_dir`` (created if needed) and say where they are.

    ``lots`` is the number of paste lots the PCB maker's boards used; the supplier's table lists
    most of them plus EXTRA_FRACTION more. The same arguments always give the same bytes, and the
    boards, lots and labels do not depend on ``third_party``: it only adds the stencil supplier's
    table and the ``stencil_id`` column, explaining part of what was unexplained noise.
    ``fmt="parquet"`` writes Parquet files of PARQUET_ROW_GROUP-row groups instead of CSV.
    """
    if boards < 1 or lots < 2:
        raise ValueError(f"need boards >= 1 and lots >= 2, got boards={boards}, lots={lots}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    lot_rng, lot_use_rng, stencil_rng, stencil_use_rng, board_rng, outcome_rng = streams
    lot_pop = _population(lot_use_rng, lots, boards, skew=1.0)
    stencil_pop = _population(stencil_use_rng, max(8, lots // 8), boards, skew=0.8)
    lot_cols, lot = _lots(lot_rng, lot_pop.count)
    stencil_cols, stencil = _stencils(stencil_rng, stencil_pop.count)
    proc = _process(board_rng, boards)
    line = proc.pop("line").astype(np.int64)
    lu, su = lot_pop.usage, stencil_pop.usage
    conditions = Conditions(
        metal_content_pct=lot["metal"][lu],
        viscosity_pa_s=lot["visc"][lu],
        thixotropic_index=lot["thixo"][lu],
        d90_um=lot["d90"][lu],
        flux_activity=lot["activity"][lu],
        storage_age_days=lot["age"][lu],
        cold_chain_excursions=lot["excursions"][lu],
        stencil_thickness_um=stencil["thickness"][su],
        area_ratio=proc["aperture_area_ratio"],
        squeegee_speed_mm_s=proc["squeegee_speed_mm_s"],
        squeegee_pressure_n_mm=proc["squeegee_pressure_n_mm"],
        separation_speed_mm_s=proc["separation_speed_mm_s"],
        ambient_temp_c=proc["ambient_temp_c"],
        relative_humidity_pct=proc["relative_humidity_pct"],
        reflow_peak_c=proc["reflow_peak_temp_c"],
        time_above_liquidus_s=proc["time_above_liquidus_s"],
        component_density_cm2=proc["component_density_per_cm2"],
        printer_wear=np.array(PRINTER_WEAR)[line],
        placement_offset=np.array(PLACEMENT_OFFSET)[line],
        wall_roughness_um=stencil["rough"][su],
        nano_coated=stencil["coated"][su],
        stencil_prints_k=stencil["prints_k"][su],
        stencil_tension_n_cm=stencil["tension"][su],
    )
    defect, kind = draw_defects(conditions, outcome_rng)

    lot_ids, stencil_ids = _ids("PL-", lot_pop.count, 6), _ids("ST-", stencil_pop.count, 4)
    pcb: Columns = {
        "board_id": _ids("B-", boards, 7),
        "paste_lot_id": lot_ids.take(pa.array(lu)),
    }
    if third_party:
        pcb["stencil_id"] = stencil_ids.take(pa.array(su))
    pcb["line"] = pa.array(LINES).take(pa.array(line))
    pcb["stencil_thickness_um"] = pa.array(conditions.stencil_thickness_um.astype(np.int64))
    for name, values in proc.items():
        missing = _mask(board_rng, boards) if name in _MISSING else None
        pcb[name] = _col(values, _DECIMALS.get(name, 1), missing)
    pcb["defect"] = pa.array(defect)
    pcb["defect_type"] = pa.array(DEFECT_TYPES).take(pa.array(kind))

    out_dir.mkdir(parents=True, exist_ok=True)
    paste = _supplier("paste_lot_id", lot_ids, lot_pop, lot_cols)
    stencil_path: Path | None = None
    if third_party:
        stencils = _supplier("stencil_id", stencil_ids, stencil_pop, stencil_cols)
        stencil_path = _write(stencils, out_dir / f"stencil_supplier.{fmt}")
    return ScenarioFiles(
        pcb_maker=_write(pcb, out_dir / f"pcb_maker.{fmt}"),
        paste_supplier=_write(paste, out_dir / f"paste_supplier.{fmt}"),
        stencil_supplier=stencil_path,
        key_paste="paste_lot_id",
        key_stencil="stencil_id" if third_party else None,
        label_binary="defect",
        label_multiclass="defect_type",
        id_column="board_id",
    )
