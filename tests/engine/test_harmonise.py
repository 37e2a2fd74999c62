"""Data harmonisation: each rule, the threshold, privacy of the report, the example scenario."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contracts import read_contract
from contracts.schema_types import FeatureSchema
from services.engine.harmonise import (
    HarmonisationError,
    HarmonisationReport,
    UnitsError,
    check_party_table,
    check_table,
    parse_units,
    read_units,
)
from services.engine.tabular import read_table
from services.scenario.pcb_paste import generate

EXAMPLE = Path(__file__).parents[2] / "contracts" / "examples" / "pcb-paste-quality.yaml"


def _schema(*cols: dict[str, object], rate: float = 0.0) -> FeatureSchema:
    return FeatureSchema.model_validate(
        {"key_column": "lot", "columns": list(cols), "max_violation_rate": rate}
    )


TEMP = {"name": "temp", "type": "float", "unit": "degC", "range": {"min": 0, "max": 100}}
COUNT = {"name": "count", "type": "int", "range": {"min": 0, "max": 10}}
GRADE = {"name": "grade", "type": "category", "categories": ["A", "B"]}
FLAG = {"name": "flag", "type": "bool"}


def _lots(n: int) -> list[str]:
    return [f"L{i}" for i in range(n)]


def _col(report: HarmonisationReport, name: str) -> dict[str, object]:
    return next(c.model_dump() for c in report.columns if c.name == name)


def test_clean_table_passes() -> None:
    table = pa.table(
        {
            "lot": _lots(4),
            "temp": [1.0, 50.0, 99.5, 100.0],
            "count": [0, 1, 2, 10],
            "grade": ["A", "B", "A", "B"],
            "flag": [True, False, True, False],
        }
    )
    report = check_table(table, _schema(TEMP, COUNT, GRADE, FLAG))
    assert report.passed and report.rows == 4 and report.reasons == []
    assert all(c.passed and c.violation_rate == 0.0 for c in report.columns)


def test_missing_column_fails_whatever_the_threshold() -> None:
    report = check_table(pa.table({"lot": _lots(3)}), _schema(TEMP, rate=1.0))
    col = _col(report, "temp")
    assert not report.passed and col["present"] is False
    assert report.reasons == ["temp: column is missing from the table"]


def test_missing_key_column_fails() -> None:
    report = check_table(pa.table({"temp": [1.0]}), _schema(TEMP))
    assert not report.passed and "lot: column is missing from the table" in report.reasons


def test_key_column_without_missing_or_repeated_values() -> None:
    report = check_table(
        pa.table({"lot": ["L1", None, "", "L1"], "temp": [1.0] * 4}), _schema(TEMP)
    )
    assert not report.passed
    assert "lot: join key has 2 missing value(s); every row needs one" in report.reasons
    assert "lot: join key repeats 1 value(s); each row needs its own" in report.reasons


@pytest.mark.parametrize(
    ("spec", "values", "found"),
    [
        (TEMP, ["1.0", "2.0"], "string"),
        (COUNT, [1.5, 2.0], "double"),
        (GRADE, [1.5, 2.0], "double"),
        (FLAG, [0, 2], "int64"),
        (FLAG, ["yes", "no"], "string"),
    ],
)
def test_wrong_type(spec: dict[str, object], values: list[object], found: str) -> None:
    report = check_table(pa.table({"lot": _lots(2), str(spec["name"]): values}), _schema(spec))
    col = _col(report, str(spec["name"]))
    assert not report.passed and col["type_ok"] is False and col["found_type"] == found
    assert "wrong type" in report.reasons[0]


def test_compatible_storage_types() -> None:
    """Integers in a float column, whole floats in an int column, 0/1 for bool, dictionaries."""
    table = pa.table(
        {
            "lot": _lots(3),
            "temp": pa.array([1, 2, 3], pa.int32()),
            "count": [1.0, None, 3.0],
            "flag": [0, 1, None],
            "grade": pa.array(["A", "B", "A"]).dictionary_encode(),
        }
    )
    count = {**COUNT, "missing": "drop_row"}
    flag = {**FLAG, "missing": "impute_mode"}
    report = check_table(table, _schema(TEMP, count, flag, GRADE))
    assert report.passed, report.reasons


def test_out_of_range_and_not_finite() -> None:
    table = pa.table({"lot": _lots(5), "temp": [-0.1, 100.1, 50.0, math.inf, -math.inf]})
    report = check_table(table, _schema(TEMP, rate=0.5))
    col = _col(report, "temp")
    assert col["violations"] == {"out_of_range": 2, "not_finite": 2}
    assert col["violating_rows"] == 4 and col["violation_rate"] == pytest.approx(0.8)
    assert not report.passed and "range [0, 100]" in report.reasons[0]


def test_unknown_category() -> None:
    table = pa.table({"lot": _lots(4), "grade": ["A", "C", "b", None]})
    report = check_table(table, _schema({**GRADE, "missing": "impute_mode"}))
    col = _col(report, "grade")
    assert col["violations"] == {"unknown_category": 2} and col["missing"] == 1
    assert not report.passed


def test_integer_coded_categories() -> None:
    spec = {"name": "shift", "type": "category", "categories": ["1", "2", "3"]}
    table = pa.table({"lot": _lots(3), "shift": [1, 2, 4]})
    col = _col(check_table(table, _schema(spec)), "shift")
    assert col["type_ok"] is True and col["violations"] == {"unknown_category": 1}


@pytest.mark.parametrize(
    ("policy", "violating"),
    [("reject", 2), ("drop_row", 0), ("impute_mean", 0), ("impute_median", 0)],
)
def test_missing_values_follow_the_policy(policy: str, violating: int) -> None:
    table = pa.table({"lot": _lots(4), "temp": [1.0, None, math.nan, 3.0]})
    col = _col(check_table(table, _schema({**TEMP, "missing": policy}, rate=0.1)), "temp")
    assert col["missing"] == 2 and col["violating_rows"] == violating
    assert col["passed"] is (violating == 0)


def test_empty_strings_are_missing_categories() -> None:
    table = pa.table({"lot": _lots(3), "grade": ["A", "", "B"]})
    col = _col(check_table(table, _schema(GRADE, rate=0.5)), "grade")
    assert col["missing"] == 1 and col["violations"] == {"missing_value": 1}


def test_wrong_declared_unit() -> None:
    table = pa.table({"lot": _lots(2), "temp": [1.0, 2.0], "count": [1, 2]})
    units = {"temp": "degF", "count": "pcs", "not_committed": "m"}
    report = check_table(table, _schema(TEMP, COUNT, rate=1.0), declared_units=units)
    assert not report.passed
    assert report.reasons == [
        "temp: wrong unit: declared 'degF', the contract commits to 'degC'",
        "count: wrong unit: declared 'pcs', the contract commits to no unit",
    ]
    ok = check_table(table, _schema(TEMP, COUNT), declared_units={"temp": "degC"})
    assert ok.passed and _col(ok, "temp")["declared_unit"] == "degC"


def test_unit_from_parquet_metadata(tmp_path: Path) -> None:
    field = pa.field("temp", pa.float64(), metadata={"unit": "K"})
    schema = pa.schema([pa.field("lot", pa.string()), field])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"lot": _lots(2), "temp": [1.0, 2.0]}, schema=schema), path)
    table = read_table(path)
    assert not check_table(table, _schema(TEMP)).passed
    assert check_table(table, _schema(TEMP), declared_units={"temp": "degC"}).passed


def test_units_file(tmp_path: Path) -> None:
    path = tmp_path / "units.yaml"
    path.write_text("temp: degC\nratio: 1\n")
    assert read_units(path) == {"temp": "degC", "ratio": "1"}
    (tmp_path / "u.json").write_text('{"temp": "K"}')
    assert read_units(tmp_path / "u.json") == {"temp": "K"}
    for bad in (["temp"], {"temp": ""}, {"temp": None}, {"temp": True}):
        with pytest.raises(UnitsError):
            parse_units(bad)
    with pytest.raises(UnitsError, match="cannot read"):
        read_units(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("bad", "passed"), [(1, True), (2, False)])
def test_threshold_is_inclusive(bad: int, passed: bool) -> None:
    values = [200.0] * bad + [1.0] * (100 - bad)
    table = pa.table({"lot": _lots(100), "temp": values})
    report = check_table(table, _schema(TEMP, rate=0.01))
    assert report.passed is passed
    assert _col(report, "temp")["violation_rate"] == pytest.approx(bad / 100)


def test_threshold_with_inexact_floats() -> None:
    """3 of 30 rows at a 0.1 threshold: 3/30 is not exactly 0.1 in binary floating point."""
    table = pa.table({"lot": _lots(30), "temp": [500.0] * 3 + [1.0] * 27})
    assert check_table(table, _schema(TEMP, rate=0.1)).passed


def test_empty_table_fails() -> None:
    table = pa.table({"lot": pa.array([], pa.string()), "temp": pa.array([], pa.float64())})
    report = check_table(table, _schema(TEMP))
    assert not report.passed and report.rows == 0 and report.reasons == ["the table has no rows"]


def test_header_only_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("lot,temp\n")
    report = check_table(read_table(path), _schema(TEMP))
    assert not report.passed and report.reasons == ["the table has no rows"]


def test_extra_columns_are_ignored() -> None:
    table = pa.table({"lot": _lots(2), "temp": [1.0, 2.0], "secret": ["x", "y"], "z": [1, 2]})
    report = check_table(table, _schema(TEMP))
    assert report.passed and report.extra_columns == 2
    assert "secret" not in report.to_json() and "secret" not in report.to_text()


def test_report_carries_no_row_values() -> None:
    """Canaries in every kind of cell, valid or not, appear in neither the JSON nor the text."""
    canaries = ["CANARY-KEY-7f3a", "CANARY-CAT-91bd", "CANARY-EXTRA-55c2"]
    table = pa.table(
        {
            "lot": [canaries[0], "L1", "L2"],
            "temp": [123456.789, 98765.4321, 31.4159],
            "count": [7777777, 3, 4],
            "grade": [canaries[1], "A", "B"],
            "other": [canaries[2], "b", "c"],
        }
    )
    report = check_table(table, _schema(TEMP, COUNT, GRADE), declared_units={"temp": "degC"})
    assert not report.passed
    for text in (report.to_json(), report.to_text(), str(report.model_dump())):
        for planted in (*canaries, "123456", "98765", "31.41", "7777777"):
            assert planted not in text


def test_label_party_needs_label_and_join_keys() -> None:
    contract = read_contract(EXAMPLE)
    pcb = contract.party("pcb").feature_schema
    table = pa.table({"board_id": ["B1"], **{c.name: pa.nulls(1) for c in pcb.columns}})
    report = check_party_table(table, contract, "pcb")
    assert "paste_lot_id: column is missing from the table" in report.reasons
    assert "defect: column is missing from the table" in report.reasons
    roles = {c.name: c.role for c in report.columns}
    assert roles["paste_lot_id"] == "join_key" and roles["defect"] == "label"
    unlabelled = check_party_table(table, contract, "pcb", require_label=False)
    assert "defect" not in {c.name for c in unlabelled.columns}


def test_unknown_party() -> None:
    with pytest.raises(HarmonisationError, match="no party 'nobody'"):
        check_party_table(pa.table({"x": [1]}), read_contract(EXAMPLE), "nobody")


@pytest.mark.parametrize("third_party", [False, True])
def test_generated_scenario_passes_the_example_contract(tmp_path: Path, third_party: bool) -> None:
    files = generate(tmp_path, boards=3000, lots=80, seed=3, third_party=third_party)
    contract = read_contract(EXAMPLE)
    for party, path in (("pcb", files.pcb_maker), ("paste", files.paste_supplier)):
        report = check_party_table(read_table(path), contract, party)
        assert report.passed, report.to_text()
        assert report.rows > 0
        assert all(c.violating_rows == 0 for c in report.columns), report.to_text()
