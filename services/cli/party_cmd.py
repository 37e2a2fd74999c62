"""``splice party ...``: run a party service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.connect import ProfileOpt, fail, profile
from services.cli.profile import Loaded

party_app = typer.Typer(help="Run and inspect party services.", no_args_is_help=True)


def registry_settings(loaded: Loaded) -> dict[str, Any]:
    """The party settings a CLI profile gives: the registry, the organisation and its client."""
    p = loaded.profile
    if not p.is_org:
        raise fail(f"profile {loaded.name!r} names no organisation client (client_id)")
    if not p.org_id:
        raise fail(
            f"profile {loaded.name!r} has no org_id: add it (`splice org register-client "
            "--save-profile` writes it)"
        )
    values: dict[str, Any] = {
        "registry_url": p.registry_url,
        "org_id": p.org_id,
        "client_id": p.client_id,
    }
    if p.issuer is not None:
        values["registry_issuer"] = p.issuer
    if p.client_secret is not None:
        values["client_secret"] = p.client_secret
    if p.client_key_file is not None:
        values["client_key_file"] = p.client_key_file
    return values


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
    profile_name: ProfileOpt = None,
) -> None:
    """Serve this party's segment and data access over HTTP (uvicorn), or HTTPS with
    SPLICE_PARTY_TLS_CERT_FILE and _KEY_FILE. With --profile, under the registry and with the
    organisation's client that profile names (else SPLICE_PARTY_REGISTRY_URL and friends)."""
    import uvicorn
    from pydantic import ValidationError

    from services.party.app import create_app
    from services.party.settings import PartySettings
    from services.protocol.tls import server_options

    values: dict[str, Any] = {
        "name": name,
        "table": table,
        "key_column": key,
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "torch_threads": torch_threads,
    }
    if profile_name is not None:
        values |= registry_settings(profile(profile_name))
    try:
        settings = PartySettings(**values)
    except ValidationError as exc:
        raise fail(f"bad party settings: {exc.errors()[0]['msg']}") from None
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
