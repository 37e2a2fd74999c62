"""Liveness (``/healthz``) and readiness (``/readyz``) probes, outside the OpenAPI schema.

``/healthz`` answers 200 while the process serves HTTP and looks at nothing else. ``/readyz``
runs the service's readiness checks concurrently, each bounded by a timeout, and answers 200
``{"status": "ready", "checks": {...}}`` or 503 with an error body
``{"code": "not_ready", "message": ..., "detail": {"checks": {...}}}``; each check reports
``{"ok": bool, "error": str | null}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.web.errors import error_response

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when ready, raises (anything) when not."""

NOT_READY = "not_ready"


async def _run(check: Check, timeout: float) -> dict[str, object]:
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "error": None}


def install_probes(
    app: FastAPI, checks: Callable[[], Mapping[str, Check]], *, timeout: float, service: str
) -> None:
    """Add ``GET /healthz`` and ``GET /readyz``; ``checks()`` names the readiness checks (it is
    called per probe, so a check can depend on state built later)."""

    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(*(_run(c, timeout) for c in named.values()))
        report = dict(zip(named, results, strict=True))
        if all(r["ok"] for r in results):
            return JSONResponse({"status": "ready", "service": service, "checks": report})
        message = f"{service} is not ready"
        return error_response(503, NOT_READY, message, {"checks": report})

    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
