"""Contract pages: create from an example or a previous contract (a form and the YAML, checked
against the contract schema as you type), edit the draft, diff versions, propose, sign.

Documents go through the API's own parsing (:func:`contracts.parse_contract`, the registry's
label-privacy budget, organisation resolution) and the same store functions as
``/v1/contracts``; nothing is written unless every check passes.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from contracts import ContractValidationError
from services.protocol.errors import BadRequest, NotFound
from services.registry.api.deps import SessionDep, SettingsDep
from services.registry.console.contract_access import committed, visible_contract
from services.registry.console.contract_text import (
    EXAMPLES,
    MAX_YAML,
    apply_form,
    as_yaml,
    check_document,
    errors_of,
    examples,
)
from services.registry.console.contract_text import (
    diff as version_diff,
)
from services.registry.console.web import (
    ActorDep,
    ConsoleRoute,
    Person,
    PersonDep,
    field,
    form_of,
    page,
    see_other,
    when_too_large,
)
from services.registry.models import utcnow
from services.registry.models_contracts import Decision, VersionState
from services.registry.store import contract_drafts, contract_lifecycle
from services.registry.store.contract_drafts import resolve
from services.registry.store.contracts import (
    ContractExpired,
    effective_state,
    get_contract,
    list_contracts,
    version_of,
    version_views,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
IdPath = Annotated[str, Path(min_length=1, max_length=36)]


@router.get("/console/contracts")
def contracts_list(request: Request, session: SessionDep, person: PersonDep) -> Response:
    """Contracts the organisation owns or is a party to."""
    now = utcnow()
    found = [(c, effective_state(c, now)) for c in list_contracts(session, person.caller)]
    return page(request, "contracts.html", {"contracts": found}, person=person)


def _source(session: SessionDep, person: Person, source: str) -> str:
    if source.startswith("contract:"):
        record = visible_contract(session, person, source.removeprefix("contract:"))
        return as_yaml(version_views(session, record.id)[-1].document)
    name = source.removeprefix("example:") or "pcb-paste-quality"
    if name not in examples():
        raise NotFound(f"no example {name!r}")
    return (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")


@router.get("/console/contracts/new")
def new_contract(
    request: Request,
    session: SessionDep,
    person: PersonDep,
    source: Annotated[str, Query(alias="from", max_length=100)] = "example:pcb-paste-quality",
) -> Response:
    """The contract editor, filled from an example or a previous contract."""
    person.caller.require_scope("contracts:write")
    text = _source(session, person, source)
    return _editor(request, session, person, text=text, source=source, errors=[], status=200)


def _editor(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    text: str,
    source: str,
    errors: list[dict[str, str]],
    status: int,
    contract_id: str | None = None,
    too_large: str | None = None,
) -> Response:
    now = utcnow()
    previous = list_contracts(session, person.caller)
    context = {
        "text": text,
        "source": source,
        "errors": errors,
        "examples": examples(),
        "previous": [(c, effective_state(c, now)) for c in previous],
        "contract_id": contract_id,
        "too_large": too_large,
    }
    return page(request, "contract_edit.html", context, person=person, status=status)


def _editor_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    assert person is not None  # read from the cookie before the form
    return _editor(
        request, session, person, text="", source="", errors=[], status=413, too_large=message
    )


def _checks_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    # 200: htmx swaps only a successful answer into the checks
    errors = [{"loc": "document", "msg": message}]
    return page(request, "contract_checks.html", {"errors": errors}, person=person)


def _diff_too_large(
    request: Request, session: Session, person: Person | None, message: str
) -> Response:
    return page(request, "contract_diff.html", {"diff_lines": [message]}, person=person)


@router.post("/console/contracts/validate")
@when_too_large(_checks_too_large)
async def validate(
    request: Request, session: SessionDep, settings: SettingsDep, person: ActorDep
) -> Response:
    """The document's problems, field by field (htmx calls this as you type)."""
    form = await form_of(request)
    text = field(form, "document", limit=MAX_YAML + 1)
    try:
        if len(text) > MAX_YAML:
            raise ContractValidationError.single("", f"document larger than {MAX_YAML} bytes")
        check_document(text, settings, session)
        errors: list[dict[str, str]] = []
    except ContractValidationError as exc:
        errors = errors_of(exc)
    return page(request, "contract_checks.html", {"errors": errors}, person=person)


