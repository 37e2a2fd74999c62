"""The registry's metrics (on top of the shared HTTP ones) and its readiness checks."""

from __future__ import annotations

from collections.abc import Mapping

from alembic.runtime.migration import MigrationContext
from fastapi import Request
from prometheus_client import Counter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.web.metrics import AppMetrics
from services.web.probes import Check


class RegistryMetrics(AppMetrics):
    """``splice_registry_*``: HTTP metrics, tokens issued, usage events ingested by outcome."""

    def __init__(self) -> None:
        super().__init__("splice_registry")
        self.tokens_issued = Counter(
            "tokens_issued",
            "Access tokens issued at /oauth/token.",
            namespace=self.namespace,
            registry=self.registry,
        )
        self.usage_events = Counter(
            "usage_events",
            "Usage events ingested at /v1/usage, by outcome (accepted, duplicate, refused).",
            ("outcome",),
            namespace=self.namespace,
            registry=self.registry,
        )
        for outcome in ("accepted", "duplicate", "refused"):
            self.usage_events.labels(outcome)

    def usage(self, accepted: int, duplicates: int, refused: int) -> None:
        """Count one usage batch's outcome."""
        self.usage_events.labels("accepted").inc(accepted)
        self.usage_events.labels("duplicate").inc(duplicates)
        self.usage_events.labels("refused").inc(refused)


def metrics_of(request: Request) -> RegistryMetrics:
    """The registry metrics of the app serving ``request``."""
    metrics: RegistryMetrics = request.app.state.metrics
    return metrics


def schema_at_head(engine: Engine, expected: str) -> None:
    """Raise unless the database answers and is at revision ``expected`` (this build's head)."""
    with engine.connect() as connection:
        heads = MigrationContext.configure(connection).get_current_heads()
    if heads != (expected,):
        raise RuntimeError(f"schema at {list(heads)}, this build needs {expected!r}")


def readiness(engine: Engine, expected: str) -> Mapping[str, Check]:
    """The registry is ready when its database answers at the expected schema revision."""

    async def database() -> None:
        await run_in_threadpool(schema_at_head, engine, expected)

    return {"database": database}
