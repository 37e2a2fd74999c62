"""``splice registry serve``'s address makes the default OAuth issuer; wildcards need a URL."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.cli.registry_cmd import serving_settings
from services.registry.settings import RegistrySettings


def _settings(**values: object) -> RegistrySettings:
    return RegistrySettings.model_validate({"database_url": SecretStr("sqlite://"), **values})


def test_host_and_port_make_the_issuer() -> None:
    assert serving_settings(_settings(), None, 18555).issuer == "http://127.0.0.1:18555"
    assert serving_settings(_settings(), "localhost", 9).issuer == "http://localhost:9"
    # the environment's port when no option is given; the option wins over it
    env = _settings(port=9100)
    assert serving_settings(env, None, None).issuer == "http://127.0.0.1:9100"
    assert serving_settings(env, None, 9200).issuer == "http://127.0.0.1:9200"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_a_wildcard_bind_needs_a_public_url(host: str) -> None:
    with pytest.raises(ValueError, match="SPLICE_REGISTRY_PUBLIC_URL"):
        serving_settings(_settings(), host, 8200)
    public = _settings(public_url="https://registry.example")
    assert serving_settings(public, host, 8200).issuer == "https://registry.example"
