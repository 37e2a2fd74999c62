"""Registry credentials of the CLI: named profiles in a TOML or JSON file, overridden by env.

The file (``$SPLICE_PROFILE_FILE``, default ``~/.config/splice/profiles.toml``) holds one table
per profile::

    [lumen-pcb]
    registry_url = "https://registry.example"
    client_id = "..."
    client_secret = "..."        # or: client_key_file = "/path/to/key.jwk.json"

    [operator]
    registry_url = "https://registry.example"
    admin_token = "spl_adm_..."

``--profile NAME`` (or ``$SPLICE_PROFILE``) picks one, ``default`` otherwise. The environment
variables in :data:`ENV_FIELDS` override single fields. Secrets are ``SecretStr``: they never show
up in a repr or an error message. Profiles are written with mode 0600; reading a file that other
users can access gives a warning.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PROFILE_FILE = Path("~/.config/splice/profiles.toml")
DEFAULT_PROFILE = "default"
DEFAULT_REGISTRY_URL = "http://127.0.0.1:8200"
ENV_FIELDS: dict[str, str] = {
    "SPLICE_REGISTRY_URL": "registry_url",
    "SPLICE_ISSUER": "issuer",
    "SPLICE_ADMIN_TOKEN": "admin_token",
    "SPLICE_CLIENT_ID": "client_id",
    "SPLICE_CLIENT_SECRET": "client_secret",
    "SPLICE_CLIENT_KEY_FILE": "client_key_file",
}
"""Environment variables and the profile field each overrides."""

Warn = Callable[[str], None]


class ProfileError(Exception):
    """The profile file or the environment cannot give usable credentials; says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL, e.g. https://registry.example")
    return value.rstrip("/")


class Profile(BaseModel):
    """Where the registry is and how to authenticate to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_url: str = Field(default=DEFAULT_REGISTRY_URL, description="Registry base URL.")
    issuer: str | None = Field(default=None, description="OAuth issuer (default registry_url).")
    admin_token: SecretStr | None = Field(default=None, description="Operator admin token.")
    client_id: str | None = Field(default=None, description="An organisation's OAuth client.")
    client_secret: SecretStr | None = None
    client_key_file: Path | None = Field(
        default=None, description="Private JWK (JSON) or PEM key of a private_key_jwt client."
    )
    org_id: str | None = Field(default=None, description="The organisation (informational).")

    @field_validator("registry_url", "issuer")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("client_key_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _one_credential(self) -> Profile:
        has_secret, has_key = self.client_secret is not None, self.client_key_file is not None
        if (has_secret or has_key) and not self.client_id:
            raise ValueError("client_secret or client_key_file given without client_id")
        if self.client_id and has_secret == has_key:
            raise ValueError(
                "an organisation's client needs exactly one of client_secret and client_key_file"
            )
        return self

    @property
    def token_issuer(self) -> str:
        """The OAuth issuer: the audience of registry tokens and base of the token endpoint."""
        return self.issuer or self.registry_url

    @property
    def is_org(self) -> bool:
        """Holds an organisation's client credentials."""
        return self.client_id is not None

    @property
    def is_admin(self) -> bool:
        """Holds the operator's admin token."""
        return self.admin_token is not None


class Loaded(BaseModel):
    """A profile and where it came from (for messages)."""

    model_config = ConfigDict(frozen=True)

    profile: Profile
    name: str
    path: Path
    from_file: bool


def profile_file(env: Mapping[str, str] | None = None) -> Path:
    """The profile file in use."""
    env = os.environ if env is None else env
    return Path(env.get("SPLICE_PROFILE_FILE") or DEFAULT_PROFILE_FILE).expanduser()


def check_mode(path: Path, warn: Warn) -> None:
    """Warn when other users may read or change ``path`` (POSIX only)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warn(f"{path} is accessible by other users (mode {mode:04o}); run: chmod 600 {path}")


def read_profiles(path: Path) -> dict[str, dict[str, Any]]:
    """Every profile of a TOML or JSON file (``.json`` suffix: JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw: object = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read the profile file {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"the profile file {path} is not valid: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ProfileError(f"the profile file {path} must hold one table per profile")
    return {str(k): dict(v) for k, v in raw.items()}


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


def load_profile(
    name: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    warn: Warn = lambda _: None,
) -> Loaded:
    """The profile ``name`` (``default`` when None) with the environment's overrides.

    A missing file or a missing ``default`` profile is fine (the environment may say it all); a
    named profile that does not exist is an error.
    """
    env = os.environ if env is None else env
    path = profile_file(env)
    chosen = name or DEFAULT_PROFILE
    data: dict[str, Any] = {}
    from_file = False
    if path.is_file():
        check_mode(path, warn)
        profiles = read_profiles(path)
        if chosen in profiles:
            data, from_file = profiles[chosen], True
        elif name is not None:
            have = ", ".join(sorted(profiles)) or "none"
            raise ProfileError(f"no profile {name!r} in {path} (profiles there: {have})")
    elif name is not None:
        raise ProfileError(f"no profile {name!r}: the profile file {path} does not exist")
    for var, field in ENV_FIELDS.items():
        if env.get(var):
            data[field] = env[var]
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        source = f"profile {chosen!r} in {path}" if from_file else "the environment"
        raise ProfileError(f"{source}: {_describe(exc)}") from None
    return Loaded(profile=profile, name=chosen, path=path, from_file=from_file)


def _toml_value(value: str) -> str:
    # a TOML basic string: JSON's escapes are TOML's, non-ASCII stays literal
    return json.dumps(value, ensure_ascii=False)


def _toml(profiles: Mapping[str, Mapping[str, str]]) -> str:
    out: list[str] = ["# Splice CLI profiles (secrets inside: keep this file mode 0600)"]
    for name, fields in profiles.items():
        out.append(f"\n[{_toml_value(name)}]")
        out.extend(f"{key} = {_toml_value(val)}" for key, val in fields.items())
    return "\n".join(out) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (parent folder 0700 if created)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(path: Path, name: str, fields: Mapping[str, str], *, replace: bool) -> None:
    """Add profile ``name`` to the file (other profiles kept; comments are not)."""
    profiles = read_profiles(path) if path.is_file() else {}
    if name in profiles and not replace:
        raise ProfileError(f"profile {name!r} already exists in {path}")
    try:
        Profile.model_validate(fields)
    except ValidationError as exc:
        raise ProfileError(f"profile {name!r}: {_describe(exc)}") from None
    profiles[name] = dict(fields)
    if path.suffix == ".json":
        text = json.dumps(profiles, indent=2, ensure_ascii=False) + "\n"
    else:
        text = _toml({n: {k: str(v) for k, v in p.items()} for n, p in profiles.items()})
    try:
        write_private(path, text)
    except OSError as exc:
        raise ProfileError(f"cannot write the profile file {path}: {exc}") from None
