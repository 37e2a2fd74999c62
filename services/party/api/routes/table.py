"""Live data: new versions of this party's table (new paste lots), checked before use."""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from services.engine.harmonise import HarmonisationError, UnitsError, check_table, read_units
from services.party.api.deps import JSON_BODY, OperatorDep, StateDep
from services.party.live_table import MAX_ROWS, RowProblem, refused
from services.party.registry_link import RegistryLink
from services.party.state import CONTRACT_FILE, PartyState
from services.protocol.errors import ErrorCode, Unprocessable, UnsupportedMediaType
from services.protocol.messages import CellValue

router = APIRouter(prefix="/v1/table", tags=["table"])

_TABLE_MEDIA = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet"}
_MEDIA = list(_TABLE_MEDIA)


class TableRows(BaseModel):
    """Rows of a new version: each names every column of the table."""

    model_config = ConfigDict(extra="forbid")

    rows: Annotated[list[dict[str, CellValue]], Field(min_length=1, max_length=MAX_ROWS)]


class TableVersion(BaseModel):
    """The table's current version."""

    version: int
    rows: int
    added: int = 0
    """Rows the version that was just accepted added (0 when reading)."""
    boundaries: list[int]
    """Rows of the table after each version."""


def _info(state: PartyState, added: int = 0) -> TableVersion:
    live = state.live
    return TableVersion(
        version=live.version, rows=live.boundaries[-1], added=added, boundaries=live.boundaries
    )


@router.get("")
async def table_version(state: StateDep, _: OperatorDep) -> TableVersion:
    """This party's table version and its row count after each version."""
    return await run_in_threadpool(_info, state)


@router.post("/rows", dependencies=[JSON_BODY])
async def add_rows(
    state: StateDep, _: OperatorDep, body: TableRows, request: Request
) -> TableVersion:
    """Append rows (new keys: new paste lots) as the table's next version.

    Every row must name every column of the table with a value of its type and a key the table
    does not hold yet; under a registry it must also keep the contract schema of every contract
    this party has a job under. One refused row refuses the version (422 ``rows_refused``,
    listing each refused row and why); nothing is loaded. An accepted version is on disk before
    it is used, and every job of this party serves its rows at once (new keys are aligned at
    serving time)."""
    rows = await run_in_threadpool(state.live.parse, body.rows)
    return await _accept(state, rows, request.app.state.registry)


@router.post(
    "/versions",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {"schema": {"type": "string", "format": "binary"}} for m in _TABLE_MEDIA
            },
        }
    },
)
async def add_version(state: StateDep, _: OperatorDep, request: Request) -> TableVersion:
    """A whole new table file (CSV or Parquet) as the next version: the rows of keys the table
    holds must be unchanged and none may be dropped (versions append; 422 ``rows_refused``);
    the rows of new keys are checked as ``POST /v1/table/rows`` checks them."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = _TABLE_MEDIA.get(media)
    if kind is None:
        raise UnsupportedMediaType(
            f"this endpoint takes {' or '.join(_TABLE_MEDIA)}, not {media or 'no content type'}",
            detail={"expected": list(_TABLE_MEDIA)},
        )
    body = await request.body()
    try:
        table = (
            pacsv.read_csv(io.BytesIO(body)) if kind == "csv" else pq.read_table(io.BytesIO(body))
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise Unprocessable(f"the body is not a readable {kind} table: {exc}") from exc
    added = await run_in_threadpool(state.live.new_rows, table)
    rows = await run_in_threadpool(state.live.parse, added.to_pylist())
    return await _accept(state, rows, request.app.state.registry)


async def _accept(state: PartyState, rows: pa.Table, link: RegistryLink | None) -> TableVersion:
    if link is not None:
        for contract_id, version in _contracts(state).items():
            await _check_contract(state, link, rows, contract_id, version)
    await run_in_threadpool(state.add_version, rows)
    return await run_in_threadpool(_info, state, rows.num_rows)


def _contracts(state: PartyState) -> dict[str, int]:
    """The contract version each job of this party was prepared under."""
    found: dict[str, int] = {}
    root = state.settings.data_dir / "jobs"
    for path in sorted(root.glob(f"*/{CONTRACT_FILE}")) if root.is_dir() else []:
        doc: dict[str, Any] = json.loads(path.read_bytes())
        found[str(doc["contract_id"])] = max(int(doc["version"]), found.get(doc["contract_id"], 0))
    return found


async def _check_contract(
    state: PartyState, link: RegistryLink, rows: pa.Table, contract_id: str, version: int
) -> None:
    """Refuse rows that break the contract's schema of this party (no tolerance): each refused
    row with its reasons."""
    name = state.settings.name
    contract = await link.contract(contract_id, version)
    try:
        schema = contract.party(name).feature_schema
        units = read_units(state.settings.units_file) if state.settings.units_file else None
    except (KeyError, UnitsError) as exc:
        raise Unprocessable(str(exc), code=ErrorCode.SCHEMA_VIOLATION) from exc
    present = set(rows.column_names)
    strict = schema.model_copy(
        update={
            "key_column": None,
            "id_column": None,
            "max_violation_rate": 0.0,
            "columns": [c for c in schema.columns if c.name in present],
        }
    )

    def reasons(table: pa.Table) -> list[str]:
        try:
            report = check_table(table, strict, declared_units=units, party=name)
        except HarmonisationError as exc:
            return [str(exc)]
        return [] if report.passed else list(report.reasons)

    if not await run_in_threadpool(reasons, rows):
        return
    problems = []
    for i in range(rows.num_rows):
        why = await run_in_threadpool(reasons, rows.slice(i, 1))
        if why:
            problems.append(RowProblem(i, [f"contract {contract_id}: {r}" for r in why]))
    raise refused(
        problems or [RowProblem(0, ["the rows break the contract schema"])], rows.num_rows
    )
