"""Reading contracts from YAML or JSON, and their canonical form and digest.

Duplicate keys are an error in both formats (YAML and JSON parsers otherwise keep the last one
silently, which would let two readers of one file disagree about a share or a price).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.errors import ContractValidationError
from contracts.spec import Contract

MAX_DOCUMENT_BYTES = 1_000_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (exc.problem or exc.context or "syntax error")


def parse_document(text: str) -> dict[str, Any]:
    """The contract document in ``text`` (JSON if it starts with ``{``, else YAML) as a mapping."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise ContractValidationError.single("", f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        if text.lstrip().startswith("{"):
            data: object = json.loads(text, object_pairs_hook=_json_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ContractValidationError.single("", f"not valid YAML: {_yaml_problem(exc)}") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ContractValidationError.single("", f"not valid YAML/JSON: {exc}") from None
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else type(data).__name__
        raise ContractValidationError.single("", f"a contract is a mapping of sections, got {kind}")
    return dict(data)


def validate_contract(data: Mapping[str, Any]) -> Contract:
    """A contract from an already parsed document; errors carry paths into ``data``."""
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        raise ContractValidationError.from_pydantic(exc, data) from None


def upgrade_stored(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored canonical document, with the meaning it was signed with in today's language.

    A stored document spells out every field the language had when it was written (canonical
    JSON fills in defaults), so a section it lacks is one the language added later. Such a
    section takes the value that keeps the signed meaning, not today's default: a contract
    signed before label privacy existed (issue 16) has ``label_privacy: none``."""
    doc = dict(data)
    protection = doc.get("protection")
    if isinstance(protection, Mapping) and "label_privacy" not in protection:
        doc["protection"] = {**protection, "label_privacy": {"mechanism": "none"}}
    return doc


def validate_stored(data: Mapping[str, Any]) -> Contract:
    """A contract from a stored canonical document (:func:`upgrade_stored`, then validated)."""
    return validate_contract(upgrade_stored(data))


def parse_contract(text: str) -> Contract:
    """A contract from YAML or JSON text."""
    return validate_contract(parse_document(text))


def read_contract(path: str | os.PathLike[str]) -> Contract:
    """A contract from a YAML or JSON file."""
    return parse_contract(Path(path).read_text(encoding="utf-8"))


def load_contract(source: str | os.PathLike[str]) -> Contract:
    """A contract from a file path or from YAML/JSON text.

    A :class:`os.PathLike` is always a path. A string is a path when it is one line naming an
    existing file, and document text otherwise.
    """
    if isinstance(source, os.PathLike):
        return read_contract(source)
    if "\n" not in source and not source.lstrip().startswith("{") and Path(source).is_file():
        return read_contract(source)
    return parse_contract(source)


def canonical_json(contract: Contract) -> bytes:
    """The contract as canonical JSON: defaults filled in, keys sorted, no spaces, UTF-8.

    Decimals are plain decimal strings as written (``"40.0"`` stays ``"40.0"``); lists keep their
    order, so reordering parties changes the digest while reordering mapping keys does not.
    """
    data = contract.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def contract_digest(contract: Contract) -> str:
    """SHA-256 of :func:`canonical_json`, lower-case hex: what parties sign."""
    return hashlib.sha256(canonical_json(contract)).hexdigest()
