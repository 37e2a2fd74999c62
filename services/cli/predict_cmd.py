"""``splice predict``: metered predictions of a contract's deployed model, from a label party.

The rows come from a CSV or JSON file (a list of objects, or ``{"rows": [...]}``) with exactly
the label party's feature columns and each feature party's key column; ``--id-column`` names a
column to keep out of the request and carry into the output. Files of more than 10,000 rows go in
several requests (each is one usage event). The caller acts for its organisation with the same
client-credential profile as ``splice org|contract|job``: a token for the label party
(``--label-url``, the token's audience) with scope ``predict:call`` and the contract's id.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.cli.connect import (
    ProfileOpt,
    client_credentials,
    console,
    fail,
    print_json,
    profile,
    require,
    run,
)
from services.cli.profile import Loaded

if TYPE_CHECKING:
    import httpx

    from services.protocol.messages import PredictRequest, PredictResponse

Row = dict[str, Any]
CHUNK = 10_000


def read_rows(path: Path) -> list[Row]:
    """Rows of a CSV (types inferred, empty cells null) or JSON file."""
    if not path.is_file():
        raise fail(f"no rows file {path}")
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise fail(f"cannot read {path} as JSON: {exc}") from None
        rows = doc.get("rows") if isinstance(doc, dict) else doc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise fail(f'{path}: expected a list of objects or {{"rows": [...]}}')
        return rows
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        rows_csv: list[Row] = pacsv.read_csv(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise fail(f"cannot read {path} as CSV: {exc}") from None
    return rows_csv


def auth_for(
    loaded: Loaded, audience: str, contract_id: str
) -> tuple[httpx.Auth, httpx.AsyncClient]:
    """Tokens of the profile's organisation for the label party (scope predict:call)."""
    import httpx

    from services.protocol.oauth_client import BearerAuth, TokenSource

    require(loaded, "org")
    creds = client_credentials(loaded)
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
    auth = BearerAuth(TokenSource(creds, http), audience, "predict:call", contract_id=contract_id)
    return auth, http


async def _predict(
    loaded: Loaded, url: str, audience: str, contract_id: str, requests: list[PredictRequest]
) -> list[PredictResponse]:
    from services.protocol.errors import PeerError
    from services.protocol.peers import PartyClient

    auth, http = auth_for(loaded, audience, contract_id)
    answers = []
    try:
        async with PartyClient(url, timeout=120.0, retries=2, auth=auth) as party:
            for request in requests:
                answers.append(await party.predict(contract_id, request))
    except PeerError as exc:
        if isinstance(exc.detail, dict) and "url" in exc.detail:
            raise PeerError(f"cannot reach the label party at {url}: is it running?") from None
        raise
    finally:
        await http.aclose()
    return answers


def _flat(prediction: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in prediction.items() if k != "probabilities" and v is not None}
    for cls, p in (prediction.get("probabilities") or {}).items():
        out[f"p_{cls}"] = p
    return out


def write_output(path: Path, answers: list[Any], ids: list[Any] | None) -> None:
    """Predictions as CSV (one row each, with the id column if given) or JSON (the answers)."""
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(answers, indent=2) + "\n", encoding="utf-8")
        return
    rows = []
    for answer in answers:
        for prediction in answer["predictions"]:
            meta = {"model_version": answer["model_version"], "event_id": answer["event_id"]}
            rows.append({**_flat(prediction), **meta})
    if ids is not None:
        rows = [{"id": i, **r} for i, r in zip(ids, rows, strict=True)]
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def predict(
    label_url: Annotated[str, typer.Option("--label-url", help="The label party's URL.")],
    contract: Annotated[str, typer.Option("--contract", help="The contract's id.")],
    rows: Annotated[Path, typer.Option("--rows", help="Rows to predict: CSV or JSON file.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write predictions here (.csv or .json).")
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            "--id-column",
            help="A column of the rows file to keep out of the request "
            "and write beside each prediction.",
        ),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(help="The label party's token audience (default: --label-url)."),
    ] = None,
    profile_name: ProfileOpt = None,
) -> None:
    """Predictions of the contract's deployed joint model (scope predict:call; metered)."""
    data = read_rows(rows)
    if not data:
        raise fail(f"{rows} holds no rows")
    ids = None
    if id_column is not None:
        if any(id_column not in r for r in data):
            raise fail(f"--id-column {id_column!r} is not in every row of {rows}")
        ids = [r[id_column] for r in data]
        data = [{k: v for k, v in r.items() if k != id_column} for r in data]
    from pydantic import ValidationError

    from services.protocol.messages import PredictRequest

    try:
        requests = [
            PredictRequest.model_validate({"rows": data[start : start + CHUNK]})
            for start in range(0, len(data), CHUNK)
        ]
    except ValidationError as exc:
        raise fail(f"{rows} holds values no request can carry: {exc.errors()[0]['msg']}") from None
    url = label_url.rstrip("/")
    answers = run(_predict(profile(profile_name), url, audience or url, contract, requests))
    docs = [a.model_dump(mode="json", exclude_none=True) for a in answers]
    if out is None:
        print_json(docs[0] if len(docs) == 1 else docs)
        return
    write_output(out, docs, ids)
    versions = sorted({a.model_version for a in answers})
    console.print(
        f"{len(data)} prediction(s) of model version {', '.join(map(str, versions))} "
        f"in {len(answers)} request(s) -> {out}"
    )
