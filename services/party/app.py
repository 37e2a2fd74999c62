"""The party service application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import torch
from fastapi import FastAPI
from threadpoolctl import threadpool_limits

from contracts.limits import ServingTerms
from services.party.api.errors import install_error_handlers
from services.party.api.routes import health, predict, segments, stream, table, training
from services.party.families import families
from services.party.inference import Predictor
from services.party.inference.incremental import IncrementalAligner
from services.party.inference.monitor import Monitor
from services.party.inference.outcomes import STORE_FILE as OUTCOMES_FILE
from services.party.inference.outcomes import OutcomeStore
from services.party.inference.quota import KeyQuota
from services.party.metering import UsageOutbox
from services.party.metering.observations import ServingObserver
from services.party.metering.outbox import ObservationOutbox
from services.party.metering.shipper import UsageShipper, observation_sender, registry_sender
from services.party.observability import PartyCollector, party_metrics, readiness
from services.party.registry_link import RegistryLink
from services.party.revocations import OpenStreams, RevocationFeed
from services.party.settings import PartySettings
from services.party.state import PartyState
from services.party.training.runs import ClientFactory, TrainingRuns, default_client
from services.web.correlation import CorrelationId
from services.web.limits import BodyLimit
from services.web.logs import configure_logging
from services.web.metrics import install_metrics
from services.web.openapi import ERROR_RESPONSES
from services.web.probes import install_probes
from services.web.ratelimit import LocalRateLimiter


def warm_up() -> None:
    """Pay torch's lazy imports (the first optimizer pulls in torch._dynamo, seconds) at start-up,
    not during the first job."""
    param = torch.nn.Parameter(torch.zeros(1))
    for optimizer in (torch.optim.Adam([param]), torch.optim.SGD([param], lr=0.1)):
        optimizer.zero_grad()
        torch.autograd.backward(param.sum())
        optimizer.step()


def create_app(
    settings: PartySettings,
    *,
    client_factory: ClientFactory = default_client,
    registry_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build a party service for ``settings``. Nothing happens at import time.

    With ``settings.registry_url`` every job and training endpoint requires a registry-issued
    token and an active contract, and a background task ships the usage outbox to the registry
    while the app runs; without it the party runs open (local pilots only).
    ``registry_transport`` lets tests reach an in-process registry.
    """
    configure_logging()
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
        # numpy's OpenBLAS (the links' float64 products) would otherwise start a thread per
        # core that busy-waits between calls: 80% of a core at the label party (measured),
        # taken from the feature parties and the training thread.
        threadpool_limits(limits=settings.torch_threads, user_api="blas")
    warm_up()
    state = PartyState(settings)
    link = RegistryLink(settings, registry_transport) if settings.registry_url else None
    runs = TrainingRuns(state, client_factory, link)
    outbox = UsageOutbox(settings.outbox_file)
    observations = ObservationOutbox(settings.observations_file)
    observer = ServingObserver(observations)
    shipper = observation_shipper = None
    if link is not None:
        batch, cap = settings.usage_batch_size, settings.usage_backoff_cap_seconds
        shipper = UsageShipper(outbox, registry_sender(link), batch_size=batch, backoff_cap=cap)
        observation_shipper = UsageShipper(
            observations, observation_sender(link), batch_size=batch, backoff_cap=cap
        )
        observer.notify = observation_shipper.notify
    quota = KeyQuota(settings.key_quota_file)
    open_terms = None
    if settings.serving_max_keys_per_caller is not None:
        open_terms = ServingTerms(max_keys_per_caller=settings.serving_max_keys_per_caller)
    outcome_store = OutcomeStore(settings.data_dir / OUTCOMES_FILE)
    predictor = Predictor(
        runs,
        outbox,
        link,
        shipper.notify if shipper is not None else None,
        quota=quota,
        open_terms=open_terms,
        aligner=IncrementalAligner(state.psi_pool, settings.serving_alignment_ttl_seconds),
        outcomes=outcome_store,
    )
    monitor = Monitor(predictor, outcome_store)
    shippers = [s for s in (shipper, observation_shipper) if s is not None]
    streams = OpenStreams()
    revocations = None
    if link is not None and settings.revocation_feed:
        revocations = RevocationFeed(link, streams, wait=settings.revocation_wait_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for started in shippers:
            started.start()
        if revocations is not None:
            revocations.start()
        runs.recover()  # trainings a crash or a shutdown cut short continue from their last cut
        yield
        if revocations is not None:
            await revocations.stop()
        for running in shippers:
            await running.stop()
        await runs.shutdown()
        state.close()
        outbox.close()
        observations.close()
        quota.close()
        outcome_store.close()
        if link is not None:
            await link.aclose()

    app = FastAPI(
        title=f"Splice party service ({settings.name})",
        version="1",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        description="A party's model segment and data access. Raw data never leaves it.",
    )
    app.state.party = state
    app.state.runs = runs
    app.state.registry = link
    app.state.outbox = outbox
    app.state.shipper = shipper
    app.state.observations = observations
    app.state.observer = observer
    app.state.observation_shipper = observation_shipper
    app.state.streams = streams
    app.state.revocations = revocations
    app.state.predictor = predictor
    app.state.monitor = monitor
    app.state.caller_limiter = LocalRateLimiter(settings.caller_rate_per_second)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(segments.router)
    app.include_router(stream.router)
    app.include_router(training.router)
    app.include_router(predict.router)
    app.include_router(table.router)
    for family in families().values():  # each family's own feature-party endpoints
        for router in family.routers():
            app.include_router(router)
    install_probes(
        app,
        lambda: readiness(state, link),
        timeout=settings.readiness_timeout_seconds,
        service="party",
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_metrics(  # outside the body limit: a 413 is counted too
        app,
        party_metrics(PartyCollector(state, runs, predictor, outbox, shipper)),
        enabled=settings.metrics_enabled,
        token=settings.metrics_token,
        access_log=f"splice.access.party.{settings.name}",
        realm="splice-party",
    )
    app.add_middleware(CorrelationId)
    return app
