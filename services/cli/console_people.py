"""People for the demo's console: one admin per demo organisation (and the OEM's finance
controller), invited by the demo's operator and accepted through the registry's API, so that
``splice demo --keep-running`` can print a sign-in for each."""

from __future__ import annotations

import secrets
import ssl
import time
from dataclasses import dataclass

import httpx
from rich.console import Console


@dataclass(frozen=True)
class SignIn:
    """A person of a demo organisation and the password made for them."""

    org: str
    role: str
    email: str
    password: str


def make_people(
    url: str,
    admin_token: str,
    orgs: dict[str, str],
    *,
    finance_of: str | None = None,
    verify: ssl.SSLContext | bool = True,
) -> list[SignIn]:
    """An admin for each organisation (name -> id), a finance user of ``finance_of``."""
    wanted = [(name, "admin") for name in orgs]
    if finance_of is not None:
        wanted.append((finance_of, "finance"))
    made = []
    auth = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, verify=verify, timeout=30) as http:
        for name, role in wanted:
            email = f"{role}@{name}.example"
            r = http.post(
                f"/v1/organisations/{orgs[name]}/user-invitations",
                json={"email": email, "role": role},
                headers=auth,
            )
            r.raise_for_status()
            password = secrets.token_urlsafe(12)
            body = {"code": r.json()["code"], "name": f"{name} {role}", "password": password}
            http.post("/v1/user-invitations/accept", json=body).raise_for_status()
            made.append(SignIn(name, role, email, password))
    return made


def wait_for_ctrl_c(console: Console, url: str, people: list[SignIn]) -> None:
    """Print the console's address and the sign-ins, then wait for Ctrl-C."""
    # plain lines, not a table: a narrow terminal must not cut an e-mail or a password
    console.print(f"web console: {url}/console/  (sign in with one of these)")
    for p in people:
        console.print(f"  {p.org} ({p.role}): {p.email}  password {p.password}", soft_wrap=True)
    console.print("the registry keeps running; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")
