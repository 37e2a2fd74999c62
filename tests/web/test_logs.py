"""Structured logs: JSON lines with correlation and job ids; secrets never reach a log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from services.protocol import correlation
from services.web.logs import MASK, Redact, make_handler, redact


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("splice.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "eyJhbGciOi"),
        ("authorization: bearer abc123tokenvalue", "abc123tokenvalue"),
        ("form client_id=pcb&client_secret=s3cr3t-value&scope=x", "s3cr3t-value"),
        ('{"client_secret": "s3cr3t-value", "x": 1}', "s3cr3t-value"),
        ("db at postgresql://splice:hunter2@db.internal/registry", "hunter2"),
        ("postgresql+psycopg://u:p%40ss@h:5432/d down", "p%40ss"),
        ("login with password=hunter2 failed", "hunter2"),
        ("Basic c3BsaWNlOmh1bnRlcjI=", "c3BsaWNlOmh1bnRlcjI="),
    ],
)
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and MASK in out


def test_redact_keeps_ordinary_text() -> None:
    text = "job job-1 step 7: 1024 rows, 3.2 ms at http://party-a:8100/v1/jobs/job-1"
    assert redact(text) == text


def test_a_record_with_secrets_is_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("calling %s with %s", "https://u:pw123@registry/x", "Bearer tok.en.value")
    logger.warning("settings: %s / %r", SecretStr("hunter2"), {"client_secret": "abc"})
    try:
        raise ValueError("Bearer leaked.in.traceback")
    except ValueError:
        logger.exception("failed with client_secret=xyz987")
    text = stream.getvalue()
    for secret in ("pw123", "tok.en.value", "hunter2", "abc", "leaked.in.traceback", "xyz987"):
        assert secret not in text, secret
    first, second, third = lines(stream)
    assert first["message"] == f"calling https://u:{MASK}@registry/x with Bearer {MASK}"
    assert "**********" in str(second["message"])
    assert "exception" in third and "ValueError" in str(third["exception"])


def test_json_lines_carry_correlation_and_job_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("outside")
    tokens = correlation.bind_job("job-7")
    try:
        logger.info("inside %d", 1)
    finally:
        correlation.correlation_id.reset(tokens[0])
        correlation.job_id.reset(tokens[1])
    outside, inside = lines(stream)
    assert set(outside) == {"time", "level", "logger", "message", "correlation_id"}
    assert outside["correlation_id"] is None
    assert inside == {
        "time": inside["time"],
        "level": "INFO",
        "logger": "splice.test.logs",
        "message": "inside 1",
        "correlation_id": "job-7",
        "job_id": "job-7",
    }


def test_human_format_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPLICE_LOG_FORMAT", raising=False)
    stream = io.StringIO()
    handler = make_handler(stream=stream)
    record = logging.LogRecord(
        "splice.x", logging.INFO, __file__, 1, "token %s", ("Bearer a.b.c",), None
    )
    assert handler.filter(record)
    handler.emit(record)
    assert stream.getvalue().rstrip().endswith(f"INFO splice.x [None] token Bearer {MASK}")
    assert isinstance(handler.filters[0], Redact)


def test_correlation_ids_are_validated() -> None:
    assert correlation.valid("job-1.step:2_x") == "job-1.step:2_x"
    for bad in ("", "a b", "x" * 129, "id\nforged log line", "<script>"):
        assert correlation.valid(bad) is None
    tokens = correlation.bind_job("not a token!")
    try:
        assert correlation.job_id.get() == "not a token!"
        assert correlation.valid(correlation.current()) is not None
    finally:
        correlation.correlation_id.reset(tokens[0])
        correlation.job_id.reset(tokens[1])
