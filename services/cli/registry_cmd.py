"""``splice registry ...``: migrate, bootstrap and serve the contract registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
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
) -> None:
    """Serve the registry over HTTP (refuses to start on an unmigrated schema)."""
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
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
