"""Prometheus metrics shared by the services: a registry per app, HTTP request counts and
latencies by route template, an access log line per request (INFO), and the ``/metrics``
endpoint (text exposition).

Every app gets its own :class:`prometheus_client.CollectorRegistry`, so several apps in one
process (tests, the in-process demo) never collide. Services register their own metrics on
:attr:`AppMetrics.registry`.
"""

from __future__ import annotations

import hmac
import logging
import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.protocol.errors import ErrorCode
from services.web.errors import error_response

UNMATCHED = "<unmatched>"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AppMetrics:
    """The app's metric registry and its HTTP metrics."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            namespace=namespace,
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            namespace=namespace,
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """All metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/jobs/{job_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetrics:
    """Pure ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics, access_log: str) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger(access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route, method = route_template(scope), str(scope.get("method", ""))
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(seconds)
            if self.log.isEnabledFor(logging.INFO):
                job = scope.get("path_params", {}).get("job_id")
                extra = {} if job is None else {"job_id": job}
                path = scope.get("path", "")
                ms = seconds * 1000
                self.log.info("%s %s %d %.1f ms", method, path, status, ms, extra=extra)


def install_metrics(
    app: FastAPI,
    metrics: AppMetrics,
    *,
    enabled: bool,
    token: SecretStr | None,
    realm: str,
    access_log: str,
) -> None:
    """Count and time every request (and log it at INFO on logger ``access_log``); serve
    ``GET /metrics`` unless ``enabled`` is false, open or, with ``token``, only to
    ``Authorization: Bearer <token>``. Not in the OpenAPI schema."""
    app.state.metrics = metrics
    app.add_middleware(HttpMetrics, metrics=metrics, access_log=access_log)
    if not enabled:
        return
    expected = None if token is None else token.get_secret_value().encode()

    async def scrape(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), expected):
                return error_response(
                    401, ErrorCode.UNAUTHENTICATED.value, "metrics need a bearer token", realm=realm
                )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
