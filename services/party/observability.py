"""The party's metrics (on top of the shared HTTP ones) and its readiness checks.

Party metrics are read from the party's own counters when Prometheus scrapes, so the training,
serving and metering code paths need no metric calls of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from services.party.inference import Predictor
from services.party.metering import UsageOutbox
from services.party.metering.shipper import UsageShipper
from services.party.registry_link import RegistryLink
from services.party.state import PartyState
from services.party.training.runs import TrainingRuns
from services.web.metrics import AppMetrics
from services.web.probes import Check

NS = "splice_party"


class PartyCollector(Collector):
    """Training, serving and metering counters of one party, read at scrape time."""

    def __init__(
        self,
        state: PartyState,
        runs: TrainingRuns,
        predictor: Predictor,
        outbox: UsageOutbox,
        shipper: UsageShipper | None,
    ) -> None:
        self.state = state
        self.runs = runs
        self.predictor = predictor
        self.outbox = outbox
        self.shipper = shipper

    def collect(self) -> Iterator[Metric]:
        steps = samples = sent = received = 0
        for trainer in list(self.runs.runs.values()):
            steps += trainer.status.step
            samples += trainer.status.train_samples
            for client in trainer.clients.values():
                sent += client.traffic.sent
                received += client.traffic.received
        yield _counter("training_steps", "Training steps driven by this (label) party.", steps)
        yield _counter("training_samples", "Training samples (each run's last epoch).", samples)
        peer = CounterMetricFamily(
            f"{NS}_peer_bytes", "Body bytes exchanged with feature parties.", labels=["direction"]
        )
        peer.add_metric(["sent"], sent)
        peer.add_metric(["received"], received)
        yield peer
        he_time = CounterMetricFamily(
            f"{NS}_he_seconds",
            "Wall time in CKKS operations (this party's HE workers), by operation.",
            labels=["op"],
        )
        pool = self.state.started_pool
        for op, seconds in sorted((pool.seconds.copy() if pool is not None else {}).items()):
            he_time.add_metric([op], seconds)
        yield he_time
        yield GaugeMetricFamily(
            f"{NS}_trainings_active", "Training runs in progress.", value=self.runs.active()
        )
        yield _counter("predictions", "Prediction answers served.", self.predictor.served)
        yield _counter("prediction_rows", "Rows predicted.", self.predictor.rows_served)
        yield _counter(
            "usage_events_written", "Usage events written to the outbox.", self.predictor.served
        )
        depth = GaugeMetricFamily(
            f"{NS}_outbox_events", "Usage events in the outbox, by state.", labels=["state"]
        )
        depth.add_metric(["pending"], self.outbox.depth())
        depth.add_metric(["refused"], self.outbox.refused_count())
        yield depth
        if self.shipper is not None:
            stats = self.shipper.stats
            shipped = CounterMetricFamily(
                f"{NS}_usage_shipped_events",
                "Usage events the shipper delivered to the registry, by outcome.",
                labels=["outcome"],
            )
            shipped.add_metric(["shipped"], stats.shipped)
            shipped.add_metric(["duplicate"], stats.duplicates)
            shipped.add_metric(["refused"], stats.refused)
            yield shipped
            yield _counter("usage_shipping_failures", "Failed shipping attempts.", stats.failures)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NS}_{name}", documentation, value=value)


def party_metrics(collector: PartyCollector) -> AppMetrics:
    """The party's metric registry: HTTP metrics and ``collector``."""
    metrics = AppMetrics(NS)
    metrics.registry.register(collector)
    return metrics


def readiness(state: PartyState, link: RegistryLink | None) -> Mapping[str, Check]:
    """Ready when the party's table is loaded (loading it if needed) and, under a registry,
    the registry answers its liveness probe and issues this party's client a token (a wrong
    client id or secret makes the party not ready, naming its credentials)."""

    async def table() -> None:
        await run_in_threadpool(lambda: state.table)

    checks: dict[str, Check] = {"table": table}
    if link is not None:
        http = link.http

        async def registry() -> None:
            resp = await http.get("/healthz")
            if resp.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"registry /healthz answered {resp.status_code}",
                    request=resp.request,
                    response=resp,
                )

        checks["registry"] = registry
        checks["credentials"] = link.require_credentials
    return checks
