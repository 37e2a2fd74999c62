"""A registry with three companies of the pcb-paste example and their people, signed in.

The OEM (``nordwerk-automotive``) owns the example contract; the PCB maker (``lumen-pcb``, label
party) and the paste supplier (``solvia-paste``) sign it. Every organisation has an admin; the
OEM also has an engineer, a finance controller and a viewer. ``outsider`` is a fourth company
that is party to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.console.util import Org, add_user, approved_org, browser, sign_in

EXAMPLE = Path(__file__).resolve().parents[2] / "contracts" / "examples" / "pcb-paste-quality.yaml"
ORGS = {
    "oem": ("nordwerk-automotive", "oem"),
    "pcb": ("lumen-pcb", "manufacturer"),
    "paste": ("solvia-paste", "supplier"),
    "outsider": ("umbra-cables", "supplier"),
}
PEOPLE = {
    "oem-admin": ("oem", "admin"),
    "oem-engineer": ("oem", "engineer"),
    "oem-finance": ("oem", "finance"),
    "oem-viewer": ("oem", "viewer"),
    "pcb-admin": ("pcb", "admin"),
    "paste-admin": ("paste", "admin"),
    "outsider-admin": ("outsider", "admin"),
}


@dataclass
class Signed:
    """A signed-in person: its browser and CSRF token."""

    client: httpx.AsyncClient
    csrf: str
    user_id: str


@dataclass
class World:
    """The organisations and their signed-in people."""

    app: FastAPI
    orgs: dict[str, Org]
    people: dict[str, Signed] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Close every browser."""
        for p in self.people.values():
            await p.client.aclose()


def email(who: str) -> str:
    """The e-mail of a person of the world."""
    return f"{who}@example.com"


async def build(app: FastAPI, client: httpx.AsyncClient, admin: str) -> World:
    """Organisations approved, people invited by the operator and signed in."""
    orgs = {k: await approved_org(client, admin, n, kind) for k, (n, kind) in ORGS.items()}
    world = World(app, orgs)
    for who, (org, role) in PEOPLE.items():
        user_id = await add_user(client, admin, orgs[org], email(who), role, who)
        b = browser(app)
        world.people[who] = Signed(b, await sign_in(b, email(who)), user_id)
    return world


async def propose_example(world: World) -> str:
    """The OEM engineer creates the example contract and proposes it; its id."""
    engineer = world.people["oem-engineer"]
    r = await engineer.client.post(
        "/console/contracts",
        data={"csrf_token": engineer.csrf, "document": EXAMPLE.read_text(), "source": ""},
    )
    assert r.status_code == 303, r.text
    contract_id = r.headers["location"].rsplit("/", 1)[1]
    r = await engineer.client.post(
        f"/console/contracts/{contract_id}/propose", data={"csrf_token": engineer.csrf}
    )
    assert r.status_code == 303, r.text
    return contract_id
