"""The registry service application factory."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.registry import migrate
from services.registry.api.errors import install_error_handlers
from services.registry.api.routes import (
    audit,
    contracts,
    deployment,
    health,
    invitations,
    jobs,
    oauth,
    oauth_clients,
    organisations,
    people,
    reports,
    revocations,
    usage,
    usage_reports,
)
from services.registry.console import install_console
from services.registry.credentials import SecretHasher
from services.registry.db import dispose, make_engine, session_factory
from services.registry.oauth.keys import KeyVault
from services.registry.observability import RegistryMetrics, readiness
from services.registry.settings import RegistrySettings
from services.web.correlation import CorrelationId
from services.web.limits import BodyLimit
from services.web.logs import configure_logging
from services.web.metrics import install_metrics
from services.web.openapi import ERROR_RESPONSES
from services.web.probes import install_probes

log = logging.getLogger("splice.registry")


def create_app(settings: RegistrySettings, *, engine: Engine | None = None) -> FastAPI:
    """Build the registry for ``settings``. Nothing happens at import time.

    Refuses to build (:class:`services.registry.migrate.SchemaError`) unless the database is at
    exactly this build's newest migration: an unmigrated database and one migrated by a newer
    Splice are both stopped here, with what to do in the message. ``engine`` replaces the one
    made from ``settings.database_url`` (the caller then disposes it).
    """
    configure_logging()
    if settings.allow_insecure_http:
        # the operator's explicit choice (a trusted private network): Authlib's token endpoint
        # otherwise refuses a plain-http issuer with insecure_transport
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    url = settings.database_url.get_secret_value()
    revision = migrate.check_schema(url)
    owned = engine is None
    db = engine if engine is not None else make_engine(url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await run_in_threadpool(dispose, db)

    app = FastAPI(
        title="Splice registry",
        version="1",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        description=(
            "Organisations, OAuth clients, contracts and the audit log of a Splice network. "
            "Every error answers `{code, message, detail}`."
        ),
    )
    app.state.settings = settings
    app.state.engine = db
    app.state.sessions = session_factory(db)
    app.state.hasher = SecretHasher.from_settings(settings)
    app.state.vault = KeyVault(settings.key_encryption_key)
    if not app.state.vault.encrypts:
        log.warning(
            "SPLICE_REGISTRY_KEY_ENCRYPTION_KEY is not set: token signing keys are stored "
            "unencrypted (acceptable for development only)"
        )
    app.state.schema_revision = revision
    install_error_handlers(app)
    routers = (
        health,
        invitations,
        organisations,
        oauth_clients,
        people,
        oauth,
        audit,
        contracts,
        jobs,
        deployment,
        usage,
        usage_reports,
        reports,
        revocations,
    )
    for module in routers:
        app.include_router(module.router)
    if settings.console_enabled:
        install_console(app)
    install_probes(
        app,
        lambda: readiness(db, revision),
        timeout=settings.readiness_timeout_seconds,
        service="registry",
    )
    # console forms answer an oversize body themselves: the form again, the error on its field
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, forms=("/console/", "/oauth/authorize")
    )
    install_metrics(  # outside the body limit: a 413 is counted too
        app,
        RegistryMetrics(),
        enabled=settings.metrics_enabled,
        token=settings.metrics_token,
        access_log="splice.access.registry",
        realm="splice-registry",
    )
    app.add_middleware(CorrelationId)
    return app
