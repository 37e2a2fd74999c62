"""The deployment recipe in infra/ parses and keeps its promises (nothing here runs docker or
systemd): compose services and healthchecks, no hard-coded secrets, hardened units."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
SECRETISH = re.compile(r"PASSWORD|SECRET|KEY|DATABASE_URL", re.IGNORECASE)


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return doc


def test_compose_runs_registry_postgres_and_two_parties() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "registry", "pcb", "paste"}
    for name, svc in services.items():
        assert "test" in svc["healthcheck"], name
    assert "migrate" in " ".join(services["registry"]["entrypoint"])
    assert services["registry"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for party in ("pcb", "paste"):
        svc = services[party]
        assert svc["command"][:2] == ["party", "serve"]
        assert any(v.endswith(":/var/lib/splice") for v in svc["volumes"]), "state volume"
        assert svc["env_file"], "OAuth client from an env file"
    assert "--key" in services["paste"]["command"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_compose_hard_codes_no_secrets() -> None:
    for name, svc in _compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRETISH.search(key):
                assert "${" in str(value), f"{name}: {key} must come from the environment"


def test_dockerfile_recipe() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert '"torch==2.13.0"' in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["splice"]' in text


@pytest.mark.parametrize("unit", ["splice-registry.service", "splice-party@.service"])
def test_systemd_units_parse_and_are_hardened(unit: str) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((INFRA / "systemd" / unit).read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    service = parser["Service"]
    assert service["ExecStart"].split()[0].startswith("/")
    assert service["EnvironmentFile"].startswith("/etc/splice/")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"].startswith("/var/lib/splice/")
    assert service["User"] != "root"
