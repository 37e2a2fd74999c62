"""TLS options: server options for uvicorn, client contexts, and the settings that feed them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli.tls import LocalCa
from services.party.settings import PartySettings
from services.protocol.tls import client_context, server_options
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
