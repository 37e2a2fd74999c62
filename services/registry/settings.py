"""Registry service settings (environment prefix ``SPLICE_REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.protocol.tls import require_https


class RegistrySettings(BaseSettings):
    """Everything the registry needs to know about itself."""

    model_config = SettingsConfigDict(env_prefix="SPLICE_REGISTRY_", extra="forbid")

    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///.splice/registry.db"),
        description=(
            "SQLAlchemy URL of the registry database. Embedded default: a SQLite file. "
            "Production: postgresql://user:password@host/db (driver psycopg 3). A secret: it may "
            "carry a password."
        ),
    )
    host: str = Field(
        default="127.0.0.1", description="Interface the default issuer URL names (see public_url)."
    )
    port: int = Field(
        default=8200, ge=0, le=65535, description="Port the default issuer URL names."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    invitation_max_ttl_hours: int = Field(
        default=24 * 30, ge=1, description="Upper bound on an invitation code's lifetime."
    )
    initial_access_token_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="Lifetime of the one-time token an approved organisation registers with.",
    )
    argon2_time_cost: int = Field(
        default=3, ge=1, le=20, description="Argon2id passes when hashing client secrets."
    )
    argon2_memory_kib: int = Field(
        default=64 * 1024, ge=1024, description="Argon2id memory per hash (KiB)."
    )
    argon2_parallelism: int = Field(default=2, ge=1, le=16, description="Argon2id lanes per hash.")
    public_url: str | None = Field(
        default=None,
        description=(
            "The registry's public base URL (https in production, no trailing slash). It is the "
            "OAuth issuer (`iss` of every access token), the default token audience and the "
            "base of the endpoint URLs in the RFC 8414 metadata. Default: http://host:port."
        ),
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow a plain-http public_url on another host than loopback (tokens and "
        "client secrets would travel in cleartext). Off: https, or http on loopback only.",
    )
    access_token_ttl_seconds: int = Field(
        default=600, ge=60, le=3600, description="Lifetime of issued access tokens."
    )
    token_leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew allowed when checking exp, iat, nbf."
    )
    max_label_epsilon: float = Field(
        default=10.0,
        gt=0.0,
        le=50.0,
        description="The largest label-privacy budget (protection.label_privacy.epsilon) a "
        "contract of this deployment may state; a contract asking for more, or switching "
        "label privacy off, is refused (422) unless allow_no_label_privacy.",
    )
    allow_no_label_privacy: bool = Field(
        default=True,
        description="Accept contracts whose label_privacy mechanism is none.",
    )
    rate_limits: bool = Field(
        default=True, description="Enforce the rate limits below (off: benchmarks, tests)."
    )
    rate_window_seconds: int = Field(
        default=1, ge=1, le=3600, description="Length of the fixed rate-limit window."
    )
    token_rate_per_client: int = Field(
        default=20, ge=1, description="Token requests per window for one OAuth client."
    )
    token_rate_per_ip: int = Field(
        default=200,
        ge=1,
        description="Requests per window to /oauth/token, /oauth/introspect and /oauth/revoke "
        "from one source address (any client, failed attempts included).",
    )
    api_rate_per_client: int = Field(
        default=200, ge=1, description="API requests per window for one authenticated caller."
    )
    revocation_poll_seconds: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="How often a waiting GET /v1/revocations looks for new changes (the delay "
        "before a party learns of a revocation or suspension, at most).",
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
    key_encryption_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key(s) encrypting the token signing keys at rest, comma-separated: the first "
            "encrypts, all decrypt (rotate by prepending a new key). Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())'`. Unset: private keys are stored unencrypted (development only)."
        ),
    )

    # --- the console (issue 19; docs/adr/0011-console-sign-in.md) --------------------------------
    console_enabled: bool = Field(
        default=True, description="Serve the web console under /console/ and people's sign-in."
    )
    console_session_ttl_seconds: int = Field(
        default=8 * 3600, ge=300, le=7 * 24 * 3600, description="Longest life of a console session."
    )
    console_idle_seconds: int = Field(
        default=30 * 60,
        ge=60,
        le=24 * 3600,
        description="A console session ends after this long without a request.",
    )
    console_max_upload_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest file a console form takes (a public key set).",
    )
    sign_in_attempts_per_minute: int = Field(
        default=10,
        ge=1,
        description="Console sign-in attempts per minute for one e-mail address (429 above; "
        "with rate_limits on).",
    )
    user_invitation_ttl_hours: int = Field(
        default=7 * 24, ge=1, le=24 * 90, description="Lifetime of a user invitation code."
    )

    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain) to serve HTTPS with; unset: plain HTTP."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: when set, every client must present a certificate signed by "
        "it (mutual TLS).",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> RegistrySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @model_validator(mode="after")
    def _secure_public_url(self) -> RegistrySettings:
        require_https(self.public_url, "public_url", allow_http=self.allow_insecure_http)
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must have no query or fragment")
        return value.rstrip("/")

    @field_validator("key_encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = value.get_secret_value().split(",")
            try:
                for part in parts:
                    Fernet(part.strip())
            except ValueError:
                raise ValueError(
                    "must be one or more Fernet keys (32 url-safe base64-encoded bytes), "
                    "separated by commas"
                ) from None
        return value

    @property
    def issuer(self) -> str:
        """The OAuth issuer identifier: ``public_url``, or http(s)://host:port."""
        scheme = "https" if self.tls_cert_file is not None else "http"
        return self.public_url or f"{scheme}://{self.host}:{self.port}"
