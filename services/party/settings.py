"""Party service settings (environment prefix ``SPLICE_PARTY_``)."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.protocol.messages import MAX_PSI_KEYS, PartyName
from services.protocol.tls import client_context, require_https


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
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8100, ge=0, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_batch_rows: int = Field(
        default=65_536, ge=1, description="Most rows one forward/embed/predict call may carry."
    )
    caller_rate_per_second: int = Field(
        default=2000,
        ge=0,
        description="Authenticated requests per second one caller organisation may send "
        "(answered 429 with Retry-After past it; 0: no limit). Counted in this process.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads torch and numpy's BLAS may use (default: their choice).",
    )
    peer_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Timeout of one call to a peer party or the registry."
    )
    peer_stream: bool = Field(
        default=True,
        description="Send a job's forward/backward/embed/mix calls to feature parties over one "
        "WebSocket per job (the step stream) instead of one HTTP request each; parties that "
        "offer no stream are called over HTTP.",
    )
    peer_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of a call to a peer after a transient failure."
    )
    peer_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    peer_write_timeout_seconds: float = Field(default=60.0, gt=0)
    peer_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    peer_backoff_seconds: float = Field(
        default=0.1, gt=0, le=60, description="First retry's backoff (doubles, full jitter)."
    )
    peer_backoff_cap_seconds: float = Field(default=10.0, gt=0, le=600)
    resume_timeout_seconds: float = Field(
        default=600.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Label party: how long a training run waits for an unreachable feature party "
        "to come back (then both resume from the last consistent checkpoint); past it the run "
        "fails.",
    )
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
        "(default: http(s)://host:port).",
    )
    peers: dict[PartyName, str] = Field(
        default_factory=dict,
        description="Label party: URL of each feature party by its contract name (JSON), used "
        "when a training is started from a contract without URLs.",
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
    key_master: SecretStr | None = Field(
        default=None,
        description="Derive each job's private key (initial weights, interactive share, "
        "defence noise) from this secret and the job id instead of drawing it from the OS "
        "CSPRNG. Only for a harness that runs every party (splice pilot, tests) and needs a "
        "centralized baseline with the same initial weights; leave unset in production.",
    )
    allow_plain_raw: bool = Field(
        default=False,
        description="Let a plain-mode job with an identity bottom send this party's encoded "
        "features in the clear (trusted pilots run by one operator). Without it such a job is "
        "refused: use ckks.",
    )
    psi_max_keys: int = Field(
        default=10_000_000,
        ge=1,
        le=MAX_PSI_KEYS,
        description="This party's own ceiling on any PSI set, its own and its peer's, whatever "
        "a job's psi_limits say (a contract's alignment.max_keys may only lower it).",
    )
    serving_alignment_ttl_seconds: float = Field(
        default=600.0,
        gt=0,
        le=7 * 86400,
        description="How long the label party keeps a serving round's answer for a key (its "
        "handle at a feature party, or that the party does not hold it) before asking again.",
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
    revocation_feed: bool = Field(
        default=True,
        description="Subscribe to the registry's revocation feed, so revoked tokens and "
        "clients, suspended organisations and contract changes take effect at once (and open "
        "step streams they concern close); off: within the cache TTL only.",
    )
    revocation_wait_seconds: float = Field(
        default=10.0, gt=0, le=25, description="Long-poll wait of one feed request."
    )
    # --- metering (label party) ----------------------------------------------------------------
    outbox_path: Path | None = Field(
        default=None,
        description="SQLite file of the usage outbox (default: data_dir/metering/outbox.sqlite3).",
    )
    serving_max_keys_per_caller: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000_000,
        description="Without a registry: the most distinct join keys one caller may name in "
        "prediction requests per month (unset: no limit). Under a registry the contract's "
        "serving.max_keys_per_caller applies.",
    )
    usage_batch_size: int = Field(
        default=500, ge=1, le=500, description="Usage events shipped to the registry per request."
    )
    usage_backoff_cap_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Longest wait between shipping attempts."
    )
    # --- observability (see docs/operations.md, "Observability") -------------------------------
    metrics_enabled: bool = Field(
        default=True, description="Serve Prometheus metrics at GET /metrics (false: no route)."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics answers only `Authorization: Bearer <token>`.",
    )
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Bound on each /readyz check."
    )

    # --- TLS (unset: plain HTTP, for loopback only) -------------------------------------------
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain) to serve HTTPS with; unset: plain HTTP."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, every caller must present a certificate signed by "
        "it (mutual TLS).",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle that outgoing calls (peers, registry) verify servers against "
        "(default: the system trust store).",
    )
    tls_client_cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate presented on outgoing calls (peers and registry "
        "requiring mutual TLS).",
    )
    tls_client_key_file: Path | None = Field(
        default=None, description="PEM private key of tls_client_cert_file."
    )

    allow_insecure_http: bool = Field(
        default=False,
        description="Allow plain-http URLs to other hosts (registry, this party's public URL, "
        "peers in training specs). Off: only https, or http on loopback.",
    )

    @model_validator(mode="after")
    def _secure_urls(self) -> PartySettings:
        for what, url in (
            ("registry_url", self.registry_url),
            ("registry_issuer", self.registry_issuer),
            ("public_url", self.public_url),
        ):
            require_https(url, what, allow_http=self.allow_insecure_http)
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> PartySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if (self.tls_client_cert_file is None) != (self.tls_client_key_file is None):
            raise ValueError("tls_client_cert_file and tls_client_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @property
    def audience(self) -> str:
        """The audience tokens for this party carry."""
        scheme = "https" if self.tls_cert_file is not None else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    def client_tls(self) -> ssl.SSLContext:
        """The TLS context of this party's outgoing calls (peers and registry)."""
        return client_context(self.tls_ca_file, self.tls_client_cert_file, self.tls_client_key_file)

    @property
    def outbox_file(self) -> Path:
        """Where the usage outbox lives."""
        return self.outbox_path or self.data_dir / "metering" / "outbox.sqlite3"

    @property
    def key_quota_file(self) -> Path:
        """Where the distinct keys each caller named this period are counted."""
        return self.data_dir / "metering" / "named-keys.sqlite3"

    @property
    def observations_file(self) -> Path:
        """Where a feature party keeps its serving observations until the registry has them."""
        return self.data_dir / "metering" / "observations.sqlite3"

    @property
    def issuer(self) -> str | None:
        """The registry's issuer, when a registry is configured."""
        url = self.registry_issuer or self.registry_url
        return None if url is None else url.rstrip("/")
