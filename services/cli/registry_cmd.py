"""``splice registry ...``: migrate, bootstrap and serve the contract registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fastapi import FastAPI

    from services.registry.settings import RegistrySettings

registry_app = typer.Typer(help="Run and administer the contract registry.", no_args_is_help=True)
console = Console()

DbOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: SPLICE_REGISTRY_DATABASE_URL or a local SQLite file).",
    ),
]


def _settings(database_url: str | None) -> RegistrySettings:
    from pydantic import SecretStr

    from services.registry.settings import RegistrySettings

    settings = RegistrySettings()
    if database_url is not None:
        settings = settings.model_copy(update={"database_url": SecretStr(database_url)})
    url = settings.database_url.get_secret_value()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return settings


@registry_app.command("migrate")
def migrate(database_url: DbOption = None) -> None:
    """Upgrade the registry database to the newest schema (alembic upgrade head)."""
    from services.registry import migrate as m
    from services.registry.db import safe_url

    settings = _settings(database_url)
    url = settings.database_url.get_secret_value()
    m.upgrade(url, "head")
    console.print(f"registry schema at {m.current(url)} ({safe_url(url)})")


@registry_app.command("bootstrap")
def bootstrap(
    name: Annotated[str, typer.Option(help="Name of the operator admin.")] = "operator",
    database_url: DbOption = None,
) -> None:
    """Create the operator admin, once, and print its token (shown only now)."""
    from services.protocol.errors import SpliceError
    from services.registry.db import make_engine, session_factory
    from services.registry.store.admins import bootstrap_admin

    settings = _settings(database_url)
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        with session_factory(engine)() as session:
            done = bootstrap_admin(session, name=name)
            session.commit()
    except SpliceError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(code=2) from exc
    finally:
        engine.dispose()
    console.print(f"operator admin {name!r} created. Admin token (store it now, shown once):")
    print(done.token)


GRACEFUL_SHUTDOWN_SECONDS = 3
"""How long a stopping registry lets requests in flight finish (long polls are cut short)."""
WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})
"""Bind addresses that listen on every interface: they name no address a client can reach."""


def serving_settings(
    settings: RegistrySettings, host: str | None, port: int | None
) -> RegistrySettings:
    """``settings`` with the address ``serve`` binds to (``--host``/``--port`` over
    ``SPLICE_REGISTRY_HOST``/``_PORT``): without a public URL it makes the default issuer, so
    RFC 8414 discovery names the port actually served. A wildcard bind without a public URL is
    refused (:class:`ValueError`): the issuer would name no address clients can reach."""
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    bound = settings.model_copy(update=update)
    if bound.public_url is None and bound.host.strip() in WILDCARDS:
        raise ValueError(
            f"binding to {bound.host or 'every interface'!r} needs SPLICE_REGISTRY_PUBLIC_URL "
            f"(e.g. https://registry.example.com): the OAuth issuer, the token endpoint and the "
            f"JWKS URI in the RFC 8414 metadata must name an address clients reach, and "
            f"{bound.host!r} names none. Set it, or bind to a concrete address with --host."
        )
    return bound


@registry_app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Interface to bind (default: SPLICE_REGISTRY_HOST or 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Port to bind (default: SPLICE_REGISTRY_PORT or 8200)."
        ),
    ] = None,
    database_url: DbOption = None,
    log_level: Annotated[str, typer.Option()] = "warning",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (uvicorn). Each builds its own app from the environment; "
            "keys, replay caches and rate limits are shared through the database.",
        ),
    ] = 1,
) -> None:
    """Serve the registry over HTTP, or HTTPS with SPLICE_REGISTRY_TLS_CERT_FILE and _KEY_FILE
    (refuses to start on an unmigrated schema).

    Without SPLICE_REGISTRY_PUBLIC_URL the OAuth issuer (and every URL of the RFC 8414
    metadata) is http(s)://HOST:PORT of this command; binding to 0.0.0.0 or :: then refuses to
    start: set the public URL clients reach."""
    import uvicorn

    from services.protocol.errors import SpliceError
    from services.registry.app import create_app
    from services.registry.migrate import SchemaError

    try:
        settings = serving_settings(_settings(database_url), host, port)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    host, port = settings.host, settings.port
    try:
        app = create_app(settings)
    except (SchemaError, SpliceError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    from services.protocol.tls import server_options

    tls = server_options(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    if workers > 1:
        _serve_workers(app, settings, workers, host=host, port=port, log_level=log_level, tls=tls)
        return
    from services.web.logs import uvicorn_log_config

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        log_config=uvicorn_log_config(),
        # parties hold long polls on /v1/revocations: do not wait for them at shutdown
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **tls,
    )


def _serve_workers(
    checked: FastAPI, settings: RegistrySettings, workers: int, **options: Any
) -> None:
    """Several uvicorn workers, each building the app from the environment (the parent only
    checked that it builds)."""
    import os

    import uvicorn

    from services.registry.db import dispose
    from services.web.logs import uvicorn_log_config

    dispose(checked.state.engine)
    os.environ["SPLICE_REGISTRY_DATABASE_URL"] = settings.database_url.get_secret_value()
    # each worker's issuer must be the parent's: the address served, unless a public URL is set
    os.environ["SPLICE_REGISTRY_HOST"] = settings.host
    os.environ["SPLICE_REGISTRY_PORT"] = str(settings.port)
    uvicorn.run(
        "services.registry.asgi:app_from_environment",
        factory=True,
        workers=workers,
        host=options["host"],
        port=options["port"],
        log_level=options["log_level"],
        access_log=False,
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **options["tls"],
    )
