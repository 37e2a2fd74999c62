"""What ``splice org|contract|job`` share: credentials, a registry client, errors, output.

Every command runs one coroutine through :func:`run`, which turns every expected failure (no
credentials, an unreachable registry, an error answer) into one red ``error:`` line on stderr and
exit code 2, never a traceback. Results go to stdout, as rich text or, with ``--json``, as JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from services.cli.profile import Loaded, ProfileError, check_mode, load_profile, write_private

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, RSAKey

    from services.protocol.errors import SpliceError
    from services.protocol.oauth_client import ClientCredentials
    from services.protocol.registry_client import RegistryClient

T = TypeVar("T")
Need = Literal["none", "admin", "org", "any"]
"""Credentials a command needs: none, the operator's token, an organisation's client, either."""

console = Console(soft_wrap=True)  # long ids and messages stay on one line: copyable
errors = Console(stderr=True, soft_wrap=True)

ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        envvar="SPLICE_PROFILE",
        help="Profile in $SPLICE_PROFILE_FILE (default ~/.config/splice/profiles.toml).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned exit (code 2)."""
    errors.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=2)


def warn(message: str) -> None:
    """A yellow warning on stderr."""
    errors.print(f"[yellow]warning:[/] {escape(message)}")


def profile(name: str | None) -> Loaded:
    """The chosen profile with its environment overrides, or exit with the reason."""
    try:
        return load_profile(name, warn=warn)
    except ProfileError as exc:
        raise fail(exc.message) from None


def print_json(doc: Any) -> None:
    """``doc`` as indented JSON on stdout; an answer type (or a list of them) as the API sent
    it."""
    from pydantic import BaseModel

    if isinstance(doc, BaseModel):
        doc = doc.model_dump(mode="json")
    elif isinstance(doc, list):
        doc = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in doc]
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def once(label: str, value: str) -> None:
    """A value shown once (a code, token or secret): a label, then the value alone on a line."""
    console.print(label)
    print(value)


def print_table(table: Table) -> None:
    """A table; into a pipe or file at its natural width, so ids are never cut short."""
    if console.is_terminal:
        console.print(table, soft_wrap=False)
        return
    width = console.width
    natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.width = max(natural, width)
    try:
        console.print(table, soft_wrap=False)
    finally:
        console.width = width


def _where(loaded: Loaded) -> str:
    if loaded.from_file:
        return f"profile {loaded.name!r} in {loaded.path}"
    if loaded.path.is_file():
        return f"the environment ({loaded.path} has no profile {loaded.name!r})"
    return f"the environment (there is no profile file {loaded.path})"


def require(loaded: Loaded, need: Need) -> None:
    """Exit with a clear message unless ``loaded`` has the credentials ``need`` asks for."""
    p, where = loaded.profile, _where(loaded)
    org = (
        "set SPLICE_CLIENT_ID with SPLICE_CLIENT_SECRET or SPLICE_CLIENT_KEY_FILE, or pick a "
        "profile with --profile (`splice org register-client --save-profile NAME` writes one)"
    )
    admin = "set SPLICE_ADMIN_TOKEN, or pick an operator profile with --profile"
    if need == "org" and not p.is_org:
        raise fail(f"this command acts for an organisation, but {where} has no client_id: " + org)
    if need == "admin" and not p.is_admin:
        raise fail(f"this command needs the operator's admin token; {where} has none: " + admin)
    if need == "any" and not (p.is_org or p.is_admin):
        raise fail(f"no registry credentials in {where}: {org}; or {admin}")


def load_private_key(path: Path) -> ECKey | RSAKey:
    """A private EC or RSA key from a JWK (JSON) or PEM file."""
    from joserfc.jwk import ECKey, RSAKey

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read the key file {path}: {exc}") from None
    key: ECKey | RSAKey | None = None
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
            key = ECKey.import_key(doc) if doc.get("kty") == "EC" else RSAKey.import_key(doc)
        else:
            for cls in (ECKey, RSAKey):
                try:
                    key = cls.import_key(text)
                    break
                except ValueError:
                    continue
    except (ValueError, TypeError, AttributeError) as exc:
        raise ProfileError(f"the key file {path} holds no usable key: {exc}") from None
    if key is None or not key.is_private:
        raise ProfileError(f"the key file {path} holds no private EC or RSA key")
    key.ensure_kid()
    return key


