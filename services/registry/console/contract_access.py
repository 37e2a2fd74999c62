"""What the contract and model pages share: the contract a person may see (another
organisation's answers 404 without being named), and a change committed the way the API's
unit of work commits it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from services.protocol.errors import NotFound, SpliceError
from services.registry.console.web import Person
from services.registry.models_contracts import ContractRecord
from services.registry.store.contracts import ContractExpired, get_contract, require_member


def visible_contract(session: Session, person: Person, contract_id: str) -> ContractRecord:
    """The contract if the person's organisation owns it or is a party to it; 404 otherwise
    (another organisation's contract is not named)."""
    try:
        record = get_contract(session, contract_id)
        require_member(session, person.caller, record)
    except SpliceError:
        raise NotFound(f"no contract {contract_id}") from None
    return record


@contextmanager
def committed(session: Session) -> Iterator[None]:
    """Commit the block's changes; a contract the store found expired stays expired (that
    change is committed before the 409 leaves), as in the API's unit of work."""
    try:
        yield
    except ContractExpired:
        session.commit()
        raise
    session.commit()