@router.post("/console/contracts")
@when_too_large(_editor_too_large)
async def create(
    request: Request, session: SessionDep, settings: SettingsDep, person: ActorDep
) -> Response:
    """Create the contract (draft version 1) from the editor."""
    form = await form_of(request)
    text = apply_form(
        field(form, "document", limit=MAX_YAML + 1),
        field(form, "title", limit=300),
        field(form, "price", limit=40),
    )
    source = field(form, "source", limit=100)
    contract_id = field(form, "contract_id", limit=36) or None
    try:
        person.caller.require_scope("contracts:write")
        if len(text) > MAX_YAML:
            raise ContractValidationError.single("", f"document larger than {MAX_YAML} bytes")
        contract = check_document(text, settings, session)
        resolved = resolve(session, contract)
        if contract_id is None:
            record, _ = contract_drafts.create_contract(
                session, person.caller, resolved, now=utcnow()
            )
            contract_id = record.id
        else:
            visible_contract(session, person, contract_id)
            _save_version(session, person, contract_id, resolved)
        session.commit()
    except ContractValidationError as exc:
        session.rollback()
        return _editor(
            request,
            session,
            person,
            text=text,
            source=source,
            errors=errors_of(exc),
            status=422,
            contract_id=contract_id,
        )
    return see_other(f"/console/contracts/{contract_id}")


def _save_version(session: SessionDep, person: Person, contract_id: str, resolved: Any) -> None:
    """Replace the draft, or (no draft open) draft an amendment: a new version."""
    record = get_contract(session, contract_id)
    head = version_of(session, record.id, record.head_version)
    now = utcnow()
    try:
        if head.state is VersionState.DRAFT:
            contract_drafts.replace_draft(session, person.caller, contract_id, resolved, now=now)
        else:
            contract_drafts.amend(session, person.caller, contract_id, resolved, now=now)
    except ContractExpired:
        session.commit()
        raise


@router.post("/console/contracts/{contract_id}/diff")
@when_too_large(_diff_too_large)
async def diff_draft(
    request: Request, session: SessionDep, person: ActorDep, contract_id: IdPath
) -> Response:
    """The editor's text against the newest stored version (htmx swaps the diff in)."""
    record = visible_contract(session, person, contract_id)
    form = await form_of(request)
    stored = version_views(session, record.id)[-1]
    try:
        edited = yaml.safe_load(field(form, "document", limit=MAX_YAML))
    except yaml.YAMLError:
        edited = None
    if not isinstance(edited, dict):
        lines = ["the text is not a YAML mapping yet"]
    else:
        lines = version_diff(stored.document, edited, stored.version.version, 0)
    return page(request, "contract_diff.html", {"diff_lines": lines}, person=person)


@router.get("/console/contracts/{contract_id}")
def show(
    request: Request,
    session: SessionDep,
    person: PersonDep,
    contract_id: IdPath,
    diff: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+\.\.[0-9]+$")] = None,
) -> Response:
    """A contract: state, deadlines, versions with digests, parties, signatures; a diff."""
    record = visible_contract(session, person, contract_id)
    views = version_views(session, record.id)
    lines: list[str] = []
    if diff is not None:
        a, b = (int(n) for n in diff.split(".."))
        by_number = {v.version.version: v for v in views}
        if a in by_number and b in by_number:
            lines = version_diff(by_number[a].document, by_number[b].document, a, b)
    mine = {p.name for v in views for p in v.parties if p.org_id == person.user.org_id}
    context = {
        "record": record,
        "state": effective_state(record, utcnow()),
        "views": views,
        "diff": diff,
        "diff_lines": lines,
        "mine": mine,
        "owner": record.owner_org_id == person.user.org_id,
        "yaml": as_yaml(views[-1].document),
    }
    return page(request, "contract.html", context, person=person)


@router.get("/console/contracts/{contract_id}/edit")
def edit(request: Request, session: SessionDep, person: PersonDep, contract_id: IdPath) -> Response:
    """Edit the draft, or write an amendment (its owner, ``contracts:write``)."""
    person.caller.require_scope("contracts:write")
    record = visible_contract(session, person, contract_id)
    views = version_views(session, record.id)
    text = as_yaml(views[-1].document)
    return _editor(
        request, session, person, text=text, source="", errors=[], status=200, contract_id=record.id
    )


@router.post("/console/contracts/{contract_id}/propose")
def propose(session: SessionDep, person: ActorDep, contract_id: IdPath) -> Response:
    """Propose the draft to every party."""
    visible_contract(session, person, contract_id)
    with committed(session):
        contract_drafts.propose(session, person.caller, contract_id, now=utcnow())
    return see_other(f"/console/contracts/{contract_id}")


@router.post("/console/contracts/{contract_id}/sign")
async def sign(
    request: Request, session: SessionDep, person: ActorDep, contract_id: IdPath
) -> Response:
    """Accept or reject the proposed version, for one of the organisation's parties, naming
    the digest the person read."""
    visible_contract(session, person, contract_id)
    form = await form_of(request)
    decision = field(form, "decision", limit=10)
    if decision not in {d.value for d in Decision}:
        raise BadRequest("decision is accept or reject")
    with committed(session):
        contract_lifecycle.sign(
            session,
            person.caller,
            contract_id,
            party=field(form, "party", limit=64),
            decision=Decision(decision),
            digest=field(form, "digest", limit=64),
            reason=field(form, "reason", limit=500) or None,
            now=utcnow(),
        )
    return see_other(f"/console/contracts/{contract_id}")
