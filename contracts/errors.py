"""Validation errors with field paths.

Field-level problems come from pydantic; rules that span several fields (one label party, shares
summing to 100, ...) are raised by model validators through :func:`raise_issues`, which records
the path of each offending field relative to the model.
:meth:`ContractValidationError.from_pydantic` turns both into a flat list of
``{"loc": "parties.1.role", "msg": "..."}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from services.protocol.errors import ErrorCode, SpliceError

Loc = tuple[str | int, ...]
Issue = tuple[Loc, str]
"""A rule violation: path relative to the model that found it, and why."""

RULE_ERROR = "contract_rule"
_UNION_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}


class FieldError(TypedDict):
    """One problem: dotted path of the field (``""`` for the whole document) and why."""

    loc: str
    msg: str


def join_loc(loc: Iterable[str | int]) -> str:
    """``("parties", 1, "role")`` -> ``"parties.1.role"``."""
    return ".".join(str(part) for part in loc)


def raise_issues(issues: Sequence[Issue]) -> None:
    """Raise one pydantic error carrying every issue, or return if there are none."""
    if not issues:
        return
    summary = "; ".join(f"{join_loc(loc) or '(model)'}: {msg}" for loc, msg in issues)
    raise PydanticCustomError(
        RULE_ERROR,
        "{summary}",
        {"summary": summary, "issues": [[list(loc), msg] for loc, msg in issues]},
    )


class ContractValidationError(SpliceError):
    """A contract document is malformed or breaks a rule; ``errors`` says where and why."""

    status = 422
    code = ErrorCode.VALIDATION

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        lines = [f"{e['loc'] or '(document)'}: {e['msg']}" for e in self.errors]
        message = f"invalid contract ({len(lines)} error{'s' if len(lines) != 1 else ''})"
        super().__init__(message + ":\n  " + "\n  ".join(lines), detail=self.errors)

    @classmethod
    def single(cls, loc: str, msg: str) -> ContractValidationError:
        """An error about one place of the document."""
        return cls([FieldError(loc=loc, msg=msg)])

    @classmethod
    def from_pydantic(cls, exc: ValidationError, data: object = None) -> ContractValidationError:
        """Flatten pydantic's errors; ``data`` (the input document) lets paths skip union tags."""
        found: dict[str, list[str]] = {}
        for err in exc.errors(include_url=False):
            ctx: Mapping[str, Any] = err.get("ctx") or {}
            if err["type"] == RULE_ERROR:
                loc = _document_loc(err["loc"], data, terminal=False)
                for sub, msg in ctx["issues"]:
                    found.setdefault(join_loc((*loc, *sub)), []).append(str(msg))
                continue
            loc = _document_loc(err["loc"], data, terminal=err["type"] == "missing")
            if err["type"] in _UNION_TAG_ERRORS:
                loc = (*loc, str(ctx.get("discriminator", "")).strip("'"))
            found.setdefault(join_loc(loc), []).append(_message(err["type"], err["msg"], loc, ctx))
        out: list[FieldError] = []
        for loc_text, msgs in found.items():
            unique = list(dict.fromkeys(msgs))
            # several messages at one place come from the members of a union: none fits
            msg = unique[0] if len(unique) == 1 else "no allowed type fits: " + "; ".join(unique)
            out.append(FieldError(loc=loc_text, msg=msg))
        return cls(out)


def _message(kind: str, msg: str, loc: Loc, ctx: Mapping[str, Any]) -> str:
    if kind == "extra_forbidden":
        return f"unknown field {str(loc[-1])!r}" if loc else "unknown field"
    if kind in ("missing", "union_tag_not_found"):
        return "required field is missing"
    if kind == "timezone_aware":
        return "a timezone is required, e.g. 2026-01-01T00:00:00Z"
    if kind == "union_tag_invalid":
        return f"unknown value {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    return msg.removeprefix("Value error, ")


def _document_loc(loc: Sequence[str | int], data: object, *, terminal: bool) -> Loc:
    """Pydantic's ``loc`` as a path into the input document.

    Pydantic adds segments that are not in the document: the tag of a discriminated union
    (``revenue_share.fixed.shares``), the member type of a plain union, ``[key]`` for bad dict keys.
    A segment is kept when the document has it, or when it is the last of a ``terminal`` path (the
    field a "missing" error names). Without ``data`` the path is kept as is (minus ``[key]``).
    """
    out: list[str | int] = []
    node: object = data
    inside = data is not None
    for i, seg in enumerate(loc):
        if seg == "[key]":
            continue
        if inside:
            last = terminal and i == len(loc) - 1
            if isinstance(node, Mapping) and seg in node:
                node = node[seg]
            elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
                node = node[seg]
            elif isinstance(node, Mapping) and last:
                inside = False  # a missing field
            else:
                continue  # a union tag or member name: not part of the document
        out.append(seg)
    return tuple(out)
