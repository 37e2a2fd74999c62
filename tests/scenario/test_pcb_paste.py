"""The pcb-paste scenario: determinism, partial key overlap, physical values, and that the joint
model clearly beats each party alone when trained with the project's engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from services.engine.tabular import read_table
from services.scenario.evaluate import measure
from services.scenario.pcb_paste import ScenarioFiles, generate

BOARDS, LOTS, SEED = 20000, 400, 7


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ScenarioFiles:
    return generate(tmp_path_factory.mktemp("two"), boards=BOARDS, lots=LOTS, seed=SEED)


@pytest.fixture(scope="module")
def files3(tmp_path_factory: pytest.TempPathFactory) -> ScenarioFiles:
    out = tmp_path_factory.mktemp("three")
    return generate(out, boards=BOARDS, lots=LOTS, seed=SEED, third_party=True)


def _values(table: pa.Table, column: str) -> npt.NDArray[Any]:
    return np.asarray(pc.drop_null(table.column(column)).to_numpy(zero_copy_only=False))


def test_api_names(files: ScenarioFiles, files3: ScenarioFiles) -> None:
    assert files.stencil_supplier is None and files.key_stencil is None
    assert (files.key_paste, files.label_binary, files.label_multiclass, files.id_column) == (
        "paste_lot_id",
        "defect",
        "defect_type",
        "board_id",
    )
    assert files3.stencil_supplier is not None and files3.stencil_supplier.is_file()
    assert files3.key_stencil == "stencil_id"


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", boards=3000, lots=60, seed=3, third_party=True)
    b = generate(tmp_path / "b", boards=3000, lots=60, seed=3, third_party=True)
    c = generate(tmp_path / "c", boards=3000, lots=60, seed=4, third_party=True)
    for name in ("pcb_maker", "paste_supplier", "stencil_supplier"):
        pa_, pb, pc_ = (getattr(f, name) for f in (a, b, c))
        assert pa_.read_bytes() == pb.read_bytes()
        assert pa_.read_bytes() != pc_.read_bytes()


def test_third_party_observes_the_same_world(files: ScenarioFiles, files3: ScenarioFiles) -> None:
    pcb, pcb3 = read_table(files.pcb_maker), read_table(files3.pcb_maker)
    assert "stencil_id" not in pcb.column_names and "stencil_id" in pcb3.column_names
    assert pcb3.drop_columns(["stencil_id"]).equals(pcb)
    assert files.paste_supplier.read_bytes() == files3.paste_supplier.read_bytes()
    assert files3.stencil_supplier is not None
    stencils = read_table(files3.stencil_supplier)
    assert stencils.column_names[0] == "stencil_id"
    assert (
        pc.all(pc.is_in(pcb3.column("stencil_id"), stencils.column("stencil_id"))).as_py() is False
    )


@pytest.mark.parametrize("key", ["paste_lot_id", "stencil_id"])
def test_keys_overlap_partly(files3: ScenarioFiles, key: str) -> None:
    pcb = read_table(files3.pcb_maker)
    supplier_path = files3.paste_supplier if key == "paste_lot_id" else files3.stencil_supplier
    assert supplier_path is not None
    supplier = read_table(supplier_path)
    listed = supplier.column(key)
    assert pc.count_distinct(listed).as_py() == supplier.num_rows  # one row per lot / stencil
    used = pc.unique(pcb.column(key))
    never_used = supplier.num_rows - pc.sum(pc.is_in(listed, used)).as_py()
    assert 0.10 <= never_used / len(used) <= 0.20  # ~15% extra supplier rows
    orphan = 1.0 - pc.mean(pc.is_in(pcb.column(key), listed).cast(pa.float64())).as_py()
    assert 0.02 <= orphan <= 0.04  # ~3% of boards reference a row the supplier lacks
    counts = np.asarray(pc.value_counts(pcb.column(key)).field("counts"))
    assert counts.max() > 4 * np.median(counts)  # skewed usage, many boards per lot


def test_paste_values_are_physical(files: ScenarioFiles) -> None:
    t = read_table(files.paste_supplier)
    ranges = {
        "metal_content_pct": (88.0, 90.5),
        "viscosity_pa_s": (150.0, 250.0),
        "thixotropic_index": (0.45, 0.65),
        "flux_acid_value_mg_koh_g": (90.0, 200.0),
        "halide_content_pct": (0.0, 0.5),
        "storage_age_days": (0, 180),
        "cold_chain_excursions": (0, 20),
    }
    for column, (lo, hi) in ranges.items():
        v = _values(t, column)
        assert lo <= v.min() and v.max() <= hi, column
    limits = {"T3": (25.0, 45.0), "T4": (20.0, 38.0), "T5": (15.0, 25.0)}
    powder = np.asarray(t.column("powder_type").to_pylist())
    d10, d50, d90 = (_values(t, f"particle_d{q}_um") for q in (10, 50, 90))
    assert np.all(d10 < d50) and np.all(d50 < d90)
    for kind, (lo, hi) in limits.items():
        sel = powder == kind
        assert sel.any()
        assert lo - 3 < np.median(d10[sel]) and np.median(d90[sel]) < hi + 3, kind
    assert set(t.column("flux_activity_class").to_pylist()) == {"ROL0", "ROL1", "REL0"}
    for column in ("viscosity_pa_s", "thixotropic_index", "flux_acid_value_mg_koh_g"):
        assert 0 < t.column(column).null_count <= 0.06 * t.num_rows, column
    assert t.column("paste_lot_id")[0].as_py().startswith("PL-")


def test_board_values_are_physical(files: ScenarioFiles) -> None:
    t = read_table(files.pcb_maker)
    assert t.num_rows == BOARDS
    assert t.column("board_id")[0].as_py() == "B-0000001"
    assert set(t.column("line").to_pylist()) == {"L1", "L2", "L3", "L4"}
    assert set(t.column("stencil_thickness_um").to_pylist()) <= {100, 120, 127, 150}
    ranges = {
        "aperture_area_ratio": (0.5, 0.9),
        "squeegee_speed_mm_s": (20.0, 150.0),
        "squeegee_pressure_n_mm": (0.15, 0.35),
        "separation_speed_mm_s": (0.1, 3.0),
        "ambient_temp_c": (20.0, 28.0),
        "relative_humidity_pct": (30.0, 70.0),
        "reflow_peak_temp_c": (235.0, 255.0),
        "time_above_liquidus_s": (45.0, 90.0),
        "component_density_per_cm2": (2.0, 30.0),
    }
    for column, (lo, hi) in ranges.items():
        v = _values(t, column)
        assert lo <= v.min() and v.max() <= hi, column
    for column in ("ambient_temp_c", "relative_humidity_pct", "time_above_liquidus_s"):
        assert 0.01 * BOARDS < t.column(column).null_count < 0.03 * BOARDS, column
    for column in ("board_id", "paste_lot_id", "defect", "defect_type"):
        assert t.column(column).null_count == 0, column


def test_labels(files: ScenarioFiles) -> None:
    t = read_table(files.pcb_maker)
    defect = _values(t, "defect")
    kind = np.asarray(t.column("defect_type").to_pylist())
    assert set(np.unique(defect)) == {0, 1}
    assert 0.10 <= defect.mean() <= 0.25
    assert np.array_equal(kind == "none", defect == 0)
    types = {"none", "insufficient", "bridging", "solder_ball", "voiding", "tombstoning"}
    assert set(kind) == types
    shares = {k: float(np.mean(kind[defect == 1] == k)) for k in types - {"none"}}
    assert min(shares.values()) > 0.03, shares


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, boards=0)
    with pytest.raises(ValueError):
        generate(tmp_path, lots=1)


def test_joint_model_beats_each_party_alone(files: ScenarioFiles) -> None:
    auc = measure(files, seeds=[0, 1], epochs=30)  # mean over two inits: robust margins
    assert 0.80 <= auc["joint"] <= 0.95, auc
    assert auc["joint"] - auc["pcb_only"] >= 0.05, auc
    assert auc["joint"] - auc["paste_only"] >= 0.08, auc


def test_parquet_holds_the_csv_tables(tmp_path: Path) -> None:
    csv = generate(tmp_path / "csv", boards=3000, lots=60, seed=3, third_party=True)
    parquet = generate(
        tmp_path / "pq", boards=3000, lots=60, seed=3, third_party=True, fmt="parquet"
    )
    for name in ("pcb_maker", "paste_supplier", "stencil_supplier"):
        c, p = read_table(getattr(csv, name)), read_table(getattr(parquet, name))
        assert getattr(parquet, name).suffix == ".parquet"
        assert p.column_names == c.column_names and p.num_rows == c.num_rows
        for column in c.column_names:
            assert p.column(column).to_pylist() == c.column(column).to_pylist(), column
