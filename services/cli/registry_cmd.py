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


@registry_app.command("serve")
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8200,
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
    (refuses to start on an unmigrated schema)."""
    import uvicorn

    from services.protocol.errors import SpliceError
    from services.registry.app import create_app
    from services.registry.migrate import SchemaError

    settings = _settings(database_url)
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
    uvicorn.run(
        "services.registry.asgi:app_from_environment",
        factory=True,
        workers=workers,
        host=options["host"],
        port=options["port"],
        log_level=options["log_level"],
        access_log=False,
        log_config=uvicorn_log_config(),
        **options["tls"],
    )
