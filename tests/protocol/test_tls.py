"""TLS options: server options for uvicorn, client contexts, and the settings that feed them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.cli.tls import LocalCa
from services.party.settings import PartySettings
from services.protocol.tls import cleartext_over_network, client_context, server_options
from services.registry.settings import RegistrySettings


def test_server_options(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    assert server_options(None, None) == {}
    assert server_options(cert, key) == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    mutual = server_options(cert, key, ca)
    assert mutual["ssl_ca_certs"] == str(ca) and mutual["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="both"):
        server_options(cert, None)
    with pytest.raises(ValueError, match="client CA"):
        server_options(None, None, ca)


def test_client_context_trusts_the_ca_and_presents_a_client_cert(tmp_path: Path) -> None:
    ca = LocalCa.create(tmp_path)
    pair = ca.issue("me", client=True)
    ctx = client_context(ca.ca_file, pair.cert, pair.key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        ((("commonName", "Splice throwaway local CA"),),)
    ]
    with pytest.raises(ValueError):
        client_context(ca.ca_file, pair.cert, None)


def test_settings_take_tls_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLICE_PARTY_TLS_CERT_FILE", "/c.pem")
    monkeypatch.setenv("SPLICE_PARTY_TLS_KEY_FILE", "/k.pem")
    party = PartySettings(name="pcb", table=tmp_path / "t.csv")
    assert party.tls_cert_file == Path("/c.pem") and party.audience.startswith("https://")
    monkeypatch.setenv("SPLICE_REGISTRY_TLS_CERT_FILE", "/c.pem")
    with pytest.raises(ValidationError, match="go together"):
        RegistrySettings()
    monkeypatch.setenv("SPLICE_REGISTRY_TLS_KEY_FILE", "/k.pem")
    assert RegistrySettings().issuer.startswith("https://")
    with pytest.raises(ValidationError, match="go together"):
        PartySettings(name="pcb", table=tmp_path / "t.csv", tls_client_cert_file=Path("/x"))


@pytest.mark.parametrize(
    ("url", "cleartext"),
    [
        ("http://registry.example.com", True),
        ("http://10.0.0.7:8200", True),
        ("http://[2001:db8::1]:8100", True),
        ("https://registry.example.com", False),
        ("http://127.0.0.1:8200", False),
        ("http://127.9.9.9", False),
        ("http://[::1]:8100", False),
        ("http://localhost:8100", False),
        ("http://party.localhost", False),
    ],
)
def test_cleartext_over_network(url: str, cleartext: bool) -> None:
    assert cleartext_over_network(url) is cleartext


def test_settings_refuse_plain_http_to_other_hosts(tmp_path: Path) -> None:
    """Tokens and client secrets never go to another host in cleartext unless allowed."""
    table = tmp_path / "t.csv"
    base = {"name": "pcb", "table": table, "data_dir": tmp_path}
    for field in ("registry_url", "registry_issuer", "public_url"):
        with pytest.raises(ValidationError, match="plain http to another host"):
            PartySettings.model_validate(base | {field: "http://registry.example.com"})
        allowed = base | {field: "http://registry.example.com", "allow_insecure_http": True}
        assert PartySettings.model_validate(allowed)
        assert PartySettings.model_validate(base | {field: "http://127.0.0.1:8200"})
    db = SecretStr(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ValidationError, match="plain http to another host"):
        RegistrySettings(database_url=db, public_url="http://registry.example.com")
    assert RegistrySettings(database_url=db, public_url="https://registry.example.com")
    assert RegistrySettings(
        database_url=db, public_url="http://registry.example.com", allow_insecure_http=True
    )
