"""``splice party serve --profile``: the party runs under the registry and client its profile
names (issue 19); a profile without an organisation client or org_id is refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.party.settings import PartySettings

TOML = """
[solvia-party]
registry_url = "https://registry.example"
client_id = "c-paste"
client_secret = "spl_cs_secret"
org_id = "org-paste"

[no-org]
registry_url = "https://registry.example"
client_id = "c-paste"
client_secret = "spl_cs_secret"

[operator]
admin_token = "spl_adm_secret"
"""


def test_serve_takes_the_registry_and_client_from_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(TOML)
    profiles.chmod(0o600)
    table = tmp_path / "paste.csv"
    table.write_text("lot,viscosity\nPL-1,1.5\n")
    served: list[PartySettings] = []
    monkeypatch.setattr("services.party.app.create_app", lambda s: served.append(s) or s)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    env = {"SPLICE_PROFILE_FILE": str(profiles), "SPLICE_PROFILE": None}
    args = ["party", "serve", "--name", "paste", "--table", str(table), "--key", "lot"]
    args += ["--data-dir", str(tmp_path / "data")]

    done = CliRunner().invoke(app, [*args, "--profile", "solvia-party"], env=env)
    assert done.exit_code == 0, done.output
    (settings,) = served
    assert settings.registry_url == "https://registry.example"
    assert (settings.org_id, settings.client_id) == ("org-paste", "c-paste")
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "spl_cs_secret"

    for name, why in (("no-org", "has no org_id"), ("operator", "names no organisation")):
        done = CliRunner().invoke(app, [*args, "--profile", name], env=env)
        assert done.exit_code == 2 and why in done.output, done.output
    assert len(served) == 1
