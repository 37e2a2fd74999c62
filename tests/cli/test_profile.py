"""CLI profiles: TOML/JSON files, environment overrides, file modes, saving, key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import typer

from services.cli.connect import load_private_key, new_key_file, public_jwks, require
from services.cli.profile import ProfileError, load_profile, save_profile

TOML = """
[operator]
registry_url = "https://registry.example/"
admin_token = "spl_adm_secret"

[lumen-pcb]
registry_url = "https://registry.example"
client_id = "c-1"
client_secret = "spl_cs_secret"
"""


def _file(tmp_path: Path, text: str, name: str = "profiles.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_named_profiles_with_env_overrides(tmp_path: Path) -> None:
    path = _file(tmp_path, TOML)
    warnings: list[str] = []
    env = {"SPLICE_PROFILE_FILE": str(path)}
    op = load_profile("operator", env=env, warn=warnings.append)
    assert op.profile.is_admin and not op.profile.is_org and op.from_file
    assert op.profile.registry_url == "https://registry.example"
    assert op.profile.token_issuer == "https://registry.example"
    org = load_profile("lumen-pcb", env={**env, "SPLICE_REGISTRY_URL": "http://127.0.0.1:9"})
    assert org.profile.is_org and org.profile.registry_url == "http://127.0.0.1:9"
    assert "spl_cs_secret" not in repr(org) and "spl_adm_secret" not in repr(op)
    assert warnings == []


def test_json_file_and_environment_only(tmp_path: Path) -> None:
    doc = {"default": {"client_id": "c-2", "client_key_file": "~/key.jwk"}}
    path = _file(tmp_path, json.dumps(doc), name="profiles.json")
    loaded = load_profile(env={"SPLICE_PROFILE_FILE": str(path), "HOME": str(tmp_path)})
    assert loaded.profile.client_key_file is not None
    assert not str(loaded.profile.client_key_file).startswith("~")
    missing = {"SPLICE_PROFILE_FILE": str(tmp_path / "none.toml"), "SPLICE_ADMIN_TOKEN": "t"}
    env_only = load_profile(env=missing)
    assert env_only.profile.is_admin and not env_only.from_file
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("lumen-pcb", env=missing)
    with pytest.raises(ProfileError, match="profiles there: default"):
        load_profile("other", env={"SPLICE_PROFILE_FILE": str(path)})


def test_readable_file_warns(tmp_path: Path) -> None:
    path = _file(tmp_path, TOML, mode=0o644)
    warnings: list[str] = []
    load_profile("operator", env={"SPLICE_PROFILE_FILE": str(path)}, warn=warnings.append)
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and "0644" in warnings[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('client_secret = "spl_cs_x"', "without client_id"),
        ('client_id = "c"\nclient_secret = "spl_cs_x"\nclient_key_file = "k"', "exactly one"),
        ('client_id = "c"', "exactly one"),
        ('registry_url = "ftp://x"', "registry_url: must be an absolute http"),
        ('clientid = "c"', "clientid: Extra inputs"),
    ],
)
def test_invalid_profiles_name_the_field(tmp_path: Path, body: str, expected: str) -> None:
    path = _file(tmp_path, f"[p]\n{body}\n")
    with pytest.raises(ProfileError, match=expected) as err:
        load_profile("p", env={"SPLICE_PROFILE_FILE": str(path)})
    assert "spl_cs_x" not in err.value.message


def test_unreadable_files(tmp_path: Path) -> None:
    for text in ("x = [", "a = 1"):
        path = _file(tmp_path, text)
        with pytest.raises(ProfileError, match="profile file"):
            load_profile(env={"SPLICE_PROFILE_FILE": str(path)})


def test_save_keeps_other_profiles_and_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "profiles.toml"
    fields = {"registry_url": "http://r.example", "client_id": "c", "client_secret": 'a"b\\ü'}
    save_profile(path, "ünïcode org", fields, replace=False)
    save_profile(path, "other", {"admin_token": "t"}, replace=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    env = {"SPLICE_PROFILE_FILE": str(path)}
    back = load_profile("ünïcode org", env=env).profile
    assert back.client_secret is not None and back.client_secret.get_secret_value() == 'a"b\\ü'
    assert load_profile("other", env=env).profile.is_admin
    with pytest.raises(ProfileError, match="already exists"):
        save_profile(path, "other", {"admin_token": "u"}, replace=False)
    save_profile(path, "other", {"admin_token": "u"}, replace=True)
    with pytest.raises(ProfileError, match="exactly one"):
        save_profile(path, "broken", {"client_id": "c"}, replace=False)
    assert list(path.parent.iterdir()) == [path]  # no temporary files left


def test_missing_credentials_exit_2(tmp_path: Path) -> None:
    loaded = load_profile(env={"SPLICE_PROFILE_FILE": str(tmp_path / "none.toml")})
    for need in ("org", "admin", "any"):
        with pytest.raises(typer.Exit) as exit_:
            require(loaded, need)  # type: ignore[arg-type]
        assert exit_.value.exit_code == 2
    require(loaded, "none")


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "org.jwk.json"
    key = new_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_private_key(path)
    assert again.kid == key.kid and again.is_private
    jwks = public_jwks(again)
    assert jwks["keys"][0]["alg"] == "ES256" and "d" not in jwks["keys"][0]
    pem = tmp_path / "org.pem"
    pem.write_bytes(key.as_pem(private=True))
    assert load_private_key(pem).kid == key.kid  # the thumbprint: the same kid as the JWK
    public = tmp_path / "public.jwk.json"
    public.write_text(json.dumps(key.as_dict(private=False)))
    for bad in (public, _file(tmp_path, "not a key", name="junk.pem")):
        with pytest.raises(ProfileError, match="key"):
            load_private_key(bad)
