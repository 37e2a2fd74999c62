"""Party service settings (environment prefix ``SPLICE_PARTY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    # --- the contract registry (unset: open mode, for local pilots only) ---------------------
    registry_url: str | None = Field(
        default=None, description="Base URL of the contract registry; enables enforcement."
    )
    registry_issuer: str | None = Field(
        default=None, description="The registry's token issuer (default: registry_url)."
    )
    public_url: str | None = Field(
        default=None,
        description="This party's URL as peers call it; the audience of tokens for it "
        "(default: http://host:port).",
    )
    org_id: str | None = Field(default=None, description="This party's organisation id.")
    client_id: str | None = Field(default=None, description="This organisation's OAuth client.")
    client_secret: SecretStr | None = Field(
        default=None, description="client_secret_basic credential (or use client_key_file)."
    )
    client_key_file: Path | None = Field(
        default=None, description="Private JWK (JSON) for private_key_jwt client authentication."
    )
    units_file: Path | None = Field(
        default=None,
        description="YAML/JSON map column -> unit this party declares for its table; checked "
        "against the contract's committed units before it joins a job.",
    )
    share_secret: SecretStr | None = Field(
        default=None,
        description="Private salt of this party's initial interactive-weight shares (W_P). "
        "Unset: a random one per process. Set it to make runs with the same seed repeatable.",
    )
    he_workers: int = Field(
        default=2, ge=1, le=8, description="CKKS worker processes of this party (cores to use)."
    )
    contract_check_ttl_seconds: float = Field(
        default=10.0, gt=0, le=30, description="How long a contract check is cached."
    )
    registry_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="While the registry is unreachable, keep using its last answers (contract "
        "checks, token liveness) for this long after they expired, so serving survives a "
        "registry outage; 0 refuses every call as soon as an answer expires.",
    )
    # --- metering (label party) ----------------------------------------------------------------
    outbox_path: Path | None = Field(
        default=None,
        description="SQLite file of the usage outbox (default: data_dir/metering/outbox.sqlite3).",
    )
    usage_batch_size: int = Field(
        default=500, ge=1, le=500, description="Usage events shipped to the registry per request."
    )
    usage_backoff_cap_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Longest wait between shipping attempts."
    )

    @property
    def audience(self) -> str:
        """The audience tokens for this party carry."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def outbox_file(self) -> Path:
        """Where the usage outbox lives."""
        return self.outbox_path or self.data_dir / "metering" / "outbox.sqlite3"

    @property
    def issuer(self) -> str | None:
        """The registry's issuer, when a registry is configured."""
        url = self.registry_issuer or self.registry_url
        return None if url is None else url.rstrip("/")
