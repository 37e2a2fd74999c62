"""Print the fuzzing budget and results in the test summary (plain ``pytest -q`` shows it)."""

from __future__ import annotations

import pytest

from tests.fuzz.runner import REPORTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    terminalreporter.section("OpenAPI fuzzing (schemathesis)")
    for report in REPORTS:
        terminalreporter.write_line(report.summary())