def new_key_file(path: Path) -> ECKey:
    """Generate an EC P-256 signing key, write it as a private JWK (mode 0600), return it."""
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    try:
        write_private(path, json.dumps(key.as_dict(private=True), indent=2) + "\n")
    except OSError as exc:
        raise ProfileError(f"cannot write the key file {path}: {exc}") from None
    return key


def public_jwks(key: ECKey | RSAKey) -> dict[str, Any]:
    """The JWK Set to register: the public half of ``key``, for signatures."""
    from joserfc.jwk import ECKey

    alg = "ES256" if isinstance(key, ECKey) else "RS256"
    return {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": alg}]}


def client_credentials(loaded: Loaded) -> ClientCredentials:
    """The profile organisation's OAuth client: its secret, or its private key (whose file
    mode is checked) for ``private_key_jwt``."""
    from services.protocol.oauth_client import ClientCredentials

    p = loaded.profile
    assert p.client_id is not None
    key = None
    if p.client_key_file is not None:
        if p.client_key_file.is_file():
            check_mode(p.client_key_file, warn)
        key = load_private_key(p.client_key_file)
    secret = p.client_secret.get_secret_value() if p.client_secret else None
    return ClientCredentials(f"{p.token_issuer}/oauth/token", p.client_id, secret, key)


@asynccontextmanager
async def registry(loaded: Loaded, need: Need) -> AsyncIterator[RegistryClient]:
    """A registry client authenticated as ``need`` says (an organisation is preferred for
    ``any``): admin token as bearer, or client-credential tokens with every registered scope."""
    import httpx

    from services.protocol.oauth_client import BearerAuth, TokenSource
    from services.protocol.registry_client import RegistryClient, StaticBearer

    require(loaded, need)
    p = loaded.profile
    token_http: httpx.AsyncClient | None = None
    auth: httpx.Auth | None = None
    if need in ("org", "any") and p.is_org:
        creds = client_credentials(loaded)
        token_http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        auth = BearerAuth(TokenSource(creds, token_http), p.token_issuer, scope=None)
    elif need in ("admin", "any") and p.admin_token is not None:
        auth = StaticBearer(p.admin_token.get_secret_value())
    try:
        async with RegistryClient(p.registry_url, timeout=30.0, retries=2, auth=auth) as client:
            yield client
    finally:
        if token_http is not None:
            await token_http.aclose()


def describe(exc: SpliceError) -> str:
    """An error answer as one message, with the fields a 422 names."""
    from services.protocol.errors import ErrorCode

    detail = exc.detail
    if exc.code is ErrorCode.PEER_ERROR and isinstance(detail, dict) and "url" in detail:
        return (
            f"cannot reach the registry at {detail['url']}: is it running, and is registry_url "
            "(or SPLICE_REGISTRY_URL) right?"
        )
    message = exc.message
    if isinstance(detail, dict) and "error" in detail:  # an OAuth error answer
        message += f": {detail['error']}"
        if detail.get("error_description"):
            message += f" ({detail['error_description']})"
    if isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = [str(p) for p in item.get("loc") or []]
                path = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "(document)"
                message += f"\n  {path}: {item['msg']}"
    return message


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; expected failures exit 2 with a message, not a traceback."""
    import httpx

    from services.protocol.errors import SpliceError

    try:
        return asyncio.run(coro)
    except SpliceError as exc:
        raise fail(describe(exc)) from None
    except ProfileError as exc:
        raise fail(exc.message) from None
    except httpx.HTTPError as exc:
        try:
            where = str(exc.request.url)
        except RuntimeError:
            where = "the registry"
        raise fail(f"cannot reach {where}: {type(exc).__name__} {exc}".rstrip()) from None
