"""The web console (issue 19): server-rendered pages under ``/console/`` for the people who run
a partnership, backed by the same store functions as the API (see docs/console.md and
docs/adr/0011-console-sign-in.md)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.registry.console import (
    account_pages,
    contract_pages,
    finance_pages,
    home,
    people_pages,
    signin,
    work_pages,
)
from services.registry.console.web import HERE, SecurityHeaders


def install_console(app: FastAPI) -> None:
    """Mount the console, its static files (htmx, the style sheet) and its security headers."""
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (
        signin,
        account_pages,
        home,
        people_pages,
        contract_pages,
        work_pages,
        finance_pages,
    ):
        app.include_router(module.router)
    app.add_middleware(SecurityHeaders)
