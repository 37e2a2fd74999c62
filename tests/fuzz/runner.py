"""Run schemathesis over every operation of an in-process app with a fixed budget.

Positive cases (valid by the schema) are checked for: no 5xx, a documented status code, a body
that matches the documented schema. Negative cases (invalid by the schema) are checked for no
5xx. Failures are collected, not raised at once, so one run reports all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

# Party tensor bodies: let the fuzzer send arbitrary bytes under the tensor media type.
schemathesis.serializer.alias("application/vnd.splice.tensors", "application/octet-stream")

POSITIVE_CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance)
NEGATIVE_CHECKS = (not_a_server_error,)

Prepare = Callable[[Any, int], dict[str, str]]
"""Adjusts a case (e.g. points a path parameter at an existing object) and returns the headers
to send with it; gets the case and its running number."""


@dataclass
class FuzzReport:
    """Budget and outcome of one fuzzing run."""

    name: str
    positive_examples: int
    negative_examples: int
    operations: int = 0
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        spread = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.name}: budget {self.positive_examples} positive + {self.negative_examples} "
            f"negative examples per operation; {self.operations} operations, {self.calls} calls "
            f"in {self.seconds:.1f} s; statuses {{{spread}}}; {len(self.failures)} failures"
        )


REPORTS: list[FuzzReport] = []


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    checks: tuple[Any, ...],
    report: FuzzReport,
    prepare: Prepare,
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = prepare(case, report.calls)
        report.calls += 1
        response = case.call(headers=headers)
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        for check in checks:
            try:
                case.validate_response(response, checks=[check])
            except BaseException as exc:  # schemathesis raises an exception group
                if isinstance(exc, KeyboardInterrupt):
                    raise
                report.failures.append(
                    f"{operation.label} [{mode.value}] {check.__name__}: "
                    f"{response.status_code} {str(exc)[:800]}"
                )

    try:
        run()
    except Unsatisfiable:
        pass  # an operation without inputs has no invalid variant


def fuzz(app: Any, report: FuzzReport, prepare: Prepare) -> FuzzReport:
    """Fuzz every operation of ``app``'s OpenAPI schema; fill and return ``report``."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1
        _fuzz_operation(
            operation,
            GenerationMode.POSITIVE,
            report.positive_examples,
            POSITIVE_CHECKS,
            report,
            prepare,
        )
        if report.negative_examples:
            _fuzz_operation(
                operation,
                GenerationMode.NEGATIVE,
                report.negative_examples,
                NEGATIVE_CHECKS,
                report,
                prepare,
            )
    report.seconds = time.monotonic() - started
    REPORTS.append(report)
    return report
