"""docs/operations.md lists every setting of the registry and the party.

Print the tables to paste into the doc with ``python -m tests.docs.test_operations_doc``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.party.settings import PartySettings
from services.registry.settings import RegistrySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
CLASSES: list[type[BaseSettings]] = [RegistrySettings, PartySettings]


def env_names(cls: type[BaseSettings]) -> list[str]:
    """The environment variable of each field of ``cls``."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper() for name in cls.model_fields]


def table(cls: type[BaseSettings]) -> str:
    """A markdown table: variable, default, meaning."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        if field.is_required():
            default = "required"
        elif isinstance(field.default, SecretStr):
            default = "(secret)"
        elif field.default_factory is not None:
            default = f"`{field.default_factory()}`"  # type: ignore[call-arg]
        else:
            default = f"`{field.default}`" if field.default is not None else "unset"
        about = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{prefix.upper()}{name.upper()}` | {default} | {about} |")
    return "\n".join(lines)


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [n for cls in CLASSES for n in env_names(cls) if f"`{n}`" not in text]
    assert not missing, (
        f"docs/operations.md lacks {missing}: regenerate the tables with "
        "`python -m tests.docs.test_operations_doc`"
    )


if __name__ == "__main__":
    for cls in CLASSES:
        print(f"### {cls.__name__}\n\n{table(cls)}\n")
