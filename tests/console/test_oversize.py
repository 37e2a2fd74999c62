"""An oversize upload in a console form (over the registry's 1 MiB body limit) re-renders the
form with the error on its field and stores nothing; the API keeps its JSON 413. And the
organisation application's bad input (the form test_pages does not cover)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.registry.models import AuditEntry, OAuthClient, Organisation
from services.registry.models_contracts import ContractRecord
from services.registry.models_people import User, UserInvitation
from tests.console.util import browser
from tests.console.world import EXAMPLE, World, build, propose_example

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
LIMIT = 1024 * 1024  # the registry's default max_body_bytes
BIG = LIMIT + 10


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> AsyncIterator[World]:
    built = await build(app, client, admin_token)
    yield built
    await built.aclose()


def stored(app: FastAPI) -> tuple[int, ...]:
    with app.state.sessions() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(m)) or 0)
            for m in (OAuthClient, ContractRecord, UserInvitation, AuditEntry, Organisation, User)
        )


def field_error(text: str, name: str) -> str:
    found = re.search(rf'<p class="field-error" id="e-{name}" role="alert">([^<]*)</p>', text)
    assert found is not None, f"no error shown for {name}"
    return found.group(1)


async def _streamed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_an_oversize_upload_shows_the_field_error(world: World, app: FastAPI) -> None:
    contract_id = await propose_example(world)
    before = stored(app)
    admin = world.people["paste-admin"]
    key_form = {"csrf_token": admin.csrf, "auth_method": "private_key_jwt", "scope": "jobs:run"}
    big_key = b'{"keys": [' + b" " * BIG + b"]}"
    r = await admin.client.post(
        "/console/clients", data=key_form, files={"jwks": ("k.json", big_key)}
    )
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert f"{LIMIT} bytes" in field_error(r.text, "jwks")
    assert "Register" in r.text  # the form again
    # the same body without a declared length (chunked): counted as it arrives
    boundary = "x" * 16
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{admin.csrf}'
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="jwks"; filename="k.json"\r\n'
        f"Content-Type: application/json\r\n\r\n"
    ).encode()
    chunks = [body] + [b" " * 65536] * 17 + [f"\r\n--{boundary}--\r\n".encode()]
    r = await admin.client.post(
        "/console/clients",
        content=_streamed(chunks),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413 and f"{LIMIT} bytes" in field_error(r.text, "jwks")

    engineer = world.people["oem-engineer"]
    b, csrf = engineer.client, engineer.csrf
    document = EXAMPLE.read_text() + "#" * BIG
    r = await b.post("/console/contracts", data={"csrf_token": csrf, "document": document})
    assert r.status_code == 413 and f"{LIMIT} bytes" in field_error(r.text, "document")
    assert 'id="f-document"' in r.text and 'aria-invalid="true"' in r.text
    # the as-you-type check is swapped in by htmx: a 200 naming the document
    r = await b.post("/console/contracts/validate", data={"csrf_token": csrf, "document": document})
    assert r.status_code == 200 and "<code>document</code>" in r.text and str(LIMIT) in r.text
    r = await b.post(
        f"/console/contracts/{contract_id}/diff", data={"csrf_token": csrf, "document": document}
    )
    assert r.status_code == 200 and str(LIMIT) in r.text
    # a document under the body limit but over the editor's: the field error of the checks
    r = await b.post(
        "/console/contracts",
        data={"csrf_token": csrf, "document": EXAMPLE.read_text() + "#" * 300_000},
    )
    assert r.status_code == 422 and "larger than" in r.text
    # a form without a file (invite): the console's error page, not the API's JSON
    r = await admin.client.post(
        "/console/users/invite",
        data={"csrf_token": admin.csrf, "email": "a" * BIG + "@x.example", "role": "viewer"},
    )
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert "payload_too_large" in r.text
    # the public forms: registering an organisation, joining; signing in (the error page)
    async with browser(app) as anonymous:
        for path, data in (
            ("/console/register", {"name": "x" * BIG, "kind": "supplier"}),
            ("/console/join", {"code": "c", "name": "x" * BIG, "password": "p"}),
        ):
            r = await anonymous.post(path, data=data)
            assert r.status_code == 413, path
            assert f"{LIMIT} bytes" in field_error(r.text, "name"), path
        r = await anonymous.post("/oauth/authorize", data={"email": "x" * BIG, "password": "p"})
        assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")
    assert stored(app) == before  # nothing stored, not even an audit entry
    # the API answers as before
    r = await b.post("/v1/contracts", content=b"x" * BIG, headers={"content-type": "text/yaml"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


async def test_the_application_form_shows_each_fields_error(world: World, app: FastAPI) -> None:
    """The organisation application (public): a bad e-mail, an unknown kind, a wrong code."""
    before = stored(app)
    good = {
        "name": "Kessler Stencils",
        "kind": "supplier",
        "contact_email": "ops@kessler.example",
        "invitation_code": "spl_inv_not-a-real-code",
    }
    async with browser(app) as anonymous:
        for change, name in (
            ({"contact_email": "not-an-address"}, "contact_email"),
            ({"kind": "pirate"}, "kind"),
            ({}, "invitation_code"),  # a code the registry never issued
        ):
            r = await anonymous.post("/console/register", data=good | change)
            assert r.status_code == 422, (name, r.text[-400:])
            assert field_error(r.text, name), name
    assert stored(app) == before
