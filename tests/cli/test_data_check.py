"""``splice data check``: exit codes 0 (pass), 1 (fail), 2 (cannot run), and the JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.engine.tabular import read_table
from services.scenario.pcb_paste import ScenarioFiles, generate

EXAMPLE = str(Path(__file__).parents[2] / "contracts" / "examples" / "pcb-paste-quality.yaml")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> ScenarioFiles:
    return generate(tmp_path_factory.mktemp("scenario"), boards=400, lots=20, seed=1)


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["data", "check", "--contract", EXAMPLE, *args])
    return result.exit_code, result.output


def test_passing_table_exits_0_and_writes_json(scenario: ScenarioFiles, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, text = _check(
        "--party", "paste", "--table", str(scenario.paste_supplier), "--json", str(out)
    )
    assert code == 0, text
    assert "PASS" in text and "viscosity_pa_s" in text
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["party"] == "paste" and doc["rows"] > 0
    code, text = _check("--party", "pcb", "--table", str(scenario.pcb_maker))
    assert code == 0, text


def test_failing_table_exits_1(scenario: ScenarioFiles, tmp_path: Path) -> None:
    table = read_table(scenario.paste_supplier)
    broken = table.drop_columns(["halide_content_pct"])
    path = tmp_path / "broken.csv"
    pacsv.write_csv(broken, path)
    out = tmp_path / "report.json"
    code, text = _check("--party", "paste", "--table", str(path), "--json", str(out))
    assert code == 1, text
    assert "FAIL" in text and "halide_content_pct: column is missing from the table" in text
    doc = json.loads(out.read_text())
    assert doc["passed"] is False
    assert any(not c["present"] for c in doc["columns"] if c["name"] == "halide_content_pct")


def test_wrong_unit_exits_1(scenario: ScenarioFiles, tmp_path: Path) -> None:
    units = tmp_path / "units.yaml"
    units.write_text("viscosity_pa_s: mPa.s\nmetal_content_pct: '%'\n")
    code, text = _check(
        "--party", "paste", "--table", str(scenario.paste_supplier), "--units", str(units)
    )
    assert code == 1 and "wrong unit: declared 'mPa.s'" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--party", "nobody", "--table", "{paste}"], "no party 'nobody'"),
        (["--party", "paste", "--table", "{tmp}/absent.csv"], "does not exist"),
        (["--party", "paste", "--table", "{paste}", "--units", "{tmp}/absent.yaml"], "cannot read"),
        (["--party", "paste", "--table", "{paste}", "--units", "{tmp}/list.yaml"], "must map"),
    ],
)
def test_bad_arguments_exit_2(
    scenario: ScenarioFiles, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    filled = [a.format(paste=scenario.paste_supplier, tmp=tmp_path) for a in args]
    code, text = _check(*filled)
    assert code == 2 and "error:" in text and message in text


def test_bad_contract_exits_2(scenario: ScenarioFiles, tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("schema_version: 1\n")
    result = CliRunner().invoke(
        app,
        [
            "data",
            "check",
            "--contract",
            str(bad),
            "--party",
            "paste",
            "--table",
            str(scenario.paste_supplier),
        ],
    )
    assert result.exit_code == 2 and "invalid contract" in result.output
