"""``splice party ...``: run a party service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

party_app = typer.Typer(help="Run and inspect party services.", no_args_is_help=True)


@party_app.command("serve")
def serve(
    name: Annotated[str, typer.Option(help="This party's name in jobs, e.g. 'paste'.")],
    table: Annotated[Path, typer.Option(help="This party's own table (CSV or Parquet).")],
    key: Annotated[
        str | None, typer.Option("--key", help="Join key column (when serving as feature party).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8100,
    data_dir: Annotated[Path, typer.Option(help="Checkpoints and job state.")] = Path(
        ".splice/party"
    ),
    torch_threads: Annotated[
        int | None, typer.Option(help="Threads torch may use (default: torch's choice).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve this party's segment and data access over HTTP (uvicorn), or HTTPS with
    SPLICE_PARTY_TLS_CERT_FILE and _KEY_FILE."""
    import uvicorn

    from services.party.app import create_app
    from services.party.settings import PartySettings
    from services.protocol.tls import server_options

    settings = PartySettings(
        name=name,
        table=table,
        key_column=key,
        host=host,
        port=port,
        data_dir=data_dir,
        torch_threads=torch_threads,
    )
    tls = server_options(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    from services.web.logs import uvicorn_log_config

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        log_config=uvicorn_log_config(),
        # the step stream checks its own per-message limit; this only bounds a frame
        ws_max_size=settings.max_body_bytes + 65536,
        **tls,
    )
