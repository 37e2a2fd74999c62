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
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

# Party tensor bodies: let the fuzzer send arbitrary bytes under the tensor media type.
schemathesis.serializer.alias("application/vnd.splice.tensors", "application/octet-stream")

LARGE_INTEGERS = st.one_of(
    st.integers(min_value=2**31, max_value=2**64),
    st.integers(min_value=10**19, max_value=10**400),
    st.integers(min_value=-(10**30), max_value=-(2**31)),
)
"""Integers past every column and deadline bound (the penetration test's 20 and 400 digits)."""
LONG_STRINGS = st.one_of(
    st.text(min_size=257, max_size=4000),
    LARGE_INTEGERS.map(str),
    st.just("1" + "0" * 400),
)
"""Strings past every length bound, and numbers written as text (a header or path carries text)."""


def _hostile(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.just(value)
    if isinstance(value, int):
        return st.one_of(st.just(value), LARGE_INTEGERS)
    if isinstance(value, str):
        return st.one_of(st.just(value), LONG_STRINGS)
    return st.just(value)


def _hostile_container(values: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    if not values:
        return st.just(values)
    return st.fixed_dictionaries({k: _hostile(v) for k, v in values.items()})


def _hostile_headers(values: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Headers travel as latin-1 text: long strings are limited to printable ASCII."""
    if not values:
        return st.just(values)
    text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=257)
    alternatives = st.one_of(LARGE_INTEGERS.map(str), text)
    return st.fixed_dictionaries(
        {
            k: st.one_of(st.just(v), alternatives) if k.lower() != "authorization" else st.just(v)
            for k, v in values.items()
        }
    )


def _deadline_passed(response: Any) -> bool:
    """A 504 ``deadline_exceeded``: the party's documented answer to a call that arrives with
    ``X-Splice-Deadline`` of 0 or less (the caller's own deadline had passed), not a failure."""
    if response.status_code != 504:
        return False
    try:
        return bool(response.json().get("code") == "deadline_exceeded")
    except ValueError:
        return False


def add_hostile_strategies(schema: Any) -> None:
    """Every generated path, query and header value is, some of the time, replaced by a huge
    integer or an overlong string (whatever its schema says): found by a penetration test, a
    20-digit version in a path and a 400-digit deadline header reached a 500."""

    @schema.hook  # type: ignore[misc]
    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
        return _hostile_container(path_parameters)

    @schema.hook  # type: ignore[misc]
    def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
        return _hostile_container(query)

    @schema.hook  # type: ignore[misc]
    def flatmap_headers(context: Any, headers: Any) -> st.SearchStrategy[Any]:
        return _hostile_headers(headers)


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
        if _deadline_passed(response):
            return
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
    add_hostile_strategies(schema)
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
