"""Contract documents in requests (JSON or YAML), and their errors as 422s with body paths."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from contracts import Contract, ContractValidationError, parse_contract
from services.protocol.errors import ErrorCode, SpliceError, UnsupportedMediaType
from services.registry.api.deps import CallerDep
from services.registry.auth import Caller
from services.registry.settings import RegistrySettings
from services.registry.store.contract_drafts import Resolved, resolve

YAML_MEDIA = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A contract document (docs/contracts.md), as JSON or YAML.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
"""``openapi_extra`` of endpoints that take a contract document."""

_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")


class InvalidContract(SpliceError):
    """A contract document that does not validate: ``detail`` lists ``{loc, msg, type}`` with
    ``loc`` a path into the request (``["body", "parties", 1, "role"]``)."""

    status = 422
    code = ErrorCode.VALIDATION


def within_budget(contract: Contract, settings: RegistrySettings) -> None:
    """Refuse a label-privacy budget this deployment does not allow."""
    privacy = contract.protection.label_privacy
    loc = "protection.label_privacy"
    if privacy.mechanism == "none" and not settings.allow_no_label_privacy:
        raise ContractValidationError.single(
            f"{loc}.mechanism", "this registry requires label privacy: mechanism cannot be none"
        )
    if privacy.mechanism != "none" and privacy.epsilon > settings.max_label_epsilon:
        raise ContractValidationError.single(
            f"{loc}.epsilon",
            f"epsilon {privacy.epsilon:g} exceeds this registry's limit of "
            f"{settings.max_label_epsilon:g} (max_label_epsilon)",
        )


def _loc(dotted: str) -> list[str | int]:
    parts = dotted.split(".") if dotted else []
    return ["body", *(int(p) if _INDEX.match(p) else p for p in parts)]


def invalid(exc: ContractValidationError) -> InvalidContract:
    """The contract's errors in the registry's 422 shape."""
    detail = [{"loc": _loc(e["loc"]), "msg": e["msg"], "type": "contract"} for e in exc.errors]
    return InvalidContract(exc.message.split(":\n", 1)[0], detail=detail)


async def _document(request: Request) -> Contract:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
    if not is_json and media not in YAML_MEDIA:
        raise UnsupportedMediaType(
            f"a contract is sent as application/json or application/yaml, not {media or 'none'}",
            detail={"expected": ["application/json", "application/yaml"]},
        )
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
        if is_json and not text.lstrip().startswith("{"):
            raise ContractValidationError.single("", "a JSON contract is an object")
        contract = parse_contract(text)
        within_budget(contract, request.app.state.settings)
        return contract
    except UnicodeDecodeError:
        raise invalid(ContractValidationError.single("", "not UTF-8 text")) from None
    except ContractValidationError as exc:
        raise invalid(exc) from None


async def _writer(caller: CallerDep) -> Caller:
    caller.require_scope("contracts:write")
    return caller


WriterDep = Annotated[Caller, Depends(_writer)]
"""A caller with scope ``contracts:write``: checked before the document is read, so a caller
without it gets its 403 whatever it sent."""

DocumentDep = Annotated[Contract, Depends(_document)]
"""The validated contract document of the request body (422 with field paths otherwise)."""


def resolved(session: Session, contract: Contract) -> Resolved:
    """The contract with its organisations resolved, or a 422 naming the fields that do not."""
    try:
        return resolve(session, contract)
    except ContractValidationError as exc:
        raise invalid(exc) from None
