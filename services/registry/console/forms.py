"""Form input checked by the API's own request schemas, with the errors per field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.protocol.errors import SpliceError

M = TypeVar("M", bound=BaseModel)


class FieldErrors(Exception):
    """Input that does not validate: ``errors`` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model`` (the API's request schema), or :class:`FieldErrors`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "form"
            errors.setdefault(name, str(error["msg"]))
        raise FieldErrors(errors) from None


def from_domain(exc: SpliceError, default: str) -> FieldErrors:
    """A domain error as field errors: by its ``detail`` paths when it has them, else on
    ``default``."""
    detail = exc.detail if isinstance(exc.detail, list) else []
    errors: dict[str, str] = {}
    for item in detail:
        if isinstance(item, dict) and item.get("loc") and item.get("msg"):
            loc = [str(p) for p in item["loc"] if p != "body"]
            errors.setdefault(".".join(loc) or default, str(item["msg"]))
    if isinstance(exc.detail, dict) and isinstance(exc.detail.get("field"), str):
        errors[exc.detail["field"]] = exc.message
    return FieldErrors(errors or {default: exc.message})


def parse_json_upload(raw: bytes, name: str, limit: int) -> Any:
    """An uploaded JSON file, or :class:`FieldErrors` on ``name`` (too large, not JSON)."""
    if len(raw) > limit:
        raise FieldErrors({name: f"the file has {len(raw)} bytes; at most {limit} are taken"})
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FieldErrors({name: "the file is not UTF-8 JSON"}) from None
