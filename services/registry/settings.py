"""Registry service settings (environment prefix ``SPLICE_REGISTRY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    host: str = "127.0.0.1"
    port: int = Field(default=8200, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    invitation_max_ttl_hours: int = Field(
        default=24 * 30, ge=1, description="Upper bound on an invitation code's lifetime."
    )
    initial_access_token_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="Lifetime of the one-time token an approved organisation registers with.",
    )
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=64 * 1024, ge=1024)
    argon2_parallelism: int = Field(default=2, ge=1, le=16)
