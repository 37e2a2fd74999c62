"""Bad contract, signature and job input: 422 naming the field (or 409/413/415), nothing written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    as_yaml,
    document,
    onboard_example_orgs,
)
from tests.registry.util import apply, dump_tables, invite

Doc = dict[str, Any]


def _set(path: str, value: object) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node: Any = doc
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _second_label(doc: Doc) -> None:
    doc["parties"][1]["role"] = "label"


def _duplicate_party(doc: Doc) -> None:
    doc["parties"].append({**doc["parties"][1], "org": "someone-else"})


PRICE = ["body", "commercial", "price_per_prediction", "amount"]
BAD_DOCUMENTS: list[tuple[Callable[[Doc], None], list[Any]]] = [
    (_set("colour", "blue"), ["body", "colour"]),
    (
        _set("parties.1.feature_schema.columns.0.unit_of", "x"),
        ["body", "parties", 1, "feature_schema", "columns", 0, "unit_of"],
    ),
    (_duplicate_party, ["body", "parties", 2, "name"]),
    (_second_label, ["body", "parties", 1, "role"]),
    (_set("commercial.price_per_prediction.amount", "-0.05"), PRICE),
    (_set("commercial.price_per_prediction.amount", "1e-3"), PRICE),
    (_set("commercial.price_per_prediction.amount", 0.05), PRICE),
    (_set("schema_version", 2), ["body", "schema_version"]),
    (_set("parties.1.org", "no-such-company"), ["body", "parties", 1, "org"]),
    (_set("owner.org", "pending-co"), ["body", "owner", "org"]),
    # a label-privacy budget above the deployment's max_label_epsilon (10 by default)
    (
        _set("protection.label_privacy", {"mechanism": "randomized_response", "epsilon": 12}),
        ["body", "protection", "label_privacy", "epsilon"],
    ),
    (
        _set("protection.label_privacy", {"mechanism": "randomized_response", "delta": 1e-6}),
        ["body", "protection", "label_privacy", "delta"],
    ),
    # issue 15: an unknown model family, an oversize model, an unbounded training
    (_set("model.family", "forest"), ["body", "model", "family"]),
    (_set("model.bottom.paste.hidden", [4096] * 4), ["body", "model", "bottom", "paste"]),
    (_set("model.bottom.paste.hidden", [8] * 9), ["body", "model", "bottom", "paste", "hidden"]),
    (_set("training.batch_size", 100_000), ["body", "training", "batch_size"]),
]
RAW_BODIES: list[tuple[bytes, str, int, list[Any] | None]] = [
    (b"title: [unclosed", "application/yaml", 422, ["body"]),
    (b"title: a\ntitle: b\n", "application/yaml", 422, ["body"]),
    (b"- a list\n", "application/yaml", 422, ["body"]),
    (b"", "application/yaml", 422, ["body"]),
    (b"[]", "application/json", 422, ["body"]),
    (b'{"title": "x", "title": "y"}', "application/json", 422, ["body"]),
    (b"\xff\xfe", "application/yaml", 422, ["body"]),
    (b"title: x", "text/plain", 415, None),
    (b"title: x", "", 415, None),
    (b"title: '" + b"x" * 2_000_000 + b"'", "application/yaml", 413, None),
]


@pytest.fixture
async def orgs(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Orgs:
    """The example's organisations, onboarded, and a pending one."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    r = await apply(client, await invite(client, admin_token), "pending-co")
    assert r.status_code == 201, r.text
    return orgs


def _assert_422(response: httpx.Response, path: list[Any]) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    locations = [e["loc"] for e in body["detail"]]
    assert path in locations, locations


async def test_bad_documents_write_nothing(
    client: httpx.AsyncClient, orgs: Orgs, migrated_url: str
) -> None:
    owner = orgs.auth(OWNER)
    created = await client.post("/v1/contracts", json=document(), headers=owner)
    cid = created.json()["id"]
    before = dump_tables(migrated_url)
    for change, path in BAD_DOCUMENTS:
        doc = document()
        change(doc)
        _assert_422(await client.post("/v1/contracts", json=doc, headers=owner), path)
        r = await client.post(
            "/v1/contracts",
            content=as_yaml(doc),
            headers={**owner, "content-type": "application/yaml"},
        )
        _assert_422(r, path)
        _assert_422(await client.put(f"/v1/contracts/{cid}/draft", json=doc, headers=owner), path)
    # Two parties naming one organisation, once by name and once by id.
    doc = document()
    doc["parties"][0]["org"] = orgs[PASTE]
    r = await client.post("/v1/contracts", json=doc, headers=owner)
    _assert_422(r, ["body", "parties", 1, "org"])
    for content, media, status, loc in RAW_BODIES:
        headers = {**owner, "content-type": media} if media else owner
        r = await client.post("/v1/contracts", content=content, headers=headers)
        assert r.status_code == status, (content[:40], r.text[:300])
        assert set(r.json()) == {"code", "message", "detail"}
        if loc is not None:
            _assert_422(r, loc)
    assert dump_tables(migrated_url) == before


async def test_bad_signatures_and_jobs_write_nothing(
    client: httpx.AsyncClient, orgs: Orgs, migrated_url: str
) -> None:
    owner, pcb = orgs.auth(OWNER), orgs.auth(PCB)
    cid = (await client.post("/v1/contracts", json=document(), headers=owner)).json()["id"]
    proposed = (await client.post(f"/v1/contracts/{cid}/propose", headers=owner)).json()
    digest = proposed["versions"][0]["digest"]
    before = dump_tables(migrated_url)
    good = {"party": "pcb", "decision": "accept", "digest": digest}
    bad_signatures: list[tuple[Doc, list[Any]]] = [
        ({"digest": digest.upper()}, ["body", "digest"]),
        ({"digest": digest[:-1]}, ["body", "digest"]),
        ({"decision": "maybe"}, ["body", "decision"]),
        ({"party": "PCB"}, ["body", "party"]),
        ({"signature": "x"}, ["body", "signature"]),
    ]
    for change, path in bad_signatures:
        _assert_422(
            await client.post(f"/v1/contracts/{cid}/sign", json={**good, **change}, headers=pcb),
            path,
        )
    r = await client.post(
        f"/v1/contracts/{cid}/sign", json={**good, "digest": "0" * 64}, headers=pcb
    )
    assert r.status_code == 409, "a digest of another text is a conflict"
    r = await client.post(
        f"/v1/contracts/{cid}/sign",
        content=b"party=pcb",
        headers={**pcb, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    _assert_422(
        await client.post(f"/v1/contracts/{cid}/suspend", json={}, headers=owner),
        ["body", "reason"],
    )
    _assert_422(
        await client.post("/v1/jobs", json={"contract_id": cid, "extra": 1}, headers=pcb),
        ["body", "extra"],
    )
    _assert_422(await client.post("/v1/jobs", json={}, headers=pcb), ["body", "contract_id"])
    assert (
        await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb)
    ).status_code == 409
    assert (await client.get("/v1/contracts/nope", headers=pcb)).status_code == 404
    r = await client.get(f"/v1/contracts/{cid}/check", params={"role": "boss"}, headers=pcb)
    _assert_422(r, ["query", "role"])
    assert dump_tables(migrated_url) == before
    assert (
        await client.post(f"/v1/contracts/{cid}/sign", json=good, headers=pcb)
    ).status_code == 200
    assert orgs[PASTE]
