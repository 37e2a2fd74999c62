"""Party service settings (environment prefix ``SPLICE_PARTY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.protocol.messages import PartyName


class PartySettings(BaseSettings):
    """Everything a party service needs to know about itself. Raw data never leaves ``table``."""

    model_config = SettingsConfigDict(env_prefix="SPLICE_PARTY_", extra="forbid")

    name: PartyName
    table: Path = Field(description="The party's own table (CSV or Parquet).")
    key_column: str | None = Field(
        default=None,
        description="Join key column of this party's table when it serves as a feature party.",
    )
    data_dir: Path = Field(
        default=Path(".splice/party"), description="Checkpoints and job state live here."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_batch_rows: int = Field(default=65_536, ge=1)
    torch_threads: int | None = Field(default=None, ge=1, le=64)
    peer_timeout_seconds: float = Field(default=60.0, gt=0)
    peer_retries: int = Field(default=3, ge=0, le=10)
