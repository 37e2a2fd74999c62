"""Helpers shared by the contract tests: example documents and error lookup."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import ContractValidationError, FieldError, validate_contract

EXAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "examples"
PCB = EXAMPLES / "pcb-paste-quality.yaml"
STENCIL = EXAMPLES / "pcb-paste-stencil.yaml"
JPY = EXAMPLES / "pcb-defect-type-jpy.yaml"

Doc = dict[str, Any]


@functools.cache
def _parsed(path: Path) -> Doc:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def document(path: Path = PCB) -> Doc:
    """A fresh copy of an example as a plain mapping."""
    return copy.deepcopy(_parsed(path))


def errors_of(data: Doc) -> list[FieldError]:
    """The errors validating ``data`` raises (the test fails if it is accepted)."""
    with pytest.raises(ContractValidationError) as info:
        validate_contract(data)
    return info.value.errors


def mutated(fn: Callable[[Doc], object], path: Path = PCB) -> Doc:
    """An example changed by ``fn``."""
    data = document(path)
    fn(data)
    return data


def assert_error(errors: list[FieldError], loc: str, fragment: str = "") -> None:
    """``errors`` has one at ``loc`` whose message contains ``fragment``."""
    at = [e["msg"] for e in errors if e["loc"] == loc]
    assert at, f"no error at {loc!r}; got {errors}"
    assert any(fragment.lower() in m.lower() for m in at), f"{fragment!r} not in {at}"


def set_at(path: str, value: object) -> Callable[[Doc], None]:
    """Set the field at dotted ``path`` (list indexes as numbers)."""

    def fn(d: Doc) -> None:
        *parents, last = path.split(".")
        node: object = d
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            assert isinstance(node, dict)
            node[last] = value

    return fn


def drop_at(path: str) -> Callable[[Doc], None]:
    """Delete the field at dotted ``path``."""

    def fn(d: Doc) -> None:
        *parents, last = path.split(".")
        node: object = d
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        assert isinstance(node, dict)
        del node[last]

    return fn
